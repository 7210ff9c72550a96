// The omni family (qwen25omni-tiny: a Qwen2.5-VL vision tower and a Whisper audio encoder in one
// projector): the recipe's keys and tensors, then greedy parity with llama-mtmd-cli from the same
// tree for audio alone, an image plus an audio clip in one message, and a video with its own sound
// track (describeVideo's audio option), plus counting and the errors of asking for sound that is
// not there.
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { gguf } from "@huggingface/gguf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM } from "../src/index.js";
import { runningChildren } from "../src/media/ffmpeg.js";
import { liveTempDirs } from "../src/media/video.js";
import { startServer } from "../src/server/serve.js";
import { QWEN25OMNI_CHAT_TEMPLATE, QWEN25OMNI_TINY, ensureTestModel, runReference, writeTestModel, type TestModelFiles } from "../src/test-models/index.js";
import { ffmpeg, ffmpegAvailable, indexClip, withSoundTrack } from "./helpers/clips.js";
import { ISOLATIONS, loader } from "./helpers/isolation.js";
import { rejection } from "./helpers/rejection.js";

const greedy = { temperature: 0, seed: 42, maxTokens: 16 } as const;
const PNG = path.join(import.meta.dirname, "..", "assets", "sample.png");
const VIDEO = { fps: 2, timestamps: false } as const;
let tmp: string;
let sweep: string; // 3 s rising tone, 16 kHz mono WAV
let silentClip: string; // 84x84, 10 fps, 2 s, no sound track
let clip: string; // the same frames with a 2 s AAC sound track
let clipSound: string; // that sound track as ffmpeg decodes it: 16 kHz mono float WAV

