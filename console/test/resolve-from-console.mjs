// Node loader hook for the tests: bare imports made by the generated code in ../clients resolve
// from this package's node_modules, as they do in the Vite build (resolve.dedupe) and in tsc (paths).
import { register } from "node:module";

register("./resolve-hooks.mjs", import.meta.url);
