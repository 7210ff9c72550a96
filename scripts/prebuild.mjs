#!/usr/bin/env node
// Writes prebuilds/<platform>-<arch>/ for this machine: the addon (multimodal_lm.glibc.node on
// Linux, multimodal_lm.node on macOS and Windows) and the libraries beside it (on Linux x86-64,
// llama.cpp's shared libraries and the runtime CPU variants). `npm pack` then ships them, and
// `npm install` uses them without compiling anything. The backend follows MULTIMODAL_LM_GPU like
// every other build.
//
//   node scripts/prebuild.mjs              build (into build/) and copy
//   node scripts/prebuild.mjs --no-build   copy what build/Release already holds
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { copyPrebuild } from "./prebuild-files.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
for (const arg of args) {
  if (arg !== "--no-build") {
    process.stderr.write(`prebuild: unknown argument ${arg}. Usage: node scripts/prebuild.mjs [--no-build]\n`);
    process.exit(2);
  }
}

function run(script) {
  const result = spawnSync(process.execPath, [path.join(root, "scripts", script)], { cwd: root, stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

if (!args.includes("--no-build")) {
  run("vendor-llama.mjs");
  run("build-native.mjs");
}
const dest = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
const files = copyPrebuild(path.join(root, "build", "Release"), dest);
let total = 0;
for (const { name, bytes } of files) {
  total += bytes;
  process.stdout.write(`${(bytes / 1024 / 1024).toFixed(1).padStart(6)} MB  ${name}\n`);
}
process.stdout.write(`${(total / 1024 / 1024).toFixed(1).padStart(6)} MB  in ${path.relative(root, dest)}/\n`);
