// Vite build of the console: index.html + src/ into dist/, served by the auditlog HTTP port at "/".
import { defineConfig } from "vite";

// Where `npm run dev` forwards RPCs, so that the dev page and the API share an origin as in production.
const apiTarget = process.env["AUDITLOG_HTTP_ADDR"] ?? "http://127.0.0.1:8080";

export default defineConfig({
  // Relative asset URLs: dist/ works wherever the server mounts it.
  base: "./",
  resolve: {
    // The generated messages live in ../clients/typescript; make their bare imports resolve to this
    // package's node_modules so that the bundle holds one copy of each runtime.
    dedupe: ["@bufbuild/protobuf", "@connectrpc/connect"],
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
  },
  server: {
    host: "127.0.0.1",
    fs: { allow: [".."] },
    proxy: {
      "/auditlog.v1.AuditLogService": { target: apiTarget, changeOrigin: true },
    },
  },
});
