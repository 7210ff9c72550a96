// The image embedding cache and KV prefix reuse: what each request reports, the cache's byte
// bound and LRU order, and that greedy output is the same with the caches on and off.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM, type ChatMessage, type GenerateResult } from "../src/index.js";
import { loadVideo } from "../src/media/video.js";
import { ensureTestModel, testPattern, type TestModelFiles } from "../src/test-models/index.js";
import { ffmpegAvailable } from "./helpers/clips.js";
import { ISOLATIONS, loader } from "./helpers/isolation.js";
import { rejection } from "./helpers/rejection.js";

const greedy = { temperature: 0, seed: 42, maxTokens: 12 } as const;
const raw = (seed: number, width = 96, height = 72) => ({ data: testPattern(width, height, seed), width, height });

let tmp: string;
let staticThenWhite: string; // 64x48, 4 fps, 4 s: black for 2 s, then white
beforeAll(() => {
  if (!ffmpegAvailable()) throw new Error("The cache tests need ffmpeg and ffprobe on PATH (Debian/Ubuntu: apt-get install ffmpeg).");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-caches-"));
  staticThenWhite = path.join(tmp, "black-white.mp4");
  execFileSync("ffmpeg", [
    "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=64x48:r=4:d=4",
    "-vf", "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='gte(t,2)'",
    "-c:v", "libx264", "-pix_fmt", "yuv420p", staticThenWhite,
  ]);
}, 60_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe.each(ISOLATIONS)("isolation: %s", (isolation) => {
  const load = loader(isolation);

  describe("cache options", () => {
    it("rejects a bad imageCacheBytes or reusePrefix before loading anything", async () => {
      for (const imageCacheBytes of [-1, 1.5, "1MB", Number.MAX_SAFE_INTEGER + 2]) {
        const error = await rejection(load({ model: "m.gguf", mmproj: "p.gguf", imageCacheBytes } as never));
        expect(error.code).toBe("E_INVALID_ARGUMENT");
        expect(error.message).toContain("imageCacheBytes");
      }
      const error = await rejection(load({ model: "m.gguf", mmproj: "p.gguf", reusePrefix: "yes" } as never));
      expect(error.code).toBe("E_INVALID_ARGUMENT");
      expect(error.message).toContain("reusePrefix");
    });
  });

  describe.each(["qwen2vl-tiny", "smolvlm-tiny"] as const)("caches on %s", (recipe) => {
    let files: TestModelFiles;
    let on: MultimodalLM; // the defaults: both caches
    let off: MultimodalLM; // neither
    let imageOnly: MultimodalLM; // the image cache without prefix reuse
    let chunksPerImage: number;
    beforeAll(async () => {
      files = await ensureTestModel(recipe);
      const base = { model: files.model, mmproj: files.mmproj };
      [on, off, imageOnly] = await Promise.all([
        load(base),
        load({ ...base, imageCacheBytes: 0, reusePrefix: false }),
        load({ ...base, reusePrefix: false }),
      ]);
      chunksPerImage = (await off.countTokens("", [raw(1)], { raw: true })).mediaChunks;
    });
    afterAll(async () => {
      await Promise.all([on?.dispose(), off?.dispose(), imageOnly?.dispose()]);
    });

    it("has the default bound and starts empty", () => {
      expect(on.stats.imageCache).toEqual({ hits: 0, misses: 0, evictions: 0, entries: 0, bytes: 0, capacityBytes: 128 * 1024 * 1024 });
      expect(off.stats.imageCache.capacityBytes).toBe(0);
    });

    it("a second request with the same image takes it from the image cache and encodes nothing", async () => {
      await imageOnly.clearCaches();
      const first = await imageOnly.generate({ prompt: "What is this?", images: [raw(2)], ...greedy });
      expect(first.cache).toMatchObject({ imageCacheHits: 0, imageCacheMisses: chunksPerImage, encodedChunks: chunksPerImage, reusedPositions: 0 });
      expect(first.timings.encodeMs).toBeGreaterThan(0);

      const second = await imageOnly.generate({ prompt: "What colour is it?", images: [raw(2)], ...greedy });
      expect(second.cache).toMatchObject({ imageCacheHits: chunksPerImage, imageCacheMisses: 0, encodedChunks: 0, reusedPositions: 0 });
      expect(second.timings.encodeMs).toBe(0);
      expect(second.text).toBe((await off.generate({ prompt: "What colour is it?", images: [raw(2)], ...greedy })).text);

      const stats = imageOnly.stats.imageCache;
      expect(stats).toMatchObject({ hits: chunksPerImage, entries: chunksPerImage });
      expect(stats.bytes).toBe(chunksPerImage * (first.usage.mediaTokens / chunksPerImage) * on.info.embeddingSize * 4);
    });

    it("the same picture from another source is the same cache entry; another picture is not", async () => {
      await imageOnly.clearCaches();
      const png = path.join(tmp, `${recipe}-3.png`);
      const { encodePng } = await import("../src/test-models/index.js");
      fs.writeFileSync(png, encodePng(96, 72, testPattern(96, 72, 3)));
      await imageOnly.generate({ prompt: "Hi", images: [png], ...greedy });
      const again = await imageOnly.generate({ prompt: "Hi", images: [raw(3)], ...greedy });
      expect(again.cache.imageCacheHits).toBe(chunksPerImage);
      const other = await imageOnly.generate({ prompt: "Hi", images: [raw(4)], ...greedy });
      expect(other.cache).toMatchObject({ imageCacheHits: 0, encodedChunks: chunksPerImage });
    });

    it("embedImage and generate share the cache", async () => {
      await on.clearCaches();
      const a = await on.embedImage(raw(5));
      expect(a.cached).toBe(false);
      const b = await on.embedImage(raw(5));
      expect(b).toMatchObject({ cached: true, encodeMs: 0, shape: a.shape });
      expect(b.data).toEqual(a.data);
      const r = await on.generate({ prompt: "And this?", images: [raw(5)], ...greedy });
      expect(r.cache).toMatchObject({ imageCacheHits: chunksPerImage, encodedChunks: 0 });
      expect(r.text).toBe((await off.generate({ prompt: "And this?", images: [raw(5)], ...greedy })).text);
    });

    it("the second chat turn after an image reuses the first turn's positions and does not touch the image", async () => {
      await on.clearCaches();
      const turn1: ChatMessage[] = [{ role: "user", content: [{ type: "image", image: raw(6) }, { type: "text", text: "Describe." }] }];
      const first = await on.chat({ messages: turn1, ...greedy });
      expect(first.cache).toMatchObject({ reusedPositions: 0, encodedChunks: chunksPerImage });
      const firstPositions = first.cache.evaluatedPositions;
      const imageOnlyCount = await off.countTokens("", [raw(6)], { raw: true });
      expect(firstPositions).toBeGreaterThan(imageOnlyCount.positions);

      const turn2: ChatMessage[] = [...turn1, { role: "assistant", content: first.text }, { role: "user", content: "Tell me more." }];
      const second = await on.chat({ messages: turn2, ...greedy });
      // The whole first prompt, image included, is reused; only the reply and the new question are evaluated.
      expect(second.cache.reusedPositions).toBeGreaterThanOrEqual(firstPositions);
      expect(second.cache).toMatchObject({ imageCacheHits: 0, imageCacheMisses: 0, encodedChunks: 0 });
      expect(second.cache.reusedPositions + second.cache.evaluatedPositions).toBe(
        (await off.countTokens(on.formatChat(turn2), [raw(6)], { raw: true })).positions,
      );
      expect(second.text).toBe((await off.chat({ messages: turn2, ...greedy })).text);
    });

    it("reuses a text prefix up to the first different token, and all but the last position of a repeated prompt", async () => {
      await on.clearCaches();
      const a = await on.generate({ prompt: "The quick brown fox jumps over the lazy dog", raw: true, ...greedy });
      const b = await on.generate({ prompt: "The quick brown fox sleeps", raw: true, ...greedy });
      const common = (await off.countTokens("The quick brown fox", [], { raw: true })).positions;
      expect(b.cache.reusedPositions).toBe(common);
      expect(b.text).toBe((await off.generate({ prompt: "The quick brown fox sleeps", raw: true, ...greedy })).text);
      const c = await on.generate({ prompt: "The quick brown fox sleeps", raw: true, ...greedy });
      expect(c.cache.evaluatedPositions).toBe(1);
      expect(c.text).toBe(b.text);
      expect(a.cache.reusedPositions).toBe(0);
    });

    it("greedy output is the same with the caches on and off over a mixed sequence of requests", async () => {
      await on.clearCaches();
      await imageOnly.clearCaches();
      const chat1: ChatMessage[] = [{ role: "user", content: [{ type: "image", image: raw(7) }, { type: "text", text: "What is it?" }] }];
      const steps: Array<(lm: MultimodalLM, previous: GenerateResult[]) => Promise<GenerateResult>> = [
        (lm) => lm.generate({ prompt: "Describe this image.", images: [raw(7)], ...greedy }),
        (lm) => lm.generate({ prompt: "Which colours?", images: [raw(7)], ...greedy }),
        (lm) => lm.generate({ prompt: "Compare them.", images: [raw(7), raw(8)], ...greedy }),
        (lm) => lm.generate({ prompt: "Compare them.", images: [raw(8), raw(7)], ...greedy }),
        (lm) => lm.generate({ prompt: "Just text now.", ...greedy }),
        (lm) => lm.chat({ messages: chat1, ...greedy }),
        (lm, prev) => lm.chat({ messages: [...chat1, { role: "assistant", content: prev[5]!.text }, { role: "user", content: "More." }], ...greedy }),
        (lm) => lm.generate({ prompt: "The same image twice.", images: [raw(9), raw(9)], ...greedy }),
        (lm) => lm.generate({ prompt: "Sampled.", images: [raw(7)], temperature: 1, seed: 7, maxTokens: 12 }),
        (lm) => lm.generate({ prompt: "Describe this video.", videos: [staticThenWhite], video: { fps: 1 }, ...greedy }),
        (lm) => lm.generate({ prompt: "Describe this video.", videos: [staticThenWhite], video: { numFrames: 2 }, ...greedy }),
      ];
      const run = async (lm: MultimodalLM) => {
        const out: GenerateResult[] = [];
        for (const step of steps) out.push(await step(lm, out));
        return out;
      };
      const expected = (await run(off)).map((r) => r.text);
      const reusedBefore = on.stats.prefix.reusedPositions;
      const withBoth = await run(on);
      const withImageCache = await run(imageOnly);
      expect(withBoth.map((r) => r.text)).toEqual(expected);
      expect(withImageCache.map((r) => r.text)).toEqual(expected);
      // The caches did work: the same image again was never encoded again.
      expect(withBoth[1]!.cache.encodedChunks).toBe(0);
      expect(withBoth[6]!.cache.reusedPositions).toBeGreaterThan(0);
      expect(withImageCache[3]!.cache).toMatchObject({ imageCacheHits: 2 * chunksPerImage, encodedChunks: 0 });
      // The same image twice in one prompt: both looked up before anything was encoded.
      expect(withImageCache[7]!.cache).toMatchObject({ imageCacheMisses: 2 * chunksPerImage });
      expect(on.stats.prefix.reusedPositions - reusedBefore).toBe(withBoth.reduce((sum, r) => sum + r.cache.reusedPositions, 0));
    });

    it("a video's frames are cached by the pixels of every frame in their chunk", async () => {
      // Both samplings start with the same black frame; the frame after it differs (black, then white).
      const a = await loadVideo(staticThenWhite, { fps: 1 });
      const b = await loadVideo(staticThenWhite, { numFrames: 2 });
      expect(b.frames[0]!.id).toBe(a.frames[0]!.id);
      expect(b.frames[1]!.id).not.toBe(a.frames[1]!.id);

      await imageOnly.clearCaches();
      const first = await imageOnly.generate({ prompt: "Describe this video.", videos: [staticThenWhite], video: { fps: 1 }, ...greedy });
      const second = await imageOnly.generate({ prompt: "Describe this video.", videos: [staticThenWhite], video: { numFrames: 2 }, ...greedy });
      if (recipe === "qwen2vl-tiny") {
        // Frames go in pairs: (black, black), (white, white); then (black, white) is new.
        expect(first.cache).toMatchObject({ imageCacheHits: 0, encodedChunks: 2 });
        expect(second.cache).toMatchObject({ imageCacheHits: 0, imageCacheMisses: 1, encodedChunks: 1 });
      } else {
        // One chunk set per frame: black, black, white, white; then black and white are known.
        expect(second.cache).toMatchObject({ imageCacheMisses: 0, encodedChunks: 0 });
      }
      const again = await imageOnly.generate({ prompt: "Describe this video.", videos: [staticThenWhite], video: { fps: 1 }, ...greedy });
      expect(again.cache).toMatchObject({ imageCacheMisses: 0, encodedChunks: 0 });
    });

    it("keeps within its byte bound and evicts the least recently used entry", async () => {
      // Entries are chunks (SmolVLM tiles an image); the bound fits two images and half a chunk.
      const entryBytes = (await off.countTokens("", [raw(10)], { raw: true })).mediaTokens * on.info.embeddingSize * 4;
      await using lm = await load({
        model: files.model,
        mmproj: files.mmproj,
        reusePrefix: false,
        imageCacheBytes: 2 * entryBytes + Math.floor(entryBytes / chunksPerImage / 2),
      });
      const ask = (seed: number) => lm.generate({ prompt: "?", images: [raw(seed)], ...greedy, maxTokens: 1 });
      const hit = (r: GenerateResult) => r.cache.imageCacheHits === chunksPerImage;
      expect(hit(await ask(10))).toBe(false);
      expect(hit(await ask(11))).toBe(false);
      expect(hit(await ask(10))).toBe(true); // 10 is now the most recent
      expect(hit(await ask(12))).toBe(false); // evicts 11, the least recently used
      let stats = lm.stats.imageCache;
      expect(stats.bytes).toBeLessThanOrEqual(stats.capacityBytes);
      expect(stats.bytes).toBe(2 * entryBytes);
      expect(stats.evictions).toBe(chunksPerImage);
      expect(hit(await ask(10))).toBe(true);
      expect(hit(await ask(12))).toBe(true);
      expect(hit(await ask(11))).toBe(false); // evicts 10
      expect(hit(await ask(12))).toBe(true);
      stats = lm.stats.imageCache;
      expect(stats).toMatchObject({ hits: 4 * chunksPerImage, misses: 4 * chunksPerImage, entries: 2 * chunksPerImage, evictions: 2 * chunksPerImage });
    });

    it("keeps nothing larger than its bound", async () => {
      await using lm = await load({ model: files.model, mmproj: files.mmproj, reusePrefix: false, imageCacheBytes: 16 });
      await lm.generate({ prompt: "?", images: [raw(13)], ...greedy, maxTokens: 1 });
      const again = await lm.generate({ prompt: "?", images: [raw(13)], ...greedy, maxTokens: 1 });
      expect(again.cache).toMatchObject({ imageCacheHits: 0, encodedChunks: chunksPerImage });
      expect(lm.stats.imageCache).toMatchObject({ entries: 0, bytes: 0, capacityBytes: 16 });
    });

    it("an aborted request leaves the KV cache usable: the next request gives the uncached output", async () => {
      await on.clearCaches();
      const prompt = "Describe this image in detail.";
      await on.generate({ prompt, images: [raw(14)], ...greedy });
      const controller = new AbortController();
      const stream = on.generateStream({ prompt: "Go on and on.", images: [raw(14)], ...greedy, maxTokens: 100_000, ignoreEos: true, signal: controller.signal });
      let pieces = 0;
      const error = await rejection(
        (async () => {
          for await (const _ of stream) if (++pieces === 5) controller.abort();
        })(),
      );
      expect(error.code).toBe("E_ABORTED");
      const after = await on.generate({ prompt, images: [raw(14)], ...greedy });
      expect(after.cache.reusedPositions).toBeGreaterThan(0);
      expect(after.text).toBe((await off.generate({ prompt, images: [raw(14)], ...greedy })).text);
    });
  });
});
