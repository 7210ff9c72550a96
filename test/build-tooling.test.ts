import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { packageRoot } from "../src/binding.js";

const pin = JSON.parse(fs.readFileSync(path.join(packageRoot, "vendor", "llama.cpp.pin.json"), "utf8")) as {
  package: string;
  version: string;
  commit: string;
};
const script = (name: string) => path.join(packageRoot, "scripts", name);
const tmpDirs: string[] = [];
afterAll(() => {
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true });
});

describe("vendored llama.cpp", () => {
  it("is materialized at the pinned commit, and re-running is a fast no-op", () => {
    const head = execFileSync("git", ["-C", path.join(packageRoot, "vendor", "llama.cpp"), "rev-parse", "HEAD"], {
      encoding: "utf8",
    }).trim();
    expect(head).toBe(pin.commit);
    const check = spawnSync(process.execPath, [script("vendor-llama.mjs"), "--check"], { encoding: "utf8" });
    expect(check.status, check.stderr).toBe(0);
    const again = spawnSync(process.execPath, [script("vendor-llama.mjs")], { encoding: "utf8" });
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain(`already at ${pin.commit}`);
  });

  it("is not tracked by git, and neither are binaries or models", () => {
    const tracked = execFileSync("git", ["ls-files"], { cwd: packageRoot, encoding: "utf8" }).split("\n");
    const offending = tracked.filter(
      (f) => f.startsWith("vendor/llama.cpp/") || /\.(node|gguf|so|dylib|dll|a|o)$/.test(f) || f.startsWith("build/"),
    );
    expect(offending).toEqual([]);
  });
});

describe("llama-mtmd-cli parity reference", () => {
  const cli = path.join(packageRoot, "build", "bin", process.platform === "win32" ? "llama-mtmd-cli.exe" : "llama-mtmd-cli");

  it("is built from the same tree as the addon", () => {
    expect(fs.existsSync(cli), `${cli} missing; run \`npm run build:reference\``).toBe(true);
    const version = spawnSync(cli, ["--version"], { encoding: "utf8" });
    expect(version.status).toBe(0);
    expect(version.stdout + version.stderr).toContain(pin.commit);
  });
});

describe("build switch", () => {
  it("rejects an unknown backend with the list of valid ones", () => {
    const result = spawnSync(process.execPath, [script("build-native.mjs"), "--gpu", "opencl"], { encoding: "utf8" });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("MULTIMODAL_LM_GPU=opencl is not one of auto, cpu, metal, cuda, vulkan");
  });

  it("rejects a switch without a value, and CMake args that are not -DNAME=VALUE", () => {
    const noValue = spawnSync(process.execPath, [script("build-native.mjs"), "--out"], { encoding: "utf8" });
    expect(noValue.status).toBe(1);
    expect(noValue.stderr).toContain("--out needs a value");
    const gpuNoValue = spawnSync(process.execPath, [script("build-native.mjs"), "--gpu", "--reference"], { encoding: "utf8" });
    expect(gpuNoValue.status).toBe(1);
    expect(gpuNoValue.stderr).toContain("--gpu needs a value");
    const badArgs = spawnSync(process.execPath, [script("build-native.mjs")], {
      encoding: "utf8",
      env: { ...process.env, MULTIMODAL_LM_CMAKE_ARGS: "GGML_CUDA=ON" },
    });
    expect(badArgs.status).toBe(1);
    expect(badArgs.stderr).toContain("MULTIMODAL_LM_CMAKE_ARGS entries must look like -DNAME=VALUE, got GGML_CUDA=ON");
  });

  const hasCublas = ["/usr/local/cuda/lib64", "/usr/local/cuda-13.0/lib64", "/usr/lib/x86_64-linux-gnu"].some(
    (dir) => fs.existsSync(dir) && fs.readdirSync(dir).some((f) => f.startsWith("libcublas.so")),
  );
  it.skipIf(hasCublas)("fails CUDA early, at configure time, naming the missing piece", () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-cuda-"));
    tmpDirs.push(out);
    const result = spawnSync(process.execPath, [script("build-native.mjs"), "--gpu", "cuda", "--out", out, "--configure-only"], {
      encoding: "utf8",
      env: { ...process.env, CUDACXX: process.env.CUDACXX ?? "" },
    });
    const output = result.stdout + result.stderr;
    expect(result.status).toBe(1);
    expect(output).toMatch(/cuBLAS is missing|the CUDA Toolkit was not found/);
    expect(output).toContain("MULTIMODAL_LM_GPU=cpu");
  }, 120_000);
});

describe.runIf(process.platform === "linux" && process.arch === "x64")("CPU variants switch", () => {
  const configure = (variants: string) => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-variants-"));
    tmpDirs.push(out);
    const result = spawnSync(process.execPath, [script("build-native.mjs"), "--gpu", "cpu", "--out", out, "--configure-only"], {
      encoding: "utf8",
      env: { ...process.env, MULTIMODAL_LM_CMAKE_ARGS: `-DMULTIMODAL_LM_CPU_VARIANTS=${variants}` },
    });
    return { status: result.status, output: result.stdout + result.stderr };
  };

  it("builds the variants asked for, always with the x64 fallback, and refuses an unknown one with the list", () => {
    const some = configure("haswell;zen4");
    expect(some.status, some.output).toBe(0);
    expect(some.output).toContain("multimodal-lm: CPU variants x64;haswell;zen4");
    const unknown = configure("pentium4");
    expect(unknown.status).toBe(1);
    // CMake wraps its messages: compare with the line breaks as spaces.
    expect(unknown.output.replace(/\s+/g, " ")).toMatch(/llama\.cpp has no CPU variant named pentium4; it has x64, .*haswell.*zen4/);
  }, 300_000);
});

describe("vulkan switch", () => {
  it("configures, or fails at configure time naming the missing piece", () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-vulkan-"));
    tmpDirs.push(out);
    const result = spawnSync(process.execPath, [script("build-native.mjs"), "--gpu", "vulkan", "--out", out, "--configure-only"], {
      encoding: "utf8",
      env: { ...process.env, MULTIMODAL_LM_CMAKE_ARGS: "" },
    });
    const output = result.stdout + result.stderr;
    if (result.status === 0) {
      expect(output).toContain("multimodal-lm: backend vulkan");
    } else {
      expect(output).toMatch(
        /Vulkan loader and headers were not found|`glslc` shader compiler was not found|SPIRV-Headers were not found|needs VK_EXT_layer_settings|does not support GL_KHR_cooperative_matrix/,
      );
      expect(output).toContain("MULTIMODAL_LM_GPU=vulkan");
    }
  }, 180_000);
});
