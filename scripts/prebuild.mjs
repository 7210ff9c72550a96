#!/usr/bin/env node
// Writes prebuilds/<platform>-<arch>/multimodal_lm.<libc>.node for this machine
// (prebuildify layout; loaded before any local build). The backend follows
// MULTIMODAL_LM_GPU like every other build.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

function run(args, env = process.env) {
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit", env });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

run([path.join(root, "scripts", "vendor-llama.mjs")]);
const prebuildify = path.join(path.dirname(require.resolve("prebuildify/package.json")), "bin.js");
run([prebuildify, "--napi", "--strip", "--tag-libc", "--name", "multimodal_lm"], {
  ...process.env,
  PREBUILD_NODE_GYP: path.join(root, "scripts", "prebuildify-cmake-js.mjs"),
});
