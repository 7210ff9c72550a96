// Engine limits that depend on the projector. Issue 17: a projector that decodes an image with
// non-causal attention (Gemma 3) needs the whole image in one micro-batch; llama.cpp aborts the
// process (GGML_ASSERT "non-causal attention requires n_ubatch >= n_tokens") when an image has
// more tokens than n_ubatch. The engine raises n_ubatch at load to hold the projector's largest
// image. Each case runs in a child process, because the failure it guards against is an abort.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { GEMMA3_TINY, ensureTestModel, gemma3ImageTokens, referenceCliPath, runReference, writeTestImage, type TestModelFiles } from "../src/test-models/index.js";

const PROMPT = "Describe this image.";
const N = 16;
const NON_CAUSAL_ASSERT = /non-causal attention requires n_ubatch >= n_tokens/;

let tmp: string;
let image: string;
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-limits-"));
  image = await writeTestImage(path.join(tmp, "image.png"), { width: 84, height: 84, seed: 1 });
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface ChildResult {
  batchSize: number;
  ubatchSize: number;
  mediaTokens: number;
  text: string;
  /** The same request on a model loaded with default options, when asked for. */
  solo?: { text: string; batchSize: number; ubatchSize: number };
}

/**
 * Loads `files` with `options` in a child process (lib/, as `npm test`'s pretest builds it),
 * describes `image` greedily, then (with `solo`) does the same on a default load, and prints
 * the results as JSON.
 */
