// MultimodalLM behaviour on the tiny models: streaming, abort, the event loop, token
// counting, embeddings, logging, lifecycle and every kind of bad input.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM } from "../src/index.js";
import { encodePng, ensureTestModel, runReference, testPattern, type TestModelFiles } from "../src/test-models/index.js";
import { emptyDataUrl, malformedBase64DataUrl, nonImageBytes, pngBomb, truncatedJpeg } from "./helpers/bad-images.js";
import { ISOLATIONS, loader } from "./helpers/isolation.js";
import { rejection } from "./helpers/rejection.js";

const greedy = { temperature: 0, seed: 42 } as const;
let tmp: string;
let qwen: TestModelFiles;
let smol: TestModelFiles;
let image: string;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-"));
  [qwen, smol] = await Promise.all([ensureTestModel("qwen2vl-tiny"), ensureTestModel("smolvlm-tiny")]);
  image = path.join(tmp, "image.png");
  fs.writeFileSync(image, encodePng(84, 84, testPattern(84, 84, 1)));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Counts event-loop turns (setImmediate) until `promise` settles, and the longest gap between them. */
async function loopTicksDuring<T>(promise: Promise<T>): Promise<{ ticks: number; maxGapMs: number; value: T }> {
  let ticks = 0;
  let maxGapMs = 0;
  let last = performance.now();
  let running = true;
  const spin = () => {
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
    ticks++;
    if (running) setImmediate(spin);
  };
  setImmediate(spin);
  try {
    return { value: await promise, ticks, maxGapMs };
  } finally {
    running = false;
  }
}

