// Audio input through MultimodalLM on the two audio recipes (ultravox-tiny, qwen2audio-tiny):
// greedy parity with the reference llama-mtmd-cli --audio from the same tree, for every way a
// clip can be given, plus counting, caching, capabilities and the errors of bad input.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM } from "../src/index.js";
import { GGMLType } from "../src/gguf/index.js";
import { runningChildren } from "../src/media/ffmpeg.js";
import { startServer } from "../src/server/serve.js";
import { buildUltravox, ensureTestModel, runReference, ULTRAVOX_TINY } from "../src/test-models/index.js";
import { ISOLATIONS, loader } from "./helpers/isolation.js";
import { rejection } from "./helpers/rejection.js";

const greedy = { temperature: 0, seed: 42, maxTokens: 16 } as const;
const PROMPT = "What is this?";
let tmp: string;
let sweep: string;
let mp3: string;
let ogg: string;
let oggAsWav: string;

function ffmpeg(args: string[]): void {
  const r = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", ...args], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(" ")} failed: ${r.stderr}`);
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-audio-"));
  sweep = path.join(tmp, "sweep.wav");
  ffmpeg(["-f", "lavfi", "-i", "aevalsrc=sin(2*PI*(200+150*t)*t):s=16000:d=3", "-ac", "1", "-c:a", "pcm_s16le", "-fflags", "+bitexact", "-flags:a", "+bitexact", sweep]);
  mp3 = path.join(tmp, "sweep.mp3");
  ffmpeg(["-i", sweep, mp3]);
  ogg = path.join(tmp, "sweep.ogg");
  ffmpeg(["-i", sweep, "-c:a", "libopus", ogg]);
  // llama-mtmd-cli cannot read Opus (miniaudio has no decoder for it): its reference for the Ogg
  // clip is ffmpeg's decoding of it, as a 16 kHz mono WAV.
  oggAsWav = path.join(tmp, "sweep-from-ogg.wav");
  ffmpeg(["-i", ogg, "-ac", "1", "-ar", "16000", "-c:a", "pcm_f32le", oggAsWav]);
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.each(ISOLATIONS)("isolation: %s", (isolation) => {
  const load = loader(isolation);

  describe.each(["ultravox-tiny", "qwen2audio-tiny"] as const)("audio on %s", (recipe) => {
    let lm: MultimodalLM;
    let files: { model: string; mmproj: string };
    const reference = (clip: string) =>
      runReference({ model: files.model, mmproj: files.mmproj, images: [], extraArgs: ["--audio", clip, "-fa", "off"], prompt: PROMPT }).text;

    beforeAll(async () => {
      files = await ensureTestModel(recipe);
      lm = await load({ model: files.model, mmproj: files.mmproj, flashAttention: false });
    });
    afterAll(() => lm?.dispose());

    it("loads as an audio-only model at the projector's sample rate", () => {
      expect(lm.info.capabilities).toEqual({ vision: false, audio: true, video: false });
      expect(lm.info.audioSampleRate).toBe(16000);
    });

    it("a WAV given as path, file: URL, data: URL, Buffer, input_audio and audio_url gives llama-mtmd-cli's greedy output", async () => {
      const expected = reference(sweep);
      expect(expected.length).toBeGreaterThan(0);
      const bytes = fs.readFileSync(sweep);
      const dataUrl = `data:audio/wav;base64,${bytes.toString("base64")}`;
      for (const input of [sweep, new URL(`file://${sweep}`), dataUrl, bytes, new Uint8Array(bytes)]) {
        expect((await lm.generate({ prompt: PROMPT, audios: [input], ...greedy })).text).toBe(expected);
      }
      const parts = [
        { type: "input_audio" as const, input_audio: { data: bytes.toString("base64"), format: "wav" } },
        { type: "audio_url" as const, audio_url: { url: dataUrl } },
        { type: "audio" as const, audio: sweep },
      ];
      for (const part of parts) {
        const r = await lm.chat({ messages: [{ role: "user", content: [part, { type: "text", text: PROMPT }] }], ...greedy });
        expect(r.text, part.type).toBe(expected);
      }
      expect(await lm.describeAudio(sweep, { prompt: PROMPT, ...greedy })).toBe(expected);
    });

    it("an MP3 equals the reference on the same MP3; an Ogg/Opus clip equals the reference on ffmpeg's decoding of it", async () => {
      expect((await lm.generate({ prompt: PROMPT, audios: [mp3], ...greedy })).text).toBe(reference(mp3));
      expect((await lm.generate({ prompt: PROMPT, audios: [ogg], ...greedy })).text).toBe(reference(oggAsWav));
    });

    it("countTokens counts the clip's tokens without encoding it; a repeated clip comes from the cache", async () => {
      const count = await lm.countTokens(PROMPT, [], { audios: [sweep] });
      const r = await lm.generate({ prompt: PROMPT, audios: [sweep], ...greedy });
      expect(count.tokens).toBe(r.usage.promptTokens);
      expect(count.mediaTokens).toBe(r.usage.mediaTokens);
      expect(count.mediaTokens).toBe(recipe === "ultravox-tiny" ? 187 : 750);
      await lm.clearCaches();
      const first = await lm.generate({ prompt: PROMPT, audios: [sweep], ...greedy, maxTokens: 1 });
      expect(first.cache.encodedChunks).toBe(1);
      // Text before the clip: the KV prefix differs there, so the clip's embeddings must come from the cache.
      const again = await lm.generate({ prompt: `Listen: ${lm.marker} What is this?`, audios: [fs.readFileSync(sweep)], ...greedy, maxTokens: 1 });
      expect(again.cache.encodedChunks).toBe(0);
      expect(again.cache.imageCacheHits).toBe(1);
    });

    it("over HTTP: input_audio and audio_url parts give the library's output; a bad clip is a 400 naming the part", async () => {
      const server = await startServer(lm, { port: 0 });
      try {
        const bytes = fs.readFileSync(sweep);
        const post = (content: unknown[]) =>
          fetch(`${server.url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ messages: [{ role: "user", content }], temperature: 0, seed: 42, max_tokens: 16 }),
          });
        const expected = (await lm.generate({ prompt: PROMPT, audios: [sweep], ...greedy })).text;
        for (const part of [
          { type: "input_audio", input_audio: { data: bytes.toString("base64"), format: "wav" } },
          { type: "audio_url", audio_url: { url: `data:audio/wav;base64,${bytes.toString("base64")}` } },
        ]) {
          const r = await post([part, { type: "text", text: PROMPT }]);
          expect(r.status).toBe(200);
          const body = (await r.json()) as { choices: Array<{ message: { content: string } }> };
          expect(body.choices[0]!.message.content).toBe(expected);
        }
        const bad = await post([{ type: "input_audio", input_audio: { data: Buffer.from("not audio").toString("base64"), format: "wav" } }, { type: "text", text: PROMPT }]);
        expect(bad.status).toBe(400);
        const error = ((await bad.json()) as { error: { code: string; param: string } }).error;
        expect(error).toMatchObject({ code: "E_AUDIO_DECODE", param: "messages[0].content[0].input_audio" });
        // The media policy covers audio as it covers images and video: no private addresses, no local files by default.
        for (const [url, code] of [
          ["http://127.0.0.1:9/clip.wav", "E_MEDIA_NOT_ALLOWED"],
          [sweep, "E_MEDIA_NOT_ALLOWED"],
        ] as const) {
          const refused = await post([{ type: "audio_url", audio_url: { url } }, { type: "text", text: PROMPT }]);
          expect(refused.status, url).toBe(400);
          expect(((await refused.json()) as { error: { code: string; param: string } }).error).toMatchObject({ code, param: "messages[0].content[0].audio_url" });
        }
      } finally {
        await server.close();
      }
    });

    it("refuses images and videos, non-audio bytes, an empty clip and one past maxSeconds, with typed errors and nothing left running", async () => {
      const image = await rejection(lm.generate({ prompt: "x", images: [path.join(import.meta.dirname, "..", "assets", "sample.png")], maxTokens: 1 }));
      expect(image).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "images[0]" });
      expect(image.message).toMatch(/takes audio only, so it cannot read images/);
      expect((await rejection(lm.generate({ prompt: "x", audios: [Buffer.from("not audio at all, just text")], maxTokens: 1 }))).code).toBe("E_AUDIO_DECODE");
      expect((await rejection(lm.generate({ prompt: "x", audios: [Buffer.alloc(0)], maxTokens: 1 }))).code).toBe("E_AUDIO_DECODE");
      expect((await rejection(lm.generate({ prompt: "x", audios: [sweep], audio: { maxSeconds: 1 }, maxTokens: 1 }))).code).toBe("E_AUDIO_TOO_LONG");
      const part = await rejection(lm.chat({ messages: [{ role: "user", content: [{ type: "input_audio", input_audio: { data: "!!!", format: "wav" } }] }], maxTokens: 1 }));
      expect(part).toMatchObject({ code: "E_INVALID_DATA_URL", param: "messages[0].content[0].input_audio" });
      expect(runningChildren()).toBe(0);
      expect((await lm.generate({ prompt: PROMPT, audios: [sweep], ...greedy })).text).toBe(reference(sweep));
    });
  });

  describe("audio and vision models", () => {
    it("a vision-only model refuses audio with a typed error naming the part", async () => {
      const files = await ensureTestModel("qwen2vl-tiny");
      const lm = await load({ model: files.model, mmproj: files.mmproj });
      try {
        expect(lm.info.capabilities.audio).toBe(false);
        expect(lm.info.audioSampleRate).toBe(0);
        const error = await rejection(lm.chat({ messages: [{ role: "user", content: [{ type: "audio", audio: sweep }, { type: "text", text: "hi" }] }], maxTokens: 1 }));
        expect(error).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "messages[0].content[0].audio" });
        expect(error.message).toMatch(/takes vision \(images and video\) only, so it cannot read audio/);
      } finally {
        await lm.dispose();
      }
    });

    it("an Ultravox projector whose width would abort llama.cpp's Whisper path is refused at load (E_MODEL_LOAD), not a crash", async () => {
      const dir = path.join(tmp, "ultravox-64");
      fs.mkdirSync(dir, { recursive: true });
      const dims = { ...ULTRAVOX_TINY, name: "ultravox-64", audio: { ...ULTRAVOX_TINY.audio, nEmbd: 64, nFf: 128, nHead: 1 }, unchecked: true };
      const build = buildUltravox(dims, { seed: 0, textType: GGMLType.F32, visionType: GGMLType.F32, head: "printable" });
      const model = path.join(dir, "model.gguf");
      const mmproj = path.join(dir, "mmproj.gguf");
      await build.text.write(model);
      await build.mmproj.write(mmproj);
      const error = await rejection(load({ model, mmproj }));
      expect(error.code).toBe("E_MODEL_LOAD");
      expect(error.message).toMatch(/ultravox audio encoder \(width 64, stack factor 8\) would abort/);
    });
  });
});
