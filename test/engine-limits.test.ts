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