describe.each(ISOLATIONS)("isolation: %s", (isolation) => {
  const load = loader(isolation);

  describe("MultimodalLM on qwen2vl-tiny", () => {
    let lm: MultimodalLM;
    beforeAll(async () => {
      lm = await load({ model: qwen.model, mmproj: qwen.mmproj });
    });
    afterAll(() => lm?.dispose());

    it("reports what it loaded", () => {
      expect(lm.info).toMatchObject({
        architecture: "qwen2vl",
        projector: "qwen2vl_merger",
        embeddingSize: 256,
        mrope: true,
        hasChatTemplate: true,
        capabilities: { vision: true, audio: false },
      });
      expect(lm.info.contextSize).toBeGreaterThan(0);
      expect(lm.marker).toBe("<__media__>");
      expect(lm.isLoaded).toBe(true);
    });

    it("streams pieces that add up to the result, and stops at stop strings", async () => {
      const full = await lm.generate({ prompt: "Tell me", ...greedy, maxTokens: 24 });
      const stream = lm.generateStream({ prompt: "Tell me", ...greedy, maxTokens: 24 });
      const pieces: string[] = [];
      for await (const piece of stream) pieces.push(piece);
      expect(pieces.length).toBeGreaterThan(4);
      expect(pieces.join("")).toBe(full.text);
      expect((await stream.result).text).toBe(full.text);

      const stop = full.text.slice(8, 11);
      const stopped = lm.generateStream({ prompt: "Tell me", ...greedy, maxTokens: 24, stop: [stop, "\u0000never"] });
      const parts: string[] = [];
      for await (const piece of stopped) parts.push(piece);
      const r = await stopped.result;
      expect(r.stopReason).toBe("stop");
      expect(r.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
      expect(parts.join("")).toBe(r.text);
    });

    it("chat streams too, and a multi-turn conversation renders through the template", async () => {
      const messages = [
        { role: "system" as const, content: "Be brief." },
        { role: "user" as const, content: [{ type: "image" as const, image }, { type: "text" as const, text: "What is this?" }] },
        { role: "assistant" as const, content: "A pattern." },
        { role: "user" as const, content: "And the colours?" },
      ];
      const prompt = lm.formatChat(messages);
      expect(prompt).toContain("<|im_start|>system\nBe brief.<|im_end|>");
      expect(prompt).toContain(`${lm.marker}What is this?`);
      expect(prompt.endsWith("<|im_start|>assistant\n")).toBe(true);
      const stream = lm.chatStream({ messages, ...greedy, maxTokens: 8 });
      let text = "";
      for await (const piece of stream) text += piece;
      expect(text).toBe((await lm.chat({ messages, ...greedy, maxTokens: 8 })).text);
    });

    it("counts tokens from image sizes alone, matching generate's usage", async () => {
      const count = await lm.countTokens("Describe this image.", [image]);
      const r = await lm.generate({ prompt: "Describe this image.", images: [image], ...greedy, maxTokens: 1 });
      expect(count.tokens).toBe(r.usage.promptTokens);
      expect(count.mediaTokens).toBe(9); // 84x84 → 6x6 patches → 3x3 after the 2x2 merge
      expect(count.textTokens + count.mediaTokens).toBe(count.tokens);
      expect(count.positions).toBeLessThan(count.tokens); // M-RoPE: 9 tokens on a 3x3 grid take 3 positions
      // A corrupt image with an intact header still counts: only the size is read.
      const half = fs.readFileSync(image).subarray(0, 100);
      expect((await lm.countTokens("x", [half])).mediaTokens).toBe(9);
    });

    it("tokenizes and detokenizes", () => {
      const tokens = lm.tokenize("hello world");
      expect(tokens).toBeInstanceOf(Uint32Array);
      expect(lm.detokenize(tokens)).toBe("hello world");
      expect(lm.tokenize("<|im_end|>", { parseSpecial: true })).toHaveLength(1);
      expect(lm.tokenize("<|im_end|>").length).toBeGreaterThan(1);
    });

    it("embeds an image: [tokens, embeddingSize], deterministic, different per image", async () => {
      const a = await lm.embedImage(image);
      expect(a.shape).toEqual([9, 256]);
      expect(a.data).toHaveLength(9 * 256);
      expect(a.data.every(Number.isFinite)).toBe(true);
      expect((await lm.embedImage(image)).data).toEqual(a.data);
      const other = await lm.embedImage({ data: testPattern(84, 84, 9), width: 84, height: 84 });
      expect(other.id).not.toBe(a.id);
      expect(other.data).not.toEqual(a.data);
    });

    it("does not block the event loop while generating", async () => {
      const { ticks, maxGapMs, value } = await loopTicksDuring(lm.generate({ prompt: "Go on", ...greedy, maxTokens: 400 }));
      expect(value.usage.completionTokens).toBe(400);
      expect(ticks).toBeGreaterThan(50);
      expect(maxGapMs).toBeLessThan(100);
    });

    it("aborts during generation within 200 ms, then gives the parity output", async () => {
      const controller = new AbortController();
      const stream = lm.generateStream({ prompt: "Go on", ...greedy, maxTokens: 1_000_000, ignoreEos: true, signal: controller.signal });
      let pieces = 0;
      let abortedAt = 0;
      const iterate = (async () => {
        for await (const _ of stream) {
          if (++pieces === 20) {
            abortedAt = performance.now();
            controller.abort(new Error("user stop"));
          }
        }
      })();
      const error = await rejection(iterate);
      const settleMs = performance.now() - abortedAt;
      expect(error.code).toBe("E_ABORTED");
      expect(error.cause).toEqual(new Error("user stop"));
      expect(settleMs).toBeLessThan(200);
      expect((await rejection(stream.result)).code).toBe("E_ABORTED");

      const ref = runReference({ model: qwen.model, mmproj: qwen.mmproj, images: [image], prompt: "Describe this image." }).text;
      expect((await lm.generate({ prompt: "Describe this image.", images: [image], ...greedy, maxTokens: 16 })).text).toBe(ref);
    });

    it("aborts during image prefill within 200 ms, then gives the parity output", async () => {
      // Eight 560x560 images: about half a second of vision encoding on the tiny model.
      const images = Array.from({ length: 8 }, (_, i) => ({ data: testPattern(560, 560, 20 + i), width: 560, height: 560 }));
      const full = await lm.generate({ prompt: "Compare.", images, ...greedy, maxTokens: 1 });
      expect(full.timings.encodeMs).toBeGreaterThan(250);
      // Without this the images would come from the caches, and there would be no prefill to abort.
      await lm.clearCaches();

      const controller = new AbortController();
      const started = performance.now();
      const pending = lm.generate({ prompt: "Compare.", images, ...greedy, maxTokens: 1, signal: controller.signal });
      const abortAfter = full.timings.imageLoadMs + full.timings.encodeMs / 2;
      setTimeout(() => controller.abort(), abortAfter);
      const error = await rejection(pending);
      const settled = performance.now();
      expect(error.code).toBe("E_ABORTED");
      expect(settled - started - abortAfter).toBeLessThan(200);
      // It stopped inside the prefill, well before an unaborted one would have ended.
      expect(settled - started).toBeLessThan(full.timings.totalMs);

      const ref = runReference({ model: qwen.model, mmproj: qwen.mmproj, images: [image], prompt: "Describe this image." }).text;
      expect((await lm.generate({ prompt: "Describe this image.", images: [image], ...greedy, maxTokens: 16 })).text).toBe(ref);
    });

    it("rejects at once when the signal is already aborted, and leaving a stream early aborts it", async () => {
      const error = await rejection(lm.generate({ prompt: "x", signal: AbortSignal.abort(), maxTokens: 4 }));
      expect(error.code).toBe("E_ABORTED");
      const stream = lm.generateStream({ prompt: "Go on", ...greedy, maxTokens: 1_000_000, ignoreEos: true });
      for await (const _ of stream) break;
      expect((await rejection(stream.result)).code).toBe("E_ABORTED");
    });

    it("queues overlapping requests and runs them in order", async () => {
      const a = lm.generate({ prompt: "One", ...greedy, maxTokens: 8 });
      const b = lm.generate({ prompt: "Two", ...greedy, maxTokens: 8 });
      const [ra, rb] = await Promise.all([a, b]);
      expect(ra.text).toBe((await lm.generate({ prompt: "One", ...greedy, maxTokens: 8 })).text);
      expect(rb.text).toBe((await lm.generate({ prompt: "Two", ...greedy, maxTokens: 8 })).text);
    });

    describe("bad input gets a typed error and the model keeps working", () => {
      const cases: Array<[string, () => unknown, string]> = [
        ["a missing file", () => path.join(tmp, "missing.png"), "E_FILE_NOT_FOUND"],
        ["a directory path", () => tmp, "E_FILE_NOT_FOUND"],
        ["a truncated JPEG", () => truncatedJpeg(), "E_IMAGE_DECODE"],
        ["non-image bytes", () => nonImageBytes(), "E_IMAGE_DECODE"],
        ["an empty data: URL", () => emptyDataUrl(), "E_INVALID_DATA_URL"],
        ["malformed base64", () => malformedBase64DataUrl(), "E_INVALID_DATA_URL"],
        ["a 30000x30000 PNG bomb", () => pngBomb(), "E_IMAGE_TOO_LARGE"],
        ["raw pixels of the wrong length", () => ({ data: new Uint8Array(10), width: 4, height: 4 }), "E_INVALID_ARGUMENT"],
      ];
      it.each(cases)("%s", async (_what, make, code) => {
        const input = await make();
        const error = await rejection(lm.generate({ prompt: "x", images: [input as never], maxTokens: 1 }));
        expect(error.code).toBe(code);
        expect((await rejection(lm.describeImage(input as never))).code).toBe(code);
      });

      it("more images than markers, and more markers than images", async () => {
        const two = lm.generate({ prompt: `${lm.marker} compare`, images: [image, image], maxTokens: 1 });
        const e1 = await rejection(two);
        expect(e1.code).toBe("E_MEDIA_MISMATCH");
        expect(e1.message).toMatch(/1 media marker .* but 2 images were given/);
        const e2 = await rejection(lm.generate({ prompt: `${lm.marker}${lm.marker} compare`, images: [image], maxTokens: 1 }));
        expect(e2.code).toBe("E_MEDIA_MISMATCH");
        const e3 = await rejection(lm.chat({ messages: [{ role: "user", content: `look ${lm.marker}` }] }));
        expect(e3.code).toBe("E_MEDIA_MISMATCH");
        expect((await rejection(lm.countTokens(`${lm.marker}`, [image, image]))).code).toBe("E_MEDIA_MISMATCH");
      });

      it("bad options", async () => {
        const e = await rejection(lm.generate({ prompt: "x", temperature: -1 }));
        expect(e.code).toBe("E_INVALID_ARGUMENT");
        expect(e.message).toBe("Expected a number between 0 and 2 for temperature but received -1 of type number");
        // One range everywhere (the server and the chat page take 0 to 2 too).
        const hot = await rejection(lm.generate({ prompt: "x", temperature: 3 }));
        expect([hot.code, hot.param]).toEqual(["E_INVALID_ARGUMENT", "temperature"]);
        expect((await lm.generate({ prompt: "x", temperature: 2, maxTokens: 2 })).usage.completionTokens).toBeGreaterThan(0);
        expect((await rejection(lm.generate({ prompt: "x", maxTokens: 1.5 }))).message).toMatch(/for maxTokens/);
        expect((await rejection(lm.generate({ prompt: "x", stop: [""] }))).message).toMatch(/for stop/);
        expect((await rejection(lm.generate({ prompt: "x", tempreature: 0 } as never))).message).toMatch(/Unknown option tempreature/);
        expect((await rejection(lm.chat({ messages: [{ role: "robot", content: "x" }] } as never))).message).toMatch(/messages\[0\]\.role/);
        expect(
          (await rejection(lm.chat({ messages: [{ role: "user", content: [{ type: "sound", sound: "x" }] }] } as never))).message,
        ).toMatch(/messages\[0\]\.content\[0\]\.type/);
        // An audio part is a known type, but this projector has no audio encoder.
        expect(await rejection(lm.chat({ messages: [{ role: "user", content: [{ type: "audio", audio: "x" }] }] }))).toMatchObject({
          code: "E_INVALID_ARGUMENT",
          param: "messages[0].content[0].audio",
        });
      });

      it("still generates the same text after all of that", async () => {
        const a = await lm.generate({ prompt: "Describe this image.", images: [image], ...greedy, maxTokens: 8 });
        expect(a.usage.completionTokens).toBe(8);
      });
    });
  });

  describe("options take effect", () => {
    let lm: MultimodalLM;
    beforeAll(async () => {
      lm = await load({ model: qwen.model, mmproj: qwen.mmproj });
    });
    afterAll(() => lm?.dispose());

    it("raw: true tokenizes the prompt as given", async () => {
      const templated = lm.formatChat([{ role: "user", content: `${lm.marker}Describe this image.` }]);
      const viaTemplate = await lm.generate({ prompt: "Describe this image.", images: [image], ...greedy, maxTokens: 12 });
      const raw = await lm.generate({ prompt: templated, images: [image], raw: true, ...greedy, maxTokens: 12 });
      expect(raw.text).toBe(viaTemplate.text);
      const plain = await lm.generate({ prompt: "Describe this image.", images: [image], raw: true, ...greedy, maxTokens: 12 });
      expect(plain.usage.promptTokens).toBeLessThan(raw.usage.promptTokens);
    });

    it("sampling options change the output; the same seed repeats it", async () => {
      const base = { prompt: "Tell me", maxTokens: 24 };
      const greedyText = (await lm.generate({ ...base, ...greedy })).text;
      expect((await lm.generate({ ...base, temperature: 1, topK: 1 })).text).toBe(greedyText);
      const a = await lm.generate({ ...base, temperature: 1.5, topK: 0, topP: 1, minP: 0, seed: 7 });
      expect((await lm.generate({ ...base, temperature: 1.5, topK: 0, topP: 1, minP: 0, seed: 7 })).text).toBe(a.text);
      expect(a.text).not.toBe(greedyText);
      expect((await lm.generate({ ...base, temperature: 1.5, topK: 0, topP: 1, minP: 0, seed: 8 })).text).not.toBe(a.text);
      for (const penalty of [{ repeatPenalty: 1.5 }, { presencePenalty: 2 }, { frequencyPenalty: 2 }]) {
        expect((await lm.generate({ ...base, ...greedy, ...penalty, maxTokens: 64 })).text, JSON.stringify(penalty)).not.toBe(
          (await lm.generate({ ...base, ...greedy, maxTokens: 64 })).text,
        );
      }
    });

    it("image pixel budgets at load and per call change the image's token count", async () => {
      const big = { data: testPattern(448, 448, 2), width: 448, height: 448 };
      expect((await lm.countTokens("x", [big])).mediaTokens).toBe(256);
      expect((await lm.countTokens("x", [big], { image: { maxPixels: 112 * 112 } })).mediaTokens).toBe(16);
      await using small = await load({ model: qwen.model, mmproj: qwen.mmproj, image: { maxPixels: 224 * 224 } });
      expect((await small.countTokens("x", [big])).mediaTokens).toBe(64);
      const r = await small.generate({ prompt: "x", images: [big], maxTokens: 1 });
      expect(r.usage.promptTokens).toBe((await small.countTokens("x", [big])).tokens);
      expect((await rejection(lm.countTokens("x", [big], { image: { maxPixels: -1 } }))).message).toMatch(/image\.maxPixels/);
      expect(() => new MultimodalLM({ model: qwen.model, mmproj: qwen.mmproj, image: { limitInputPixels: 0 } })).toThrow(/image\.limitInputPixels/);
    });

    it("imageMaxTokens caps the tokens per image", async () => {
      const big = { data: testPattern(448, 448, 2), width: 448, height: 448 };
      await using capped = await load({ model: qwen.model, mmproj: qwen.mmproj, imageMaxTokens: 64 });
      const count = await capped.countTokens("x", [big]);
      expect(count.mediaTokens).toBeLessThanOrEqual(64);
      expect(count.mediaTokens).toBeGreaterThan(0);
    });

    it("chatTemplate replaces the model's template", async () => {
      await using custom = await load({
        model: qwen.model,
        mmproj: qwen.mmproj,
        chatTemplate: "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}",
      });
      expect(custom.formatChat([{ role: "user", content: "hi" }])).toBe("[user] hi\n[assistant] ");
      expect((await custom.generate({ prompt: "hi", ...greedy, maxTokens: 4 })).usage.completionTokens).toBe(4);
    });

    it("threads, batchSize and warmup do not change greedy output", async () => {
      const expected = (await lm.generate({ prompt: "Describe this image.", images: [image], ...greedy, maxTokens: 16 })).text;
      await using other = await load({ model: qwen.model, mmproj: qwen.mmproj, threads: 1, batchSize: 32, warmup: false, flashAttention: false });
      expect((await other.generate({ prompt: "Describe this image.", images: [image], ...greedy, maxTokens: 16 })).text).toBe(expected);
    });
  });

  describe("MultimodalLM streaming with multibyte characters", () => {
    it("never splits a character between pieces, and the pieces add up to the text", async () => {
      const files = await ensureTestModel("qwen2vl-tiny", { head: "multibyte" });
      await using lm = await load({ model: files.model, mmproj: files.mmproj });
      const request = { prompt: "Say something", ...greedy, maxTokens: 64 };
      const full = await lm.generate(request);
      const stream = lm.generateStream(request);
      const pieces: string[] = [];
      for await (const piece of stream) pieces.push(piece);
      expect(pieces.join("")).toBe(full.text);
      // Each token is one byte, so every character below came out of two tokens.
      expect(full.text).toMatch(/[éûΩλ]/);
      expect(full.usage.completionTokens).toBe(64);
      expect(pieces.every((p) => !p.endsWith("\uFFFD") || p.length > 0)).toBe(true);
      expect(pieces.length).toBeLessThan(64);
    });
  });

  describe("loading", () => {
    it("does not block the event loop, reports progress, and logs to a logger when asked", async () => {
      const progress: number[] = [];
      const lines: string[] = [];
      const { ticks, maxGapMs, value: lm } = await loopTicksDuring(
        load({
          model: qwen.model,
          mmproj: qwen.mmproj,
          onProgress: (p) => progress.push(p),
          logLevel: "info",
          logger: (level, message) => lines.push(`${level}: ${message}`),
        }),
      );
      expect(ticks).toBeGreaterThan(5);
      expect(maxGapMs).toBeLessThan(100);
      expect(progress.at(-1)).toBe(1);
      expect(progress).toEqual([...progress].sort((a, b) => a - b));
      expect(lines.some((l) => l.startsWith("info: ") && l.includes("qwen2vl"))).toBe(true);
      await lm.dispose();
    });

    it("is silent by default", async () => {
      const lines: string[] = [];
      await using _lm = await load({ model: smol.model, mmproj: smol.mmproj, logger: (_l, m) => lines.push(m) });
      expect(lines).toEqual([]);
    });

    it("rejects a missing model, a directory, a non-GGUF file and swapped paths with clear errors", async () => {
      const e1 = await rejection(load({ model: path.join(tmp, "nope.gguf"), mmproj: qwen.mmproj }));
      expect(e1.code).toBe("E_FILE_NOT_FOUND");
      expect(e1.message).toMatch(/model file .*nope\.gguf does not exist/);
      expect((await rejection(load({ model: tmp, mmproj: qwen.mmproj }))).message).toMatch(/is a directory/);
      const e3 = await rejection(load({ model: image, mmproj: qwen.mmproj }));
      expect(e3.code).toBe("E_MODEL_LOAD");
      expect(e3.message).toMatch(/not a GGUF file/);
      const e4 = await rejection(load({ model: qwen.mmproj, mmproj: qwen.model }));
      expect(e4.code).toBe("E_MODEL_LOAD");
      expect(e4.message).toMatch(/Did you swap model and mmproj\?/);
      const e5 = await rejection(load({ model: qwen.model, mmproj: qwen.model }));
      expect(e5.message).toMatch(/mmproj .* is a text model \(general\.architecture = qwen2vl\)/);
    });

    it("rejects an mmproj made for another text model", async () => {
      const bench = await ensureTestModel("smolvlm-256m-bench");
      const e = await rejection(load({ model: qwen.model, mmproj: bench.mmproj }));
      expect(e.code).toBe("E_MODEL_LOAD");
      expect(e.message).toMatch(/mismatch between text model \(n_embd = 256\) and mmproj \(n_embd = 576\)/);
    });

    it("aborts loading through its signal, and a later load works", async () => {
      expect((await rejection(load({ model: qwen.model, mmproj: qwen.mmproj, signal: AbortSignal.abort() }))).code).toBe("E_ABORTED");
      // The SmolVLM-256M shape takes long enough to load (~0.8 s here) to abort in the middle.
      const bench = await ensureTestModel("smolvlm-256m-bench");
      const controller = new AbortController();
      const seen: number[] = [];
      const onProgress = (p: number) => {
        seen.push(p);
        if (seen.length === 1) controller.abort();
      };
      const error = await rejection(load({ model: bench.model, mmproj: bench.mmproj, signal: controller.signal, onProgress }));
      expect(error.code).toBe("E_ABORTED");
      expect(seen.at(-1)).toBeLessThan(1);
      await using lm = await load({ model: qwen.model, mmproj: qwen.mmproj });
      expect(lm.isLoaded).toBe(true);
    });

    it("rejects a prompt longer than the context", async () => {
      // llama.cpp rounds the context up to a multiple of 256.
      await using lm = await load({ model: qwen.model, mmproj: qwen.mmproj, contextSize: 256 });
      expect(lm.info.contextSize).toBe(256);
      const e = await rejection(lm.generate({ prompt: "word ".repeat(300), maxTokens: 1 }));
      expect(e.code).toBe("E_CONTEXT_OVERFLOW");
      expect(e.message).toMatch(/needs \d+ tokens but the context holds 256/);
      // An image counts too: 1288x1288 is over 2000 tokens.
      const big = { data: testPattern(1288, 1288, 1), width: 1288, height: 1288 };
      expect((await rejection(lm.generate({ prompt: "x", images: [big], maxTokens: 1 }))).code).toBe("E_CONTEXT_OVERFLOW");
      // Generation that fills the context ends with stopReason "context".
      const r = await lm.generate({ prompt: "Hi", ...greedy, ignoreEos: true });
      expect(r.stopReason).toBe("context");
      expect(r.usage.totalTokens).toBe(256);
    });

    it("validates load options before touching native code", () => {
      expect(() => new MultimodalLM({ model: qwen.model } as never)).toThrow(/Expected a path to a GGUF file for mmproj but received undefined/);
      expect(() => new MultimodalLM({ model: qwen.model, mmproj: qwen.mmproj, contextSize: -1 })).toThrow(
        "Expected an integer between 16 and 16777216 for contextSize but received -1 of type number",
      );
      expect(() => new MultimodalLM({ model: qwen.model, mmproj: qwen.mmproj, flashAttention: "yes" as never })).toThrow(/flashAttention/);
      expect(() => new MultimodalLM({ model: qwen.model, mmproj: qwen.mmproj, logLevel: "loud" as never })).toThrow(/logLevel/);
    });
  });

  describe("lifecycle", () => {
    it("throws typed errors before load, after dispose, and for a second load", async () => {
      const lm = new MultimodalLM({ model: smol.model, mmproj: smol.mmproj });
      expect(() => lm.tokenize("x")).toThrow(expect.objectContaining({ code: "E_NOT_LOADED" }));
      expect((await rejection(lm.generate({ prompt: "x" }))).code).toBe("E_NOT_LOADED");
      const loading = lm.load();
      expect((await rejection(lm.load())).code).toBe("E_BUSY");
      await loading;
      expect((await rejection(lm.load())).code).toBe("E_BUSY");
      await lm.dispose();
      await lm.dispose();
      expect(lm.isLoaded).toBe(false);
      expect((await rejection(lm.generate({ prompt: "x" }))).code).toBe("E_DISPOSED");
      expect((await rejection(lm.describeImage(image))).code).toBe("E_DISPOSED");
      expect(() => lm.tokenize("x")).toThrow(expect.objectContaining({ code: "E_DISPOSED" }));
    });

    it("dispose aborts running and queued requests", async () => {
      const lm = await load({ model: smol.model, mmproj: smol.mmproj, parallel: 1 });
      const running = rejection(lm.generate({ prompt: "Go on", maxTokens: 1_000_000, ignoreEos: true }));
      const queued = rejection(lm.generate({ prompt: "Next", maxTokens: 4 }));
      await new Promise((r) => setTimeout(r, 50));
      await lm.dispose();
      expect((await running).code).toBe("E_DISPOSED");
      expect((await queued).code).toBe("E_DISPOSED");
    });

    it("an exiting process with a loaded model and a running request does not crash", async () => {
      const { spawnSync } = await import("node:child_process");
      const script = `
        const { MultimodalLM } = await import(${JSON.stringify(path.resolve("lib/index.js"))});
        const lm = await MultimodalLM.load({ isolation: ${JSON.stringify(isolation)}, model: ${JSON.stringify(smol.model)}, mmproj: ${JSON.stringify(smol.mmproj)} });
        lm.generate({ prompt: "Go on", maxTokens: 1000000, ignoreEos: true }).catch(() => {});
        setTimeout(() => { console.log("exiting"); process.exit(0); }, 100);
      `;
      // lib/ is what npm test's pretest compiles.
      const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000 });
      expect(r.stderr).not.toMatch(/Segmentation|Aborted|terminate/);
      expect(r.stdout).toContain("exiting");
      expect(r.status).toBe(0);
    });
  });
});
