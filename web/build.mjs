// Builds the page into dist/: hashed, minified assets under dist/assets/ and dist/index.html that names them.
// The worker is built first so that the page can be told its hashed URL (esbuild does not follow `new Worker`).
import * as esbuild from "esbuild";
import { readFile, rm, mkdir, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
const assets = join(dist, "assets");
const common = {
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "esm",
  target: ["chrome109", "firefox115", "safari16"],
  outdir: assets,
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  logLevel: "warning",
  legalComments: "linked",
};

function outputFor(result, entry) {
  for (const [out, meta] of Object.entries(result.metafile.outputs)) {
    if (meta.entryPoint === entry) return "/assets/" + basename(out);
  }
  throw new Error(`no output for ${entry}`);
}

await rm(dist, { recursive: true, force: true });
await mkdir(assets, { recursive: true });
const worker = await esbuild.build({ ...common, entryPoints: ["src/hash-worker.js"], absWorkingDir: root });
const workerUrl = outputFor(worker, "src/hash-worker.js");
const page = await esbuild.build({
  ...common,
  entryPoints: ["src/main.js", "src/style.css"],
  absWorkingDir: root,
  define: { HASH_WORKER_URL: JSON.stringify(workerUrl) },
});
const html = (await readFile(join(root, "src/index.html"), "utf8"))
  .replace("%MAIN_JS%", outputFor(page, "src/main.js"))
  .replace("%STYLE_CSS%", outputFor(page, "src/style.css"));
await writeFile(join(dist, "index.html"), html);
console.log(`built ${join(dist, "index.html")}`);
