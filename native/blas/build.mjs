/**
 * Builds the OpenBLAS addon (native/blas/build/Release/rlaif_blas.node) with node-gyp, offline.
 *
 *   node native/blas/build.mjs             `npm run build:native`: a failure exits 1, saying why
 *   node native/blas/build.mjs --optional  the root package's `install` step: a failure only warns
 *
 * Why optional at install: the addon makes the wasm backend's matmuls ~5x faster, but a machine
 * without a C compiler, Python (node-gyp's gyp), Node's headers or OpenBLAS must still `npm ci`
 * and run on the pure-wasm kernels. Then no addon is left behind and the code falls back at start.
 *
 * Why offline: node-gyp would otherwise download Node's headers; `--nodedir` points it at the
 * headers of the running Node (`<prefix>/include/node`, e.g. /usr/include/node from Debian's or
 * NodeSource's nodejs package). node-gyp itself is the copy npm bundles: npm puts it in
 * `$npm_config_node_gyp` for every script it runs.
 *
 * Plain JavaScript, no dependencies: it runs inside `npm ci`, before anything can be assumed.
 */
import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const optional = process.argv.includes("--optional");
const addon = path.join(here, "build", "Release", "rlaif_blas.node");

/** Stops the build: a warning at install time, an error for an explicit build. */
function fail(reason) {
  rmSync(path.join(here, "build"), { recursive: true, force: true });
  const msg = `rlaif: native BLAS addon not built: ${reason}`;
  if (optional) {
    console.warn(`${msg}\nrlaif: the wasm backend will use its own (slower) matmul kernels.`);
    process.exit(0);
  }
  console.error(
    `${msg}\nInstall a C compiler, make, python3 and OpenBLAS (Debian: apt-get install g++ make python3 libopenblas-dev), then rerun npm run build:native.`,
  );
  process.exit(1);
}

/** npm's bundled node-gyp: npm sets the variable for scripts; else look beside the running npm. */
function nodeGyp() {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  const prefix = path.resolve(path.dirname(process.execPath), "..");
  const bundled = path.join(prefix, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js");
  return existsSync(bundled) ? bundled : undefined;
}

const gyp = nodeGyp();
if (gyp === undefined) fail("node-gyp not found (run this through npm: npm run build:native)");
const nodedir = path.resolve(path.dirname(process.execPath), "..");
if (!existsSync(path.join(nodedir, "include", "node", "node_api.h"))) {
  fail(`Node's headers are not under ${nodedir}/include/node (node-gyp would download them)`);
}
const built = spawnSync(process.execPath, [gyp, "rebuild", `--nodedir=${nodedir}`, "--loglevel=warn"], {
  cwd: here,
  stdio: "inherit",
});
if (built.error) fail(`node-gyp could not be run (${built.error.message})`);
if (built.status !== 0) fail(`node-gyp exited ${built.status} (see its output above)`);
try {
  // Loading proves the OpenBLAS shared library resolves; one 1x1 product proves sgemm runs.
  const blas = createRequire(import.meta.url)(addon);
  const c = new Float32Array(1);
  blas.sgemm(false, false, 1, 1, 1, 1, new Float32Array([2]), 0, 0, new Float32Array([3]), 0, 0, 0, c, 0, 0, 1);
  if (c[0] !== 6) throw new Error(`sgemm computed 2 x 3 = ${c[0]}`);
  console.log(`rlaif: native BLAS addon built (${blas.info().config})`);
} catch (err) {
  fail(`the built addon does not work: ${err.message}`);
}
