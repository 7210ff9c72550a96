#!/usr/bin/env node
// Formats (--fix) or checks (--check) native/ with the clang-format binary that
// the `clang-format` npm package ships, so every machine uses the same version.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const mode = process.argv[2];
if (mode !== "--check" && mode !== "--fix") {
  process.stderr.write("usage: clang-format.mjs --check | --fix\n");
  process.exit(2);
}
const files = fs
  .readdirSync(path.join(root, "native"))
  .filter((name) => /\.(cpp|h)$/.test(name))
  .map((name) => path.join("native", name));
const bin = path.join(path.dirname(require.resolve("clang-format/package.json")), "index.js");
const args = mode === "--check" ? ["--dry-run", "--Werror", ...files] : ["-i", ...files];
const result = spawnSync(process.execPath, [bin, "--style=file", ...args], { cwd: root, stdio: "inherit" });
if (result.status !== 0 && mode === "--check") {
  process.stderr.write("native/ is not clang-formatted; run `npm run format`.\n");
}
process.exit(result.status ?? 1);