beforeAll(() => {
  if (!ffmpegAvailable()) throw new Error("The omni tests need ffmpeg and ffprobe on PATH (Debian/Ubuntu: apt-get install ffmpeg).");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-omni-"));
  sweep = path.join(tmp, "sweep.wav");
  ffmpeg(["-f", "lavfi", "-i", "aevalsrc=sin(2*PI*(200+150*t)*t):s=16000:d=3", "-ac", "1", "-c:a", "pcm_s16le", "-fflags", "+bitexact", "-flags:a", "+bitexact", sweep]);
  // The centre of each 1/2 s never falls on a frame boundary, so our sampling and llama.cpp's pick the same frames.
  silentClip = indexClip(path.join(tmp, "silent.mp4"), { fps: 10, seconds: 2, width: 84, height: 84 });
  clip = withSoundTrack(silentClip, path.join(tmp, "clip.mp4"), 2);
  // llama-mtmd-cli reads a video's frames but not its sound: its reference gets the track as a WAV.
  clipSound = path.join(tmp, "clip-sound.wav");
  ffmpeg(["-i", clip, "-vn", "-ac", "1", "-ar", "16000", "-c:a", "pcm_f32le", clipSound]);
}, 60_000);
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.each(ISOLATIONS)("isolation: %s", (isolation) => {
  const load = loader(isolation);

  describe("the qwen25omni-tiny recipe", () => {
    it("writes one projector with both encoders, as conversion/qwenvl.py's Qwen25OmniModel does, deterministically", async () => {
      const a = await writeTestModel("qwen25omni-tiny", path.join(tmp, "a"));
      const b = await writeTestModel("qwen25omni-tiny", path.join(tmp, "b"));
      const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
      expect(sha(b.mmproj)).toBe(sha(a.mmproj));
      expect(sha(b.model)).toBe(sha(a.model));
      expect(a.bytes).toBeLessThan(20e6);
      const { typedMetadata, tensorInfos } = await gguf(a.mmproj, { allowLocalFile: true, typedMetadata: true });
      const value = (key: string) => typedMetadata[key]?.value;
      const shape = (name: string) => tensorInfos.find((t) => t.name === name)?.shape.map(Number);
      expect(value("clip.projector_type")).toBe("qwen2.5o");
      expect(value("clip.has_vision_encoder")).toBe(true);
      expect(value("clip.has_audio_encoder")).toBe(true);
      expect(value("clip.use_silu")).toBe(true);
      expect(value("clip.vision.n_wa_pattern")).toBe(QWEN25OMNI_TINY.vision.windowPattern);
      expect(value("clip.audio.num_mel_bins")).toBe(128);
      const v = QWEN25OMNI_TINY.vision.nEmbd;
      // Qwen2.5-VL: RMSNorm (no bias), a gated MLP; Whisper: conv front end and its projector.
      expect(shape("v.blk.0.ln1.weight")).toEqual([v]);
      expect(shape("v.blk.0.ln1.bias")).toBeUndefined();
      expect(shape("v.blk.0.ffn_gate.weight")).toEqual([v, QWEN25OMNI_TINY.vision.nFf]);
      expect(shape("v.post_ln.bias")).toBeUndefined();
      expect(shape("mm.2.weight")).toEqual([4 * v, QWEN25OMNI_TINY.text.nEmbd]);
      expect(shape("a.conv1d.1.weight")).toEqual([3, 128, QWEN25OMNI_TINY.audio.nEmbd]);
      expect(shape("mm.a.fc.weight")).toEqual([QWEN25OMNI_TINY.audio.nEmbd, QWEN25OMNI_TINY.text.nEmbd]);
      const text = await gguf(a.model, { allowLocalFile: true, typedMetadata: true });
      expect(text.typedMetadata["general.architecture"]?.value).toBe("qwen2vl");
      expect(text.typedMetadata["tokenizer.chat_template"]?.value).toBe(QWEN25OMNI_CHAT_TEMPLATE);
      expect(text.typedMetadata["tokenizer.ggml.tokens"]?.value).toEqual(expect.arrayContaining(["<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>"]));
    });
  });

  describe("omni model (qwen25omni-tiny)", () => {
    let files: TestModelFiles;
    let lm: MultimodalLM;
    const reference = (media: string[], prompt: string, extra: string[] = []) =>
      runReference({ model: files.model, mmproj: files.mmproj, images: media, prompt, extraArgs: ["-fa", "off", ...extra] }).text;

    beforeAll(async () => {
      files = await ensureTestModel("qwen25omni-tiny");
      lm = await load({ model: files.model, mmproj: files.mmproj, flashAttention: false });
    });
    afterAll(() => lm?.dispose());

    it("takes images, video and audio, at the projector's sample rate", () => {
      expect(lm.info.capabilities).toEqual({ vision: true, audio: true, video: true });
      expect(lm.info.audioSampleRate).toBe(16000);
      expect(lm.info.frameMerge).toBe(2);
    });

    it("an image (window attention) and an audio clip each give llama-mtmd-cli's greedy output", async () => {
      expect((await lm.generate({ prompt: "What is this?", images: [PNG], ...greedy })).text).toBe(reference([PNG], "What is this?"));
      expect(await lm.describeAudio(sweep, { prompt: "What is this?", ...greedy })).toBe(reference([], "What is this?", ["--audio", sweep]));
    });

    it("mixed media: an image plus an audio clip in one message equals llama-mtmd-cli --image --audio", async () => {
      const expected = reference([PNG], "<__media__><__media__>What is this?", ["--audio", sweep]);
      const r = await lm.chat({
        messages: [
          {
            role: "user",
            content: [
              { type: "image_url", image_url: { url: pathToFileURL(PNG).href } },
              { type: "input_audio", input_audio: { data: fs.readFileSync(sweep).toString("base64"), format: "wav" } },
              { type: "text", text: "What is this?" },
            ],
          },
        ],
        ...greedy,
      });
      expect(r.text).toBe(expected);
      // Both media reach the model: the image alone says something else.
      expect(r.text).not.toBe((await lm.generate({ prompt: "What is this?", images: [PNG], ...greedy })).text);
    });

    it("describeVideo({ audio: true }): the frames, then the sound track, as llama-mtmd-cli given the video and its sound", async () => {
      const expected = reference([clip], "<__media__><__media__>Describe this video.", ["--audio", clipSound, "--video-fps", "2", "--video-timestamp-interval", "0"]);
      expect(await lm.describeVideo(clip, { ...VIDEO, audio: true, ...greedy })).toBe(expected);
      // The same through generate and chat, with the result saying what was read.
      const r = await lm.generate({ prompt: "Describe this video.", videos: [clip], video: { ...VIDEO, audio: true }, ...greedy });
      expect(r.text).toBe(expected);
      expect(r.videos[0]).toMatchObject({ frames: 4, audio: { samples: expect.any(Number), seconds: expect.closeTo(2, 1) } });
      const viaChat = await lm.chat({
        messages: [{ role: "user", content: [{ type: "video_url", video_url: { url: pathToFileURL(clip).href } }, { type: "text", text: "Describe this video." }] }],
        video: { ...VIDEO, audio: true },
        ...greedy,
      });
      expect(viaChat.text).toBe(expected);
      // Without the option the sound is left out, as before.
      const frames = await lm.generate({ prompt: "Describe this video.", videos: [clip], video: VIDEO, ...greedy });
      expect(frames.text).toBe(reference([clip], "Describe this video.", ["--video-fps", "2", "--video-timestamp-interval", "0"]));
      expect(frames.videos[0]).not.toHaveProperty("audio");
      expect(r.usage.mediaChunks).toBe(frames.usage.mediaChunks + 1);
    });

    it("over HTTP: mm_processor_kwargs.use_audio_in_video (vLLM's switch) reads the video's sound", async () => {
      const server = await startServer(lm, { port: 0 });
      try {
        const video = { type: "video_url", video_url: { url: `data:video/mp4;base64,${fs.readFileSync(clip).toString("base64")}` } };
        const post = (extra: Record<string, unknown>) =>
          fetch(`${server.url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ messages: [{ role: "user", content: [video, { type: "text", text: "Describe this video." }] }], temperature: 0, seed: 42, max_tokens: 16, video_fps: 2, ...extra }),
          });
        const withSound = await post({ mm_processor_kwargs: { use_audio_in_video: true } });
        expect(withSound.status).toBe(200);
        const body = (await withSound.json()) as { choices: Array<{ message: { content: string } }> };
        expect(body.choices[0]!.message.content).toBe(await lm.describeVideo(clip, { fps: 2, audio: true, ...greedy }));
        const bad = await post({ mm_processor_kwargs: { use_audio_in_video: "yes" } });
        expect(bad.status).toBe(400);
        expect(((await bad.json()) as { error: { param: string } }).error.param).toBe("mm_processor_kwargs.use_audio_in_video");
      } finally {
        await server.close();
      }
    });

    it("countTokens counts a video's sound track without encoding it", async () => {
      const counted = await lm.countTokens("Describe this video.", [], { videos: [clip], video: { ...VIDEO, audio: true } });
      const r = await lm.generate({ prompt: "Describe this video.", videos: [clip], video: { ...VIDEO, audio: true }, ...greedy, maxTokens: 1 });
      expect(counted).toMatchObject({ tokens: r.usage.promptTokens, mediaTokens: r.usage.mediaTokens, mediaChunks: r.usage.mediaChunks });
      // One 30 s Whisper window: 750 tokens on top of the frames.
      const framesOnly = await lm.countTokens("Describe this video.", [], { videos: [clip], video: VIDEO });
      expect(counted.mediaTokens - framesOnly.mediaTokens).toBe(750);
    });

    it("a video with no sound track, or one past the audio maxSeconds, is a typed error; nothing is left behind", async () => {
      const silent = await rejection(lm.describeVideo(silentClip, { ...VIDEO, audio: true, maxTokens: 1 }));
      expect(silent.code).toBe("E_AUDIO_DECODE");
      expect(silent.message).toMatch(/has no sound track.*Leave audio off/);
      const part = await rejection(
        lm.chat({
          messages: [{ role: "user", content: [{ type: "video", video: fs.readFileSync(silentClip) }, { type: "text", text: "hi" }] }],
          video: { audio: true },
          maxTokens: 1,
        }),
      );
      expect(part).toMatchObject({ code: "E_AUDIO_DECODE", param: "messages[0].content[0].video" });
      const long = await rejection(lm.generate({ prompt: "x", videos: [clip], video: { ...VIDEO, audio: true }, audio: { maxSeconds: 1 }, maxTokens: 1 }));
      expect(long.code).toBe("E_AUDIO_TOO_LONG");
      expect(runningChildren()).toBe(0);
      expect(liveTempDirs()).toBe(0);
      expect(await lm.describeVideo(clip, { ...VIDEO, audio: true, ...greedy })).toMatch(/\S/);
    });
  });

  describe("a video's sound on a model without an audio encoder", () => {
    it("is refused before anything is decoded, naming video.audio", async () => {
      const files = await ensureTestModel("qwen2vl-tiny");
      const lm = await load({ model: files.model, mmproj: files.mmproj });
      try {
        for (const call of [
          lm.describeVideo(clip, { audio: true, maxTokens: 1 }),
          lm.countTokens("x", [], { videos: [clip], video: { audio: true } }),
        ]) {
          const error = await rejection(call);
          expect(error).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "video.audio" });
          expect(error.message).toMatch(/no audio encoder, so it cannot read a video's sound/);
        }
        expect(runningChildren()).toBe(0);
        const server = await startServer(lm, { port: 0 });
        try {
          const r = await fetch(`${server.url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({
              messages: [{ role: "user", content: [{ type: "video_url", video_url: { url: `data:video/mp4;base64,${fs.readFileSync(clip).toString("base64")}` } }] }],
              max_tokens: 1,
              mm_processor_kwargs: { use_audio_in_video: true },
            }),
          });
          expect(r.status).toBe(400);
          expect(((await r.json()) as { error: { code: string; param: string } }).error).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "mm_processor_kwargs.use_audio_in_video" });
        } finally {
          await server.close();
        }
      } finally {
        await lm.dispose();
      }
    });
  });
});
