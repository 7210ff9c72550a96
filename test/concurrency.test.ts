// Continuous batching: concurrent requests on one MultimodalLM decode together, and each gets
// exactly the output it gets alone. No timing targets here (those are in npm run bench).
//
// Flash attention is off in the exactness checks: the pinned CPU flash-attention kernel takes
// another path for a micro-batch of several sequences than for one, so with it on a batched
// greedy output can differ from the solo one in the last bits of the logits. llama-server does
// the same on the same inputs (scripts/batch-invariance.mjs; docs/api.md, "Concurrency").
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM, type GenerateRequest, type GenerateResult } from "../src/index.js";
import { runningChildren } from "../src/media/ffmpeg.js";
import { liveTempDirs } from "../src/media/video.js";
import { encodePng, ensureTestModel, testPattern, type TestModelFiles } from "../src/test-models/index.js";
import { ffmpegAvailable, indexClip } from "./helpers/clips.js";
import { ISOLATIONS, loader } from "./helpers/isolation.js";
import { rejection } from "./helpers/rejection.js";

const greedy = { temperature: 0, maxTokens: 12, seed: 42 } as const;
// Long enough that all 8 requests are in the engine before the first one ends: one that arrived
// after another had finished could take that one's slot (for an image they share).
const together = { ...greedy, maxTokens: 64 } as const;
const exact = { flashAttention: false } as const;
const hasFfmpeg = ffmpegAvailable();

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-concurrency-"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function image(name: string, width: number, height: number, seed: number): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, encodePng(width, height, testPattern(width, height, seed)));
  return file;
}

/**
 * Mixed requests: text only, one image, two images and (with ffmpeg) a video. No two start with
 * the same image: a request whose media decoding made it arrive after another had finished would
 * take that one's slot for the shared image (pickSlot), and the repeat test would then find that
 * prompt in no slot. Request 6 still shares an image with requests 2 and 5, later in its prompt.
 */
function mixedRequests(recipe: string): GenerateRequest[] {
  const a = image(`${recipe}-a.png`, 72, 64, 1);
  const b = image(`${recipe}-b.png`, 64, 80, 2);
  const c = image(`${recipe}-c.png`, 96, 64, 3);
  const d = image(`${recipe}-d.png`, 80, 72, 4);
  const requests: GenerateRequest[] = [
    { prompt: "Hello there" },
    { prompt: "Describe this image.", images: [a] },
    { prompt: "Compare these two.", images: [b, c] },
    { prompt: "Tell me a story about a cat and a dog" },
    { prompt: "What is in it?", images: [c] },
    { prompt: "Which one is brighter?", images: [d, a] },
    { prompt: "Short" },
  ];
  if (hasFfmpeg) {
    const clip = indexClip(path.join(tmp, `${recipe}-clip.mp4`), { fps: 4, seconds: 1 });
    requests.push({ prompt: "What happens in this video?", videos: [clip], video: { numFrames: 4, timestamps: false } });
  } else {
    requests.push({ prompt: "One more", images: [image(`${recipe}-e.png`, 64, 64, 5)] });
  }
  return requests;
}

