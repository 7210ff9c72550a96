// Installing the packed package with a prebuilt addon, as a user without a C++ toolchain would:
// the tarball `npm pack` makes (with prebuilds/linux-x64/ holding this build's addon, libraries
// and CPU variants, copied as `npm run prebuild` copies them) goes into an empty project with a
// PATH that has node and npm and nothing else (no compiler, CMake or git). Nothing may be
// compiled, and describeImage must work, in process and with isolation: "process", on the CPU
// variant this machine's CPU calls for.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { copyPrebuild } from "../scripts/prebuild-files.mjs";
import { packageRoot } from "../src/binding.js";
import { systemInfo } from "../src/index.js";
import { ensureTestModel, type TestModelFiles } from "../src/test-models/index.js";

const release = path.join(packageRoot, "build", "Release");
const linuxX64 = process.platform === "linux" && process.arch === "x64";
let tmp: string;
let tarball: string;
let qwen: TestModelFiles;
let prebuilt: string[];

/** A PATH with node, npm and a shell only. */
function bareBin(): string {
  const bin = path.join(tmp, "bin");
  fs.mkdirSync(bin);
  for (const name of ["node", "npm", "sh"]) {
    const target = execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim();
    fs.symlinkSync(target, path.join(bin, name));
  }
  return bin;
}

beforeAll(async () => {
  if (!linuxX64) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-install-"));
  qwen = await ensureTestModel("qwen2vl-tiny");
  // The package as `npm pack` sees it, in a copy, with this build's addon as the prebuild.
  const stage = path.join(tmp, "package");
  fs.mkdirSync(stage);
  for (const entry of ["package.json", "README.md", "lib", "assets", "native", "cmake", "deploy", "scripts", "CMakeLists.txt"]) {
    fs.cpSync(path.join(packageRoot, entry), path.join(stage, entry), { recursive: true });
  }
  fs.mkdirSync(path.join(stage, "vendor"));
  fs.copyFileSync(path.join(packageRoot, "vendor", "llama.cpp.pin.json"), path.join(stage, "vendor", "llama.cpp.pin.json"));
  prebuilt = copyPrebuild(release, path.join(stage, "prebuilds", "linux-x64")).map((f) => f.name);
  const packed = execFileSync("npm", ["pack", "--ignore-scripts", "--pack-destination", tmp], { cwd: stage, encoding: "utf8" }).trim().split("\n").at(-1)!;
  tarball = path.join(tmp, packed);
}, 120_000);
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(!linuxX64)("npm install from the packed tarball, with no compiler, CMake or git", () => {
  it("takes seconds, compiles nothing, and describes an image in process and isolated", async () => {
    const size = fs.statSync(tarball).size;
    // The addon, llama.cpp's libraries, the CPU variants and the JS; no test models or reference
    // tools.
    expect(size).toBeLessThan(20 * 1024 * 1024);
    const variant = systemInfo().cpuVariant;
    if (variant) {
      for (const c of variant.candidates) expect(prebuilt).toContain(`libggml-cpu-${c.name}.so`);
      expect(prebuilt).toContain("libggml-rpc.so");
    }
    const project = path.join(tmp, "project");
    fs.mkdirSync(project);
    const env = { ...process.env, PATH: bareBin(), npm_config_cache: path.join(os.homedir(), ".npm") };
    execFileSync("npm", ["init", "-y"], { cwd: project, env, stdio: "ignore" });
    const started = Date.now();
    const install = spawnSync("npm", ["install", "--no-audit", "--no-fund", tarball], { cwd: project, env, encoding: "utf8", timeout: 120_000 });
    const seconds = (Date.now() - started) / 1000;
    expect(install.status, install.stderr).toBe(0);
    expect(seconds).toBeLessThan(60);
    console.log(`npm install from a ${(size / 1048576).toFixed(1)} MB tarball: ${seconds.toFixed(1)} s`);
    const installed = path.join(project, "node_modules", "multimodal-lm");
    // Nothing was built or fetched: no build folder, no llama.cpp tree.
    expect(fs.existsSync(path.join(installed, "build"))).toBe(false);
    expect(fs.existsSync(path.join(installed, "vendor", "llama.cpp"))).toBe(false);
    // The install script (which npm 11 may skip until allowed) picks the prebuild, without a toolchain.
    const script = spawnSync("node", [path.join(installed, "scripts", "install.mjs")], { cwd: installed, env, encoding: "utf8" });
    expect(script.status, script.stderr).toBe(0);
    expect(script.stderr).toMatch(/using prebuilt binary prebuilds\/linux-x64\/multimodal_lm\.glibc\.node/);

    fs.writeFileSync(
      path.join(project, "try.mjs"),
      `import { MultimodalLM } from "multimodal-lm";\n` +
        `const files = { model: ${JSON.stringify(qwen.model)}, mmproj: ${JSON.stringify(qwen.mmproj)} };\n` +
        `import { systemInfo } from "multimodal-lm";\n` +
        `console.log("variant", JSON.stringify(systemInfo().cpuVariant));\n` +
        `for (const isolation of ["none", "process"]) {\n` +
        `  const lm = await MultimodalLM.load({ ...files, isolation });\n` +
        `  console.log(isolation, JSON.stringify(await lm.describeImage("node_modules/multimodal-lm/assets/sample.png", { maxTokens: 8, temperature: 0 })));\n` +
        `  await lm.dispose();\n` +
        `}\n`,
    );
    const run = spawnSync("node", ["try.mjs"], { cwd: project, env, encoding: "utf8", timeout: 60_000 });
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stdout.trim().split("\n");
    expect(lines).toHaveLength(3);
    const [installedVariant, none, isolated] = lines.map((line) => line.split(" ").slice(1).join(" "));
    // The installed package loads its variants from its own prebuilds folder, and picks the one
    // this build picks.
    const here = systemInfo().cpuVariant;
    const there = JSON.parse(installedVariant!) as typeof here;
    expect(there?.name).toBe(here?.name);
    if (there) expect(fs.realpathSync(there.dir)).toBe(fs.realpathSync(path.join(installed, "prebuilds", "linux-x64")));
    expect(none!.length).toBeGreaterThan(2);
    expect(isolated).toBe(none);
  }, 180_000);
});
