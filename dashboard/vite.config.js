// Built into dist/, which the control plane serves (server.dashboard_dir). JSX is Preact's,
// compiled by Vite's own esbuild, so no framework plugin is needed.
import { defineConfig } from "vite";

export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // One CSS file and hashed modules only: no inline script or style under
    // Content-Security-Policy default-src 'self'.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
});
