// Video through MultimodalLM on the tiny models: temporal merging on Qwen2-VL, token parity
// with `llama-mtmd-cli --video` (built from the same tree, with video support), chat parts,
// timestamps and errors.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM } from "../src/index.js";
import { runningChildren } from "../src/media/ffmpeg.js";
import { liveTempDirs, loadVideo } from "../src/media/video.js";
import { ensureTestModel, runReference, type TestModelFiles } from "../src/test-models/index.js";
import { ffmpegAvailable, indexClip, llamaCppFrames } from "./helpers/clips.js";
import { ISOLATIONS, loader } from "./helpers/isolation.js";
import { rejection } from "./helpers/rejection.js";

const N = 16;
const greedy = { temperature: 0, seed: 42, maxTokens: N } as const;
const PROMPT = "Describe this video.";
let tmp: string;
let clip: string; // 84x84, 10 fps, 2 s; the centre of each 1/2 s never falls on a frame boundary

beforeAll(() => {
  if (!ffmpegAvailable()) throw new Error("The video tests need ffmpeg and ffprobe on PATH (Debian/Ubuntu: apt-get install ffmpeg).");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-video-model-"));
  clip = indexClip(path.join(tmp, "clip.mp4"), { fps: 10, seconds: 2, width: 84, height: 84 });
}, 60_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe.each(ISOLATIONS)("isolation: %s", (isolation) => {
  const load = loader(isolation);

  describe.each(["qwen2vl-tiny", "smolvlm-tiny"] as const)("video on %s", (recipe) => {
    let files: TestModelFiles;
    let lm: MultimodalLM;
    beforeAll(async () => {
      files = await ensureTestModel(recipe);
      lm = await load({ model: files.model, mmproj: files.mmproj });
    });
    afterAll(() => lm?.dispose());
    const merges = recipe === "qwen2vl-tiny";

    it("reports whether frames merge", () => {
      expect(lm.info.frameMerge).toBe(merges ? 2 : 1);
      expect(lm.info.capabilities.video).toBe(true);
    });

    it("peer check: the frames equal the ones llama.cpp's video helper extracts (ffmpeg -vf fps=2)", async () => {
      const ours = await loadVideo(clip, { fps: 2 }, { pairs: merges });
      const theirs = llamaCppFrames(clip, 2, 84, 84);
      expect(ours.frames).toHaveLength(4);
      expect(theirs).toHaveLength(4);
      ours.frames.forEach((frame, i) => expect(Buffer.from(frame.data).equals(theirs[i]!), `frame ${i}`).toBe(true));
    });

    it("peer check: greedy output is token-identical to llama-mtmd-cli --video at the same fps", async () => {
      const ref = runReference({
        model: files.model,
        mmproj: files.mmproj,
        images: [clip],
        prompt: PROMPT,
        nPredict: N,
        extraArgs: ["--video-fps", "2", "--video-timestamp-interval", "0"],
      }).text;
      const r = await lm.generate({ prompt: PROMPT, videos: [clip], video: { fps: 2, timestamps: false }, ...greedy });
      expect(r.text).toBe(ref);
      expect(r.usage.completionTokens).toBe(N);
      expect(r.videos).toEqual([{ info: expect.objectContaining({ duration: 2, fps: 10, width: 84, height: 84 }), frames: 4, timestamps: [0.25, 0.75, 1.25, 1.75], width: 84, height: 84 }]);
    });

    it("4 frames: merged temporal chunks on Qwen-VL (half those of the frames as images), the same as images otherwise", async () => {
      const video = await loadVideo(clip, { numFrames: 4 });
      const asImages = video.frames.map((f) => ({ data: f.data, width: f.width, height: f.height }));
      const v = await lm.generate({ prompt: PROMPT, videos: [clip], video: { numFrames: 4, timestamps: false, prefix: "" }, ...greedy });
      const i = await lm.generate({ prompt: PROMPT, images: asImages, ...greedy });
      // SmolVLM splits each image into tiles (several chunks); Qwen2-VL takes one chunk per image.
      expect(i.usage.mediaChunks).toBe(merges ? 4 : 20);
      expect(v.usage.mediaChunks).toBe(merges ? 2 : i.usage.mediaChunks);
      expect(v.usage.mediaTokens).toBe(merges ? i.usage.mediaTokens / 2 : i.usage.mediaTokens);
      const counted = await lm.countTokens(PROMPT, [], { videos: [clip], video: { numFrames: 4, timestamps: false, prefix: "" } });
      expect(counted).toMatchObject({ tokens: v.usage.promptTokens, mediaTokens: v.usage.mediaTokens, mediaChunks: v.usage.mediaChunks });
      const countedImages = await lm.countTokens(PROMPT, asImages);
      if (merges) expect(countedImages.positions - counted.positions).toBeGreaterThan(0);
    });

    it("describeVideo is deterministic and takes the video options flat", async () => {
      const a = await lm.describeVideo(clip, { fps: 2, maxFrames: 4, ...greedy });
      const b = await lm.describeVideo(fs.readFileSync(clip), { fps: 2, maxFrames: 4, ...greedy });
      expect(a).toBe(b);
      expect(a.length).toBeGreaterThan(N / 2);
      expect((await rejection(lm.describeVideo(clip, { fps: 2, colour: 1 } as never))).message).toMatch(/Unknown option colour/);
    });

    it("timestamps go before frames (before pairs on Qwen-VL) and do not break merging", async () => {
      const base = { videos: [clip], video: { fps: 2, prefix: "" } };
      const off = await lm.countTokens(PROMPT, [], { ...base, video: { ...base.video, timestamps: false } });
      const every = await lm.countTokens(PROMPT, [], { ...base, video: { ...base.video, timestamps: 0.5 } });
      expect(every.mediaChunks).toBe(off.mediaChunks);
      const stamp = lm.tokenize("[0m0.25s]", { parseSpecial: true }).length;
      // Qwen: one timestamp per pair (before frames 0 and 2); others: one per frame.
      expect(every.textTokens - off.textTokens).toBeGreaterThanOrEqual((merges ? 2 : 4) * (stamp - 2));
      expect(every.textTokens - off.textTokens).toBeLessThanOrEqual((merges ? 2 : 4) * (stamp + 2));
      const defaults = await lm.countTokens(PROMPT, [], { videos: [clip], video: { fps: 2 } });
      expect(defaults.mediaChunks).toBe(off.mediaChunks);
    });

    it("chat: video_url and video parts, mixed with images, in order", async () => {
      const png = (await loadVideo(clip, { numFrames: 1 })).frames[0]!;
      const image = { data: png.data, width: png.width, height: png.height };
      const viaGenerate = await lm.generate({ prompt: `${lm.marker}${lm.marker}What happens?`, images: [image], videos: [clip], video: { fps: 2 }, ...greedy });
      const viaChat = await lm.chat({
        messages: [
          {
            role: "user",
            content: [
              { type: "image", image },
              { type: "video_url", video_url: { url: pathToFileURL(clip).href } },
              { type: "text", text: "What happens?" },
            ],
          },
        ],
        video: { fps: 2 },
        ...greedy,
      });
      expect(viaChat.text).toBe(viaGenerate.text);
      expect(viaChat.usage.promptTokens).toBe(viaGenerate.usage.promptTokens);
      const plain = await lm.chat({ messages: [{ role: "user", content: [{ type: "video", video: clip }, { type: "text", text: "What happens?" }] }], video: { fps: 2 }, ...greedy });
      expect(plain.videos).toHaveLength(1);
      expect(plain.usage.mediaChunks).toBe(merges ? 2 : 20);
    });

    it("bad videos reject with typed errors, leave nothing behind, and the model keeps working", async () => {
      const text = path.join(tmp, "not-a-video.mp4");
      fs.writeFileSync(text, "hello\n".repeat(100));
      expect((await rejection(lm.describeVideo(text))).code).toBe("E_VIDEO_DECODE");
      expect((await rejection(lm.describeVideo(clip, { fps: 0 }))).code).toBe("E_INVALID_ARGUMENT");
      expect((await rejection(lm.describeVideo(clip, { maxFrames: 1e6 }))).code).toBe("E_INVALID_ARGUMENT");
      expect((await rejection(lm.describeVideo(clip, { ffmpeg: path.join(tmp, "none") }))).code).toBe("E_FFMPEG_NOT_FOUND");
      const mismatch = await rejection(lm.generate({ prompt: `${lm.marker} and ${lm.marker}`, videos: [clip] }));
      expect(mismatch.code).toBe("E_MEDIA_MISMATCH");
      expect(mismatch.message).toMatch(/2 media markers .* but 1 video was given/);
      const controller = new AbortController();
      const aborted = lm.describeVideo(fs.readFileSync(clip), { signal: controller.signal, onProgress: () => controller.abort() });
      expect((await rejection(aborted)).code).toBe("E_ABORTED");
      expect(runningChildren()).toBe(0);
      expect(liveTempDirs()).toBe(0);
      expect((await lm.describeVideo(clip, { fps: 2, ...greedy })).length).toBeGreaterThan(0);
    });
  });

  describe("model-level video defaults", () => {
    it("load({ video }) sets defaults that calls override, and is validated at load", async () => {
      const files = await ensureTestModel("qwen2vl-tiny");
      expect(() => new MultimodalLM({ model: files.model, mmproj: files.mmproj, video: { fps: -1 } })).toThrow(/video\.fps/);
      const lm = await load({ model: files.model, mmproj: files.mmproj, video: { numFrames: 2, timestamps: false } });
      try {
        // The call's options are checked together with the model's: start here, end there.
        const trimmed = await load({ model: files.model, mmproj: files.mmproj, video: { start: 1.5 } });
        try {
          expect((await rejection(trimmed.describeVideo(clip, { end: 1 }))).message).toMatch(/video\.end/);
          expect((await rejection(trimmed.describeVideo(clip, { video: 1 } as never))).message).toMatch(/Unknown option video/);
        } finally {
          await trimmed.dispose();
        }
        const r = await lm.generate({ prompt: PROMPT, videos: [clip], ...greedy });
        expect(r.videos[0]!.frames).toBe(2);
        const over = await lm.generate({ prompt: PROMPT, videos: [clip], video: { numFrames: 6 }, ...greedy });
        expect(over.videos[0]!.frames).toBe(6);
      } finally {
        await lm.dispose();
      }
    });
  });
});