function describeInChild(files: TestModelFiles, options: object, solo: boolean): { status: number | null; signal: string | null; stderr: string; result?: ChildResult } {
  const script = `
    const { MultimodalLM } = await import(${JSON.stringify(path.resolve("lib/index.js"))});
    const files = { model: ${JSON.stringify(files.model)}, mmproj: ${JSON.stringify(files.mmproj)} };
    const image = ${JSON.stringify(image)};
    const request = { prompt: ${JSON.stringify(PROMPT)}, images: [image], temperature: 0, seed: 42, maxTokens: ${N} };
    const lm = await MultimodalLM.load({ ...files, ...${JSON.stringify(options)} });
    const { batchSize, ubatchSize } = lm.info;
    const { mediaTokens } = await lm.countTokens(request.prompt, [image]);
    const { text } = await lm.generate(request);
    await lm.dispose();
    let solo;
    if (${String(solo)}) {
      const other = await MultimodalLM.load(files);
      solo = { text: (await other.generate(request)).text, batchSize: other.info.batchSize, ubatchSize: other.info.ubatchSize };
      await other.dispose();
    }
    console.log(JSON.stringify({ batchSize, ubatchSize, mediaTokens, text, solo }));
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, GGML_NO_BACKTRACE: "1" },
  });
  const last = r.stdout.trim().split("\n").at(-1) ?? "";
  const result = r.status === 0 && last.startsWith("{") ? (JSON.parse(last) as ChildResult) : undefined;
  return { status: r.status, signal: r.signal, stderr: r.stderr, result };
}

/** Runs the reference CLI once, for its exit and stderr (an abort, not output, is expected). */
function referenceExit(files: TestModelFiles, extraArgs: string[]): { status: number | null; signal: string | null; stderr: string } {
  const args = ["-m", files.model, "--mmproj", files.mmproj, "--image", image, "-p", PROMPT, "--jinja", "--temp", "0", "-n", String(N), ...extraArgs];
  const r = spawnSync(referenceCliPath(), args, { encoding: "utf8", timeout: 120_000, env: { ...process.env, GGML_NO_BACKTRACE: "1" } });
  return { status: r.status, signal: r.signal, stderr: r.stderr };
}

describe("an image with more tokens than the micro-batch, on a non-causal projector (gemma3-tiny)", () => {
  it("batchSize 32 and a 64-token image: the micro-batch is raised to hold the image, and the output is the whole image's", async () => {
    const imageSize = 448;
    const tokens = gemma3ImageTokens(GEMMA3_TINY, imageSize);
    expect(tokens).toBe(64);
    const files = await ensureTestModel("gemma3-tiny", { imageSize });

    const child = describeInChild(files, { batchSize: 32 }, true);
    expect(child.stderr).not.toMatch(NON_CAUSAL_ASSERT);
    expect(child.signal).toBeNull();
    expect(child.status, child.stderr.slice(-2000)).toBe(0);
    const out = child.result!;
    expect(out.mediaTokens).toBe(tokens);
    expect(out.ubatchSize).toBeGreaterThanOrEqual(tokens);
    expect(out.batchSize).toBeGreaterThanOrEqual(out.ubatchSize);
    expect(out.text.length).toBeGreaterThan(N / 2);
    // The same as a default load (batch 2048, micro-batch 512), which decodes the image in one micro-batch.
    expect(out.solo?.ubatchSize).toBeGreaterThanOrEqual(tokens);
    expect(out.text).toBe(out.solo?.text);

    // Token parity with the reference CLI run with the same batch and micro-batch.
    const ref = runReference({
      model: files.model,
      mmproj: files.mmproj,
      images: [image],
      prompt: PROMPT,
      nPredict: N,
      extraArgs: ["-b", String(out.batchSize), "-ub", String(out.ubatchSize)],
    });
    expect(out.text).toBe(ref.text);

    // What this catches. The CLI with -b 32 -ub 32 decodes the image in two micro-batches of
    // 32, each attending only to itself and what came before: no abort, other tokens (the
    // engine did that with batchSize 32 before). With -b 64 -ub 32 one decode call holds the
    // whole image but the micro-batch does not: llama.cpp aborts.
    const split = runReference({ model: files.model, mmproj: files.mmproj, images: [image], prompt: PROMPT, nPredict: N, extraArgs: ["-b", "32", "-ub", "32"] });
    expect(split.text).not.toBe(out.text);
    const aborted = referenceExit(files, ["-b", "64", "-ub", "32"]);
    expect(aborted.signal).toBe("SIGABRT");
    expect(aborted.stderr).toMatch(NON_CAUSAL_ASSERT);
  });

  it("default options and a 529-token image (more than the default micro-batch of 512): issue 17 as reported", async () => {
    const imageSize = 1288;
    const tokens = gemma3ImageTokens(GEMMA3_TINY, imageSize);
    expect(tokens).toBe(529);
    const files = await ensureTestModel("gemma3-tiny", { imageSize });

    // llama-mtmd-cli with its defaults (-b 2048 -ub 512) aborts on this model.
    const aborted = referenceExit(files, []);
    expect(aborted.signal).toBe("SIGABRT");
    expect(aborted.stderr).toMatch(NON_CAUSAL_ASSERT);

    const child = describeInChild(files, {}, false);
    expect(child.stderr).not.toMatch(NON_CAUSAL_ASSERT);
    expect(child.signal).toBeNull();
    expect(child.status, child.stderr.slice(-2000)).toBe(0);
    const out = child.result!;
    expect(out.mediaTokens).toBe(tokens);
    expect(out.ubatchSize).toBeGreaterThanOrEqual(tokens);
    expect(out.batchSize).toBe(2048);
    const ref = runReference({
      model: files.model,
      mmproj: files.mmproj,
      images: [image],
      prompt: PROMPT,
      nPredict: N,
      extraArgs: ["-b", String(out.batchSize), "-ub", String(out.ubatchSize)],
    });
    expect(out.text).toBe(ref.text);
  });
});

// Issue 17: llama.cpp caps n_batch at the context asked for, then rounds the context up to a
// multiple of 256. The engine used to send batches of its own size and check overflow against
// the rounded size, so a prompt or video that filled a context of 16 or 1000 tokens ended the
// process with GGML_ASSERT(n_tokens_all <= cparams.n_batch).
describe("a context that is not a multiple of 256", () => {
  it("prompts and videos that fill it get results or typed errors, and the process lives", async () => {
    const qwen = await ensureTestModel("qwen2vl-tiny");
    const clip = path.join(tmp, "clip.mp4");
    spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=s=64x48:r=8:d=2", "-pix_fmt", "yuv420p", clip]);
    const script = `
      const { MultimodalLM } = await import(${JSON.stringify(path.resolve("lib/index.js"))});
      const files = { model: ${JSON.stringify(qwen.model)}, mmproj: ${JSON.stringify(qwen.mmproj)} };
      const image = ${JSON.stringify(image)};
      const out = [];
      const outcome = (p) => p.then((r) => ({ stopReason: r.stopReason, promptTokens: r.usage.promptTokens }), (e) => ({ code: e.code }));
      for (const contextSize of [16, 1000]) {
        const lm = await MultimodalLM.load({ ...files, contextSize, parallel: 2 });
        const room = lm.info.contextSize;
        // A prompt a few tokens short of the context: it fills it after a few generated tokens.
        let n = room;
        let fits = "";
        do { n -= 8; fits = "go ".repeat(n); } while ((await lm.countTokens(fits)).tokens > room - 4);
        out.push({ contextSize, room, batchSize: lm.info.batchSize,
          fits: await outcome(lm.generate({ prompt: fits, temperature: 0, ignoreEos: true })),
          over: await outcome(lm.generate({ prompt: "go ".repeat(room + 10), temperature: 0 })),
          image: await outcome(lm.generate({ prompt: "What is it?", images: [image], temperature: 0, maxTokens: 4 })),
          video: await outcome(lm.generate({ prompt: "What happens?", videos: [${JSON.stringify(clip)}], video: { fps: 8, maxFrames: 16 }, temperature: 0, maxTokens: 4 })),
        });
        await lm.dispose();
      }
      console.log(JSON.stringify(out));
    `;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 300_000 });
    expect(r.stderr).not.toMatch(/GGML_ASSERT|Aborted|Segmentation/);
    expect(r.status).toBe(0);
    const runs = JSON.parse(r.stdout.trim().split("\n").pop()!) as Array<Record<string, unknown>>;
    for (const run of runs) {
      // The batch is what llama.cpp made of it (at most the context asked for, 2 slots' worth),
      // and a slot holds at least what was asked for (llama.cpp rounds the whole up to 256).
      expect(run.batchSize).toBeLessThanOrEqual(Math.max(32, 2 * (run.contextSize as number)));
      expect(run.room).toBeGreaterThanOrEqual(run.contextSize as number);
      // A prompt that fills the context runs until the context is full.
      expect(run.fits).toMatchObject({ stopReason: "context" });
      expect(run.over).toEqual({ code: "E_CONTEXT_OVERFLOW" });
      expect(["length", "eos", "context"]).toContain((run.image as { stopReason?: string }).stopReason);
      const video = run.video as { stopReason?: string; code?: string };
      expect(video.code === "E_CONTEXT_OVERFLOW" || ["length", "eos", "context"].includes(video.stopReason!)).toBe(true);
    }
  }, 300_000);
});
