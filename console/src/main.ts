// Entry point of the console bundle: wires the transport (same origin) and starts the shell.
import "./styles.css";
import { apiBaseUrl, browserTransport } from "./api.js";
import { ConsoleApp } from "./app.js";
import { Session } from "./auth.js";

const session = new Session(window.sessionStorage);
const transport = browserTransport(apiBaseUrl(document, window.location.origin), () => session.token);
const root = document.getElementById("app");
if (root === null) throw new Error("index.html has no #app element");
new ConsoleApp(root, transport, session).start();
