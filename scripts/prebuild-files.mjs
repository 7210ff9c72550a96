// What a prebuild is: the addon from a build folder, named for this platform and libc, with
// every shared library and backend module beside it (llama.cpp's libraries and the runtime CPU
// variants on Linux x86-64, which find each other through $ORIGIN). Used by `npm run prebuild`
// and by the install test, so both ship the same files.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

// llama.cpp's libraries as CMakeLists.txt names them, and ggml's backend modules; not the
// reference tools' own libraries (libllama-server-impl.so).
const LIBRARY = /^(lib)?(mmlm-|ggml-).*\.(so|dylib|dll)$/;

/** prebuilds/<platform>-<arch>/ file name of the addon: multimodal_lm.glibc.node, multimodal_lm.musl.node or multimodal_lm.node. */
export function addonName(platform = process.platform) {
  if (platform !== "linux") return "multimodal_lm.node";
  const glibc = process.report?.getReport?.().header?.glibcVersionRuntime;
  return glibc ? "multimodal_lm.glibc.node" : "multimodal_lm.musl.node";
}

/**
 * Copies the addon in `releaseDir` (cmake-js's build/Release) and the libraries beside it into
 * `destDir`, replacing what was there, stripped of symbols on Linux when `strip` is on PATH.
 * Returns the files written, with their sizes.
 */
export function copyPrebuild(releaseDir, destDir, { strip = true } = {}) {
  const addon = path.join(releaseDir, "multimodal_lm.node");
  if (!fs.existsSync(addon)) throw new Error(`no addon at ${addon}: build it first (npm run build:native)`);
  fs.rmSync(destDir, { recursive: true, force: true });
  fs.mkdirSync(destDir, { recursive: true });
  const files = [[addon, addonName()]];
  for (const name of fs.readdirSync(releaseDir).sort()) {
    const file = path.join(releaseDir, name);
    if (LIBRARY.test(name) && fs.lstatSync(file).isFile()) files.push([file, name]);
  }
  const canStrip = strip && process.platform === "linux" && !spawnSync("strip", ["--version"], { stdio: "ignore" }).error;
  return files.map(([from, name]) => {
    const to = path.join(destDir, name);
    fs.copyFileSync(from, to);
    if (canStrip) spawnSync("strip", ["--strip-unneeded", to], { stdio: "ignore" });
    return { name, bytes: fs.statSync(to).size };
  });
}
