#!/usr/bin/env node
// `npm install` entry point: use a prebuilt binary when one loads on this
// machine, otherwise materialize vendor/llama.cpp and compile the addon.
// Set MULTIMODAL_LM_GPU (or `--build-from-source`) to force a local build.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function runNode(script, args = []) {
  const result = spawnSync(process.execPath, [path.join(root, "scripts", script), ...args], { cwd: root, stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

function usablePrebuild() {
  const dir = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
  if (!fs.existsSync(dir)) return undefined;
  for (const name of fs.readdirSync(dir).filter((n) => n.endsWith(".node"))) {
    const file = path.join(dir, name);
    const probe = spawnSync(process.execPath, ["-e", "process.dlopen({ exports: {} }, process.argv[1])", file], { encoding: "utf8" });
    if (probe.status === 0) return file;
    const reason = (probe.stderr ?? "").split("\n").find((line) => /Error|error/.test(line)) ?? `exit ${probe.status}`;
    process.stderr.write(`[multimodal-lm] the prebuilt binary ${path.relative(root, file)} does not load here (${reason.trim()}); building from source\n`);
  }
  return undefined;
}

const forceBuild = Boolean(process.env.MULTIMODAL_LM_GPU || process.env.npm_config_multimodal_lm_gpu || process.env.npm_config_build_from_source);
const prebuild = forceBuild ? undefined : usablePrebuild();
if (prebuild) {
  process.stderr.write(`[multimodal-lm] using prebuilt binary ${path.relative(root, prebuild)}\n`);
} else {
  runNode("vendor-llama.mjs");
  runNode("build-native.mjs");
}
