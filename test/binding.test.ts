import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { bindingCandidates, loadBinding, packageRoot } from "../src/binding.js";
import { BindingLoadError, MultimodalLMError } from "../src/errors.js";
import { checkDevices, systemInfo } from "../src/system.js";

const pin = JSON.parse(fs.readFileSync(path.join(packageRoot, "vendor", "llama.cpp.pin.json"), "utf8")) as {
  commit: string;
};

describe("native addon", () => {
  it("reports the pinned llama.cpp commit and the CPU backend", () => {
    const info = systemInfo();
    expect(info.llamaCppCommit).toBe(pin.commit);
    expect(info.backend).toBe(process.platform === "darwin" ? "metal" : "cpu");
    expect(info.backends).toContain("CPU");
    expect(info.devices.some((d) => d.type === "cpu" && d.backend === "CPU")).toBe(true);
    expect(info.llamaSystemInfo).toContain("CPU");
  });

  it("reports the media marker that mtmd expects", () => {
    const info = systemInfo();
    expect(info.mediaMarker).toBe("<__media__>");
    expect(loadBinding().mediaMarker()).toBe(info.mediaMarker);
  });

  // Where the CPU backend is linked in (no runtime variants: macOS, Windows, GPU builds); the
  // variants are checked in cpu-variants.test.ts.
  it.runIf(process.arch === "x64" && systemInfo().cpuVariant === null)("links a portable x86-64 CPU backend: AVX2/FMA/F16C, no AVX-512 or AMX", () => {
    const features = systemInfo().cpuFeatures;
    expect(features).toEqual(expect.arrayContaining(["AVX", "AVX2", "FMA", "F16C"]));
    expect(features.filter((f) => f.startsWith("AVX512") || f.startsWith("AMX"))).toEqual([]);
  });

  it("computes a Q8_0 matmul correctly on every device", async () => {
    const results = await checkDevices();
    expect(results.length).toBe(systemInfo().devices.length);
    for (const r of results) {
      expect(r, `${r.device}: ${r.error ?? ""}`).toMatchObject({ ok: true });
      expect(r.maxError).toBeLessThan(0.02);
    }
  });
});

describe("binding loader", () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-binding-"));
  });
  afterAll(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("lists every path it tried, and why, when nothing loads", () => {
    const missing = path.join(tmp, "missing.node");
    const corrupt = path.join(tmp, "corrupt.node");
    fs.writeFileSync(corrupt, Buffer.from("this is not a shared library"));
    // Loads fine but exports nothing of ours (a .cjs stands in for a foreign addon).
    const notAddon = path.join(tmp, "not-an-addon.cjs");
    fs.writeFileSync(notAddon, "module.exports = { hello() {} };");

    let error: unknown;
    try {
      loadBinding([missing, corrupt, { path: notAddon, source: "prebuild" }]);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(BindingLoadError);
    expect(error).toBeInstanceOf(MultimodalLMError);
    const loadError = error as BindingLoadError;
    expect(loadError.code).toBe("E_BINDING_LOAD");
    expect(loadError.attempts.map((a) => a.path)).toEqual([missing, corrupt, notAddon]);
    expect(loadError.attempts[0]!.reason).toBe("not found");
    expect(loadError.attempts[1]!.reason).toMatch(/invalid ELF header|file too short|not a mach-o|not a valid Win32/i);
    expect(loadError.attempts[2]!.reason).toMatch(/not a multimodal-lm addon/);
    expect(loadError.message).toContain(`${missing} (explicit): not found`);
    expect(loadError.message).toContain(corrupt);
    expect(loadError.message).toContain("npm rebuild multimodal-lm");
    expect(loadError.message).toContain("MULTIMODAL_LM_BINARY");
  });

  it("falls through a bad candidate to a working one", () => {
    const missing = path.join(tmp, "missing.node");
    const good = bindingCandidates().find((c) => fs.existsSync(c.path));
    expect(good).toBeDefined();
    const binding = loadBinding([missing, good!]);
    expect(binding.systemInfo().llamaCppCommit).toBe(pin.commit);
  });

  it("tries prebuilds, then the local build; MULTIMODAL_LM_BINARY alone when it is set", () => {
    const candidates = bindingCandidates("/pkg", {});
    expect(candidates[0]).toEqual({
      path: path.join("/pkg", "prebuilds", `${process.platform}-${process.arch}`, "multimodal_lm.glibc.node"),
      source: "prebuild",
    });
    expect(candidates.slice(1)).toEqual([
      { path: path.join("/pkg", "build", "Release", "multimodal_lm.node"), source: "local build" },
      { path: path.join("/pkg", "build", "Debug", "multimodal_lm.node"), source: "local build" },
    ]);
    const env = { MULTIMODAL_LM_BINARY: "/opt/x/multimodal_lm.node" };
    expect(bindingCandidates("/pkg", env)).toEqual([{ path: "/opt/x/multimodal_lm.node", source: "MULTIMODAL_LM_BINARY" }]);
  });

  it("a MULTIMODAL_LM_BINARY that is missing fails, naming it, though a working build exists", () => {
    const missing = path.join(tmp, "nowhere", "multimodal_lm.node");
    expect(bindingCandidates(packageRoot).some((c) => fs.existsSync(c.path))).toBe(true);
    let error: unknown;
    try {
      loadBinding(bindingCandidates(packageRoot, { MULTIMODAL_LM_BINARY: missing }));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(BindingLoadError);
    const loadError = error as BindingLoadError;
    expect(loadError.attempts).toEqual([{ path: missing, source: "MULTIMODAL_LM_BINARY", reason: "not found" }]);
    expect(loadError.message).toContain(`${missing} (MULTIMODAL_LM_BINARY): not found`);
    expect(loadError.message).toContain("unset it to use the package's prebuilt or local build");
  });

  it("the error for no addon at all says what to run when npm skipped the install script", () => {
    let error: unknown;
    try {
      loadBinding([path.join(tmp, "missing.node")]);
    } catch (e) {
      error = e;
    }
    expect((error as Error).message).toContain("npm install-scripts approve multimodal-lm");
    expect((error as Error).message).toContain('"allowScripts": { "multimodal-lm": true }');
  });
});

describe("binding candidate order", () => {
  let root: string;
  const platformDir = () => path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
  const touch = (file: string, seconds: number) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, "");
    fs.utimesSync(file, seconds, seconds);
  };
  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-order-"));
  });
  afterAll(() => {
    fs.rmSync(root, { recursive: true, force: true });
  });

  it("prefers a prebuild over an older local build", () => {
    touch(path.join(root, "build", "Release", "multimodal_lm.node"), 1_000);
    touch(path.join(platformDir(), "multimodal_lm.glibc.node"), 2_000);
    expect(bindingCandidates(root, {}).map((c) => c.source)).toEqual(["prebuild", "local build", "local build"]);
  });

  it("prefers a local build made after the prebuild (e.g. a from-source GPU install)", () => {
    touch(path.join(root, "build", "Release", "multimodal_lm.node"), 3_000);
    expect(bindingCandidates(root, {}).map((c) => c.source)).toEqual(["local build", "local build", "prebuild"]);
  });
});
