// Runtime CPU variants (Linux x86-64 CPU builds): the addon loads the best CPU backend variant
// this CPU and OS allow from its own folder, says which and why, falls back to the baseline, and
// llama.cpp's reference tools run the same variant (the parity tests rely on it).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { describe, expect, it } from "vitest";

import { packageRoot } from "../src/binding.js";
import { systemInfo } from "../src/index.js";
import { ensureTestModel } from "../src/test-models/index.js";
import { referenceCliPath } from "../src/test-models/reference-cli.js";

const variant = systemInfo().cpuVariant;

// What a variant compiles for, from llama.cpp's x86 table (ggml/src/CMakeLists.txt).
const AVX512 = ["skylakex", "cascadelake", "icelake", "zen4", "sapphirerapids"];
const AVX2 = ["haswell", "alderlake", ...AVX512];

/** systemInfo() and a short greedy generation in a fresh process, with extra environment. */
function inChild(env: NodeJS.ProcessEnv): { status: number | null; stderr: string; result?: { info: ReturnType<typeof systemInfo>; text: string } } {
  const script = `
    import { MultimodalLM, systemInfo } from "./src/index.ts";
    import { ensureTestModel } from "./src/test-models/index.ts";
    const files = await ensureTestModel("qwen2vl-tiny");
    const lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });
    const text = await lm.describeImage("assets/sample.png", { maxTokens: 8, temperature: 0 });
    await lm.dispose();
    console.log(JSON.stringify({ info: systemInfo(), text }));`;
  const run = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: packageRoot,
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 120_000,
  });
  const last = run.stdout.trim().split("\n").at(-1);
  return { status: run.status, stderr: run.stderr, result: run.status === 0 && last ? JSON.parse(last) : undefined };
}

describe.runIf(variant !== null)("runtime CPU variants", () => {
  it("loads the highest-scoring usable variant from the addon's folder and says why", () => {
    const v = variant!;
    // The addon's own folder: the addon and the variants side by side.
    expect(fs.readdirSync(v.dir).filter((f) => f.endsWith(".node"))).toHaveLength(1);
    expect(fs.existsSync(path.join(v.dir, "libggml-cpu-x64.so"))).toBe(true);
    expect(v.candidates.map((c) => c.name)).toContain("x64");
    const usable = v.candidates.filter((c) => c.usable);
    const best = usable.reduce((a, b) => (b.score > a.score ? b : a));
    expect(v.name).toBe(best.name);
    expect(v.reason).toMatch(/^the highest-scoring variant this CPU supports/);
    // The baseline runs anywhere; every refused variant says why.
    expect(v.candidates.find((c) => c.name === "x64")).toMatchObject({ usable: true });
    for (const c of v.candidates.filter((c) => !c.usable)) expect(c.note, c.name).toBeTruthy();
    for (const c of v.candidates.filter((c) => c.score === 0)) expect(c.note).toBe("this CPU lacks an instruction set it needs");
    // AMX only with the kernel's grant: a CPU with AMX whose kernel refuses it is told so.
    const amx = v.candidates.find((c) => c.name === "sapphirerapids");
    if (amx && amx.score > 0 && !amx.usable) expect(amx.note).toMatch(/arch_prctl ARCH_REQ_XCOMP_PERM/);
  });

  it("the loaded CPU backend is the chosen variant: its instruction sets are the ones reported", () => {
    const info = systemInfo();
    const name = info.cpuVariant!.name!;
    const has = (f: string) => info.cpuFeatures.includes(f);
    expect(has("AVX2")).toBe(AVX2.includes(name));
    expect(has("AVX512")).toBe(AVX512.includes(name));
    expect(info.devices.filter((d) => d.type === "cpu")).toHaveLength(1);
  });

  it("MULTIMODAL_LM_CPU_VARIANT=x64 runs the portable baseline (what a CPU without AVX2 gets)", () => {
    const run = inChild({ MULTIMODAL_LM_CPU_VARIANT: "x64" });
    expect(run.status, run.stderr).toBe(0);
    const { info, text } = run.result!;
    expect(info.cpuVariant!.name).toBe("x64");
    expect(info.cpuVariant!.reason).toBe("MULTIMODAL_LM_CPU_VARIANT=x64");
    expect(info.cpuFeatures).not.toContain("AVX");
    expect(info.cpuFeatures).not.toContain("AVX2");
    expect(text.length).toBeGreaterThan(0);
  }, 180_000);

  it("a variant that is not built, or cannot run here, is refused with a warning and the best one is used", () => {
    const run = inChild({ MULTIMODAL_LM_CPU_VARIANT: "pentium4" });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/warning: MULTIMODAL_LM_CPU_VARIANT=pentium4 is not one of this build's variants \(x64, /);
    expect(run.result!.info.cpuVariant!.name).toBe(variant!.name);
    const unusable = variant!.candidates.find((c) => !c.usable);
    if (unusable) {
      const refused = inChild({ MULTIMODAL_LM_CPU_VARIANT: unusable.name });
      expect(refused.stderr).toContain(`MULTIMODAL_LM_CPU_VARIANT=${unusable.name} cannot run here: ${unusable.note}`);
      expect(refused.result!.info.cpuVariant!.name).toBe(variant!.name);
    }
  }, 180_000);

  it("llama-mtmd-cli (the parity reference) loads the same variant file", async () => {
    const files = await ensureTestModel("qwen2vl-tiny");
    const args = ["-m", files.model, "--mmproj", files.mmproj, "--image", "assets/sample.png", "-p", "Hi", "-n", "1", "--temp", "0", "-v"];
    const run = spawnSync(referenceCliPath(), args, { cwd: packageRoot, encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
    const loaded = [...`${run.stdout}${run.stderr}`.matchAll(/loaded CPU backend from (\S+)/g)].map((m) => path.basename(m[1]!));
    expect(loaded).toEqual([`libggml-cpu-${variant!.name}.so`]);
  }, 120_000);
});
