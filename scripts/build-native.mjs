#!/usr/bin/env node
// Builds the native addon (and optionally the llama-mtmd-cli parity reference)
// with cmake-js against vendor/llama.cpp.
//
//   node scripts/build-native.mjs [--gpu cpu|metal|cuda|vulkan|auto] [--reference] [--out DIR] [--debug] [--configure-only]
//
// The backend comes from --gpu, else MULTIMODAL_LM_GPU, else the npm config value
// `multimodal_lm_gpu` (`npm install --multimodal-lm-gpu=vulkan`), else what the
// existing build dir was configured with, else auto (Metal on macOS, CPU elsewhere).
// --reference also builds llama-mtmd-cli into <out>/bin; it stays on once set.
// MULTIMODAL_LM_CMAKE_ARGS="-DNAME=VALUE ..." passes extra CMake cache values.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const BACKENDS = ["auto", "cpu", "metal", "cuda", "vulkan"];

function fail(message) {
  process.stderr.write(`[multimodal-lm build] error: ${message}\n`);
  process.exit(1);
}

const USAGE = `build-native.mjs [--gpu ${BACKENDS.join("|")}] [--reference] [--out DIR] [--debug] [--configure-only]`;

function parseArgs(argv) {
  const options = { gpu: undefined, reference: false, out: "build", debug: false, configureOnly: false };
  const valueOf = (i) => {
    const value = argv[i + 1];
    if (value === undefined || value.startsWith("--")) fail(`${argv[i]} needs a value. Usage: ${USAGE}`);
    return value;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--reference") options.reference = true;
    else if (arg === "--debug") options.debug = true;
    else if (arg === "--configure-only") options.configureOnly = true;
    else if (arg === "--gpu") options.gpu = valueOf(i++);
    else if (arg === "--out") options.out = valueOf(i++);
    else fail(`unknown argument ${arg}. Usage: ${USAGE}`);
  }
  return options;
}

// An explicit choice wins; otherwise an existing build keeps the backend it was
// configured with, so `npm test` does not silently turn a Vulkan build into CPU.
function resolveBackend(explicit, env = process.env) {
  const value = explicit ?? env.MULTIMODAL_LM_GPU ?? env.npm_config_multimodal_lm_gpu;
  if (value === undefined || value === "") return undefined;
  const lower = value.toLowerCase();
  if (!BACKENDS.includes(lower)) {
    fail(`MULTIMODAL_LM_GPU=${value} is not one of ${BACKENDS.join(", ")}.`);
  }
  return lower;
}

function cachedValue(outDir, name) {
  const cache = path.join(outDir, "CMakeCache.txt");
  if (!fs.existsSync(cache)) return undefined;
  const match = fs.readFileSync(cache, "utf8").match(new RegExp(`^${name}:[A-Z]+=(.*)$`, "m"));
  return match?.[1];
}

function hasCommand(cmd) {
  const probe = spawnSync(cmd, ["--version"], { stdio: "ignore" });
  return !probe.error;
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  const outDir = path.resolve(root, options.out);
  const gpu = resolveBackend(options.gpu) ?? cachedValue(outDir, "MULTIMODAL_LM_GPU") ?? "auto";
  const reference = options.reference || cachedValue(outDir, "MULTIMODAL_LM_REFERENCE_TOOLS") === "ON";

  if (!hasCommand("cmake")) {
    fail("`cmake` (3.19 or newer) was not found on PATH. Install it (Debian/Ubuntu: `apt-get install cmake`, macOS: `brew install cmake`) and re-run `npm run build:native`.");
  }
  if (!fs.existsSync(path.join(root, "vendor", "llama.cpp", "CMakeLists.txt"))) {
    fail("vendor/llama.cpp is missing. Run `npm run vendor` first.");
  }

  const cmakeJs = path.join(path.dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js");
  const common = ["--out", outDir, `--CDMULTIMODAL_LM_GPU=${gpu}`, `--CDMULTIMODAL_LM_REFERENCE_TOOLS=${reference ? "ON" : "OFF"}`];
  if (options.debug) common.push("--debug");
  // Escape hatch for any other CMake cache value, e.g. "-DCMAKE_CUDA_ARCHITECTURES=90".
  for (const arg of (process.env.MULTIMODAL_LM_CMAKE_ARGS ?? "").split(/\s+/).filter(Boolean)) {
    if (!arg.startsWith("-D")) fail(`MULTIMODAL_LM_CMAKE_ARGS entries must look like -DNAME=VALUE, got ${arg}`);
    common.push(`--CD${arg.slice(2)}`);
  }

  process.stderr.write(
    `[multimodal-lm build] backend=${gpu}${reference ? " +llama-mtmd-cli" : ""} out=${path.relative(root, outDir)} ` +
      `(the first build compiles llama.cpp and takes several minutes; ccache makes rebuilds fast)\n`,
  );
  // `cmake-js build` alone skips configuring an existing tree, so option changes would be lost.
  const steps = [["configure", ...common]];
  if (!options.configureOnly) steps.push(["build", ...common, "--parallel", String(os.availableParallelism())]);
  // Paths under the checkout hash as relative, so ccache hits across clones (CI, worktrees).
  const env = { ...process.env, CCACHE_BASEDIR: process.env.CCACHE_BASEDIR ?? root };
  for (const step of steps) {
    const result = spawnSync(process.execPath, [cmakeJs, ...step], { cwd: root, stdio: "inherit", env });
    if (result.status !== 0) {
      fail(`cmake-js ${step[0]} exited with ${result.status ?? result.signal}. The CMake output above names the failing step.`);
    }
  }
}

main();
