#!/usr/bin/env node
// prebuildify drives node-gyp; it lets PREBUILD_NODE_GYP name another builder.
// This adapter accepts node-gyp's `rebuild --release|--debug ...` and builds
// with cmake-js instead, into build/<config>/ where prebuildify looks.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
if (args[0] !== "rebuild") {
  process.stderr.write(`prebuildify-cmake-js: only "rebuild" is supported, got ${args.join(" ")}\n`);
  process.exit(2);
}
const buildArgs = [path.join(here, "build-native.mjs")];
if (args.includes("--debug")) buildArgs.push("--debug");
const result = spawnSync(process.execPath, buildArgs, { stdio: "inherit" });
process.exit(result.status ?? 1);
