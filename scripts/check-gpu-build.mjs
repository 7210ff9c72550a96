#!/usr/bin/env node
// Builds a GPU variant into its own directory (build-<backend>/, so the default
// build is untouched), loads it, runs the device check on every device, then runs
// each tiny test model through that build's llama-mtmd-cli and compares the text
// with the CPU reference build (build/bin/llama-mtmd-cli) when there is one.
//
//   node scripts/check-gpu-build.mjs vulkan     (npm run check:vulkan)
//   node scripts/check-gpu-build.mjs cuda       (npm run check:cuda)
//
// Exits non-zero unless a device of that backend computes the Q8_0 check correctly
// and every tiny model generates on it.
// Needs `npm run build:ts` (lib/) first; `npm install` does that.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const backend = process.argv[2];
const names = { vulkan: "Vulkan", cuda: "CUDA", metal: "MTL" };
if (!names[backend]) {
  process.stderr.write("usage: check-gpu-build.mjs vulkan|cuda|metal\n");
  process.exit(2);
}
const out = path.join(root, `build-${backend}`);
const started = Date.now();
const build = spawnSync(process.execPath, [path.join(root, "scripts", "build-native.mjs"), "--gpu", backend, "--out", out, "--reference"], {
  cwd: root,
  stdio: "inherit",
});
if (build.status !== 0) process.exit(build.status ?? 1);
const buildSeconds = ((Date.now() - started) / 1000).toFixed(0);

const binary = path.join(out, "Release", "multimodal_lm.node");
if (!fs.existsSync(path.join(root, "lib", "index.js"))) {
  process.stderr.write("lib/ is missing; run `npm run build:ts` first.\n");
  process.exit(1);
}
const probe = `
  const { systemInfo, checkDevices } = await import(${JSON.stringify(path.join(root, "lib", "index.js"))});
  const info = systemInfo();
  const checks = await checkDevices();
  console.log(JSON.stringify({ info, checks }));
`;
const run = spawnSync(process.execPath, ["--input-type=module", "-e", probe], {
  cwd: root,
  encoding: "utf8",
  env: { ...process.env, MULTIMODAL_LM_BINARY: binary },
});
if (run.status !== 0) {
  process.stderr.write(run.stderr);
  process.exit(run.status ?? 1);
}
const { info, checks } = JSON.parse(run.stdout.trim().split("\n").pop());
console.log(`built ${binary} in ${buildSeconds}s (backend ${info.backend}, llama.cpp ${info.llamaCppCommit.slice(0, 8)})`);
for (const d of info.devices) console.log(`device ${d.name} [${d.backend}, ${d.type}] ${d.description}`);
for (const c of checks) {
  console.log(`check  ${c.device}: ${c.ok ? "ok" : "FAILED"} maxError=${c.maxError.toExponential(2)} ${c.milliseconds.toFixed(1)}ms${c.error ? ` (${c.error})` : ""}`);
}
const gpuOk = checks.some((c) => c.backend === names[backend] && c.ok);
if (!gpuOk) {
  const hint =
    backend === "vulkan" && !process.env.GGML_VK_VISIBLE_DEVICES
      ? " ggml skips CPU-type Vulkan devices (lavapipe/llvmpipe) unless they are named: try GGML_VK_VISIBLE_DEVICES=0."
      : "";
  process.stderr.write(`no ${names[backend]} device passed the check; is a ${backend} driver installed?${hint}\n`);
  process.exit(1);
}

// The tiny test models on this backend (all layers and the projector offloaded by default).
const tm = await import(path.join(root, "lib", "test-models", "index.js"));
const image = await tm.writeTestImage(path.join(out, "check-image.png"), { width: 84, height: 84 });
const cpuCli = tm.referenceCliPath(path.join(root, "build"));
let failed = false;
for (const recipe of ["qwen2vl-tiny", "smolvlm-tiny"]) {
  const files = await tm.ensureTestModel(recipe, { cacheDir: path.join(root, ".cache", "test-models") });
  const request = { model: files.model, mmproj: files.mmproj, images: [image], prompt: "Describe this image." };
  try {
    const gpu = tm.runReference({ ...request, cli: tm.referenceCliPath(out) });
    let versus = "(no CPU reference build to compare with)";
    if (fs.existsSync(cpuCli)) {
      const cpu = tm.runReference({ ...request, cli: cpuCli });
      versus = cpu.text === gpu.text ? "= CPU output" : `differs from CPU ${JSON.stringify(cpu.text)} (backends may round differently)`;
    }
    console.log(`model  ${recipe}: ${JSON.stringify(gpu.text)} ${versus}`);
  } catch (err) {
    failed = true;
    console.error(`model  ${recipe}: FAILED ${err.message}`);
  }
}
if (failed) process.exit(1);