describe.each(ISOLATIONS)("isolation: %s", (isolation) => {
  const load = loader(isolation);

  describe.each(["qwen2vl-tiny", "smolvlm-tiny"] as const)("continuous batching: %s", (recipe) => {
    let files: TestModelFiles;
    let lm: MultimodalLM;
    let requests: GenerateRequest[];
    let solo: string[];
    let soloTogether: string[];

    beforeAll(async () => {
      files = await ensureTestModel(recipe);
      requests = mixedRequests(recipe);
      // Solo outputs: one slot, no caches, one request at a time.
      const alone = await load({ model: files.model, mmproj: files.mmproj, ...exact, parallel: 1, reusePrefix: false, imageCacheBytes: 0 });
      solo = [];
      for (const request of requests) solo.push((await alone.generate({ ...request, ...greedy })).text);
      soloTogether = [];
      for (const request of requests) soloTogether.push((await alone.generate({ ...request, ...together })).text);
      await alone.dispose();
      lm = await load({ model: files.model, mmproj: files.mmproj, ...exact, parallel: 8 });
    }, 600_000);
    afterAll(() => lm?.dispose());

    it("8 concurrent greedy requests each give their solo output", async () => {
      expect(lm.info.parallel).toBe(8);
      let busy = 0;
      const watch = setInterval(() => (busy = Math.max(busy, lm.stats.slots.busy)), 1);
      const results = await Promise.all(requests.map((request) => lm.generate({ ...request, ...together })));
      clearInterval(watch);
      expect(results.map((r) => r.text)).toEqual(soloTogether);
      expect(busy).toBeGreaterThan(1);
      expect(lm.stats.slots).toEqual({ total: 8, busy: 0 });
      expect(lm.stats.queued).toBe(0);
    });

    it("the same requests again, streamed, reuse their slots' prefixes and still match", async () => {
      const streams = requests.map((request) => lm.generateStream({ ...request, ...together }));
      const texts = await Promise.all(
        streams.map(async (stream) => {
          let text = "";
          for await (const piece of stream) text += piece;
          return text;
        }),
      );
      expect(texts).toEqual(soloTogether);
      const results = await Promise.all(streams.map((s) => s.result));
      // Every prompt was in its slot already: only its last token is evaluated again.
      for (const r of results) expect(r.cache.evaluatedPositions).toBe(1);
    });

    it("more requests than slots wait in order and are counted as queued", async () => {
      const two = await load({ model: files.model, mmproj: files.mmproj, ...exact, parallel: 2 });
      try {
        const prompts = ["One", "Two", "Three", "Four", "Five", "Six"];
        const alone: string[] = [];
        for (const prompt of prompts) alone.push((await two.generate({ prompt, ...greedy })).text);
        let queued = 0;
        let busy = 0;
        const sample = () => {
          queued = Math.max(queued, two.stats.queued);
          busy = Math.max(busy, two.stats.slots.busy);
        };
        // Sampled on a timer and at every piece: with isolation "process" the stats come with the
        // engine's messages, and on a loaded machine several arrive between two timer ticks.
        const watch = setInterval(sample, 1);
        const together = await Promise.all(
          prompts.map(async (prompt) => {
            const stream = two.generateStream({ prompt, ...greedy, maxTokens: 48 });
            for await (const _piece of stream) sample();
            return stream.result;
          }),
        );
        clearInterval(watch);
        expect(two.stats.slots).toEqual({ total: 2, busy: 0 });
        expect(busy).toBe(2);
        expect(queued).toBeGreaterThan(0);
        together.forEach((r, i) => expect(r.text.startsWith(alone[i]!)).toBe(true));
        expect(two.stats.queued).toBe(0);
      } finally {
        await two.dispose();
      }
    });

    it("aborting one of 8 running sequences settles it quickly; the other 7 give their solo output", async () => {
      const long = { prompt: "Go on forever", maxTokens: 100_000, ignoreEos: true, temperature: 0 };
      const controller = new AbortController();
      const victim = lm.generateStream({ ...long, signal: controller.signal });
      const others = requests.slice(0, 7).map((request) => lm.generate({ ...request, ...greedy, maxTokens: 40 }));
      // Wait until the victim is generating, then abort it.
      const iterator = victim[Symbol.asyncIterator]();
      await iterator.next();
      const aborted = performance.now();
      controller.abort();
      const error = await rejection(victim.result);
      const settledMs = performance.now() - aborted;
      expect(error.code).toBe("E_ABORTED");
      expect(settledMs).toBeLessThan(200);
      const texts = (await Promise.all(others)).map((r) => r.text);
      // Greedy: 40 tokens begin with the 12 of the solo run.
      texts.forEach((text, i) => expect(text.startsWith(solo[i]!)).toBe(true));
    });

    it("countTokens does not wait behind a running generation", async () => {
      const one = await load({ model: files.model, mmproj: files.mmproj, parallel: 1 });
      try {
        const controller = new AbortController();
        let pieces = 0;
        const stream = one.generateStream({ prompt: "Go on", maxTokens: 1_000_000, ignoreEos: true, signal: controller.signal });
        const reader = (async () => {
          for await (const piece of stream) if (piece) pieces++;
        })().catch(() => {});
        while (pieces === 0) await new Promise((r) => setTimeout(r, 5));
        const counted = await one.countTokens("How many tokens?", [image(`${recipe}-count.png`, 64, 64, 9)]);
        expect(counted.mediaChunks).toBeGreaterThan(0);
        expect(one.stats.slots.busy).toBe(1);
        controller.abort();
        await reader;
      } finally {
        await one.dispose();
      }
    });
  });

  describe("two interleaved conversations with images", () => {
    // One after another, the second conversation finds the first one's slot sharing the chat
    // template's preamble with it (less than half its prompt) and an empty slot: it must take the
    // empty one, or the first conversation's cache is lost.
    it.each(["together", "one after another"])("each second turn reuses its own slot's prefix, image included (first turns %s)", async (order) => {
      const files = await ensureTestModel("qwen2vl-tiny");
      const lm = await load({ model: files.model, mmproj: files.mmproj, ...exact, parallel: 2 });
      try {
        const pictures = [image("conv-a.png", 80, 64, 11), image("conv-b.png", 64, 96, 12)];
        const topic = "tell me what you see in this picture, what it reminds you of, and why";
        const firstTurn = (picture: string, i: number) =>
          lm.chat({ messages: [{ role: "user", content: [{ type: "image", image: picture }, { type: "text", text: `Conversation ${i}: ${topic}` }] }], ...greedy });
        const first: GenerateResult[] = [];
        if (order === "together") first.push(...(await Promise.all(pictures.map(firstTurn))));
        else for (const [i, picture] of pictures.entries()) first.push(await firstTurn(picture, i));
        const second = await Promise.all(
          pictures.map((picture, i) =>
            lm.chat({
              messages: [
                { role: "user", content: [{ type: "image", image: picture }, { type: "text", text: `Conversation ${i}: ${topic}` }] },
                { role: "assistant", content: first[i]!.text },
                { role: "user", content: "And then?" },
              ],
              ...greedy,
            }),
          ),
        );
        second.forEach((turn, i) => {
          // All of turn 1's prompt, its image included, came from the slot that ran turn 1.
          const firstPositions = first[i]!.cache.reusedPositions + first[i]!.cache.evaluatedPositions;
          expect(turn.cache.reusedPositions).toBeGreaterThanOrEqual(firstPositions);
          expect(turn.cache.imageCacheHits + turn.cache.imageCacheMisses).toBe(0);
        });
      } finally {
        await lm.dispose();
      }
    });

    it("a second turn whose last reply came back otherwise than generated still reuses its slot's prompt", async () => {
      const files = await ensureTestModel("qwen2vl-tiny");
      const lm = await load({ model: files.model, mmproj: files.mmproj, ...exact, parallel: 2 });
      try {
        const question = { role: "user" as const, content: "Tell me about the sea" };
        const first = await lm.chat({ messages: [question], ...greedy });
        // A client that keeps a shortened reply (or leaves out the reasoning) in its history.
        const second = await lm.chat({
          messages: [question, { role: "assistant", content: "The sea." }, { role: "user", content: "And then?" }],
          ...greedy,
        });
        expect(second.cache.reusedPositions).toBeGreaterThanOrEqual(first.cache.evaluatedPositions);
      } finally {
        await lm.dispose();
      }
    });
  });

  describe("a burst of mixed, poisoned and aborted requests", () => {
    it("64 requests: every promise settles, good outputs equal solo, nothing is left behind", async () => {
      const files = await ensureTestModel("qwen2vl-tiny");
      const requests = mixedRequests("burst");
      const alone = await load({ model: files.model, mmproj: files.mmproj, ...exact, parallel: 1, reusePrefix: false, imageCacheBytes: 0 });
      const solo: string[] = [];
      for (const request of requests) solo.push((await alone.generate({ ...request, ...greedy })).text);
      await alone.dispose();

      const lm = await load({ model: files.model, mmproj: files.mmproj, ...exact, parallel: 8 });
      try {
        const corrupt = path.join(tmp, "corrupt.png");
        fs.writeFileSync(corrupt, Buffer.from("not a png at all"));
        const poisons: Array<[GenerateRequest, string]> = [
          [{ prompt: "Bad image", images: [corrupt] }, "E_IMAGE_DECODE"],
          [{ prompt: "Bad base64", images: ["data:image/png;base64,@@@"] }, "E_INVALID_DATA_URL"],
          [{ prompt: "Missing", images: [path.join(tmp, "missing.png")] }, "E_FILE_NOT_FOUND"],
          [{ prompt: "x ".repeat(9000) }, "E_CONTEXT_OVERFLOW"],
        ];
        // Warm: the slots' first batches allocate what they keep.
        await Promise.all(requests.map((request) => lm.generate({ ...request, ...greedy })));
        const rssBefore = process.memoryUsage().rss;
        type Outcome = Promise<{ kind: "good"; index: number; text: string } | { kind: "poison"; code: string; want: string } | { kind: "aborted"; code: string }>;
        const outcomes: Outcome[] = [];
        let aborts = 0;
        for (let i = 0; i < 64; i++) {
          if (i % 10 === 9) {
            const [request, want] = poisons[i % poisons.length]!;
            outcomes.push(rejection(lm.generate({ ...request, ...greedy })).then((e) => ({ kind: "poison" as const, code: e.code, want })));
          } else if (i % 6 === 2 && aborts < 10) {
            aborts++;
            const controller = new AbortController();
            const stream = lm.generateStream({ prompt: `Abort me ${i}`, maxTokens: 100_000, ignoreEos: true, temperature: 0, signal: controller.signal });
            outcomes.push(
              (async () => {
                let pieces = 0;
                try {
                  for await (const piece of stream) if (piece && ++pieces === 3) controller.abort();
                } catch {
                  // the stream rejects with the abort
                }
                return { kind: "aborted" as const, code: (await rejection(stream.result)).code };
              })(),
            );
          } else {
            const index = i % requests.length;
            const request = { ...requests[index]!, ...greedy };
            outcomes.push(
              i % 2 === 0
                ? lm.generate(request).then((r) => ({ kind: "good" as const, index, text: r.text }))
                : (async () => {
                    let text = "";
                    for await (const piece of lm.generateStream(request)) text += piece;
                    return { kind: "good" as const, index, text };
                  })(),
            );
          }
        }
        const settled = await Promise.all(outcomes);
        expect(aborts).toBe(10);
        for (const outcome of settled) {
          if (outcome.kind === "good") expect(outcome.text).toBe(solo[outcome.index]);
          else if (outcome.kind === "poison") expect(outcome.code).toBe(outcome.want);
          else expect(outcome.code).toBe("E_ABORTED");
        }
        expect(settled.filter((o) => o.kind === "poison")).toHaveLength(6);
        expect(lm.stats.slots.busy).toBe(0);
        expect(lm.stats.queued).toBe(0);
        // Still serving, nothing left behind.
        expect((await lm.generate({ ...requests[1]!, ...greedy })).text).toBe(solo[1]);
        expect(runningChildren()).toBe(0);
        expect(liveTempDirs()).toBe(0);
        if (global.gc) global.gc();
        expect(process.memoryUsage().rss).toBeLessThan(rssBefore * 1.1);
      } finally {
        await lm.dispose();
      }
    }, 600_000);
  });
});
