// Bundles the explorer's code (src/, with the TypeScript client and dagre) into
// crates/nexus-explorer/assets/app.js, beside the page (index.html) and its style
// (app.css), which are written there by hand. The bundle is committed; esbuild's output
// is a function of its inputs, so scripts/test rebuilds it and checks the bytes.
import { build } from "esbuild";
import { mkdirSync } from "node:fs";

const here = new URL(".", import.meta.url).pathname;
const out = `${here}../crates/nexus-explorer/assets`;
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [`${here}src/main.ts`],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  legalComments: "none",
  charset: "utf8",
  // The TypeScript client (clients/js/src) imports @noble/*: resolve them from this
  // package's lockfile, not from wherever clients/js was installed.
  nodePaths: [`${here}node_modules`],
  outfile: `${out}/app.js`,
  logLevel: "warning",
});
