// Audio decoding (src/media/audio.ts) on clips made here with ffmpeg's lavfi sources: the exact
// samples of a WAV at the target rate, lossy codecs, resampling, every input form, the length cap,
// and how every bad input, abort and timeout fails without leaving a process or temp file behind.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { AudioError, FileNotFoundError } from "../src/errors.js";
import { audioDecodeArgs, AUDIO_OPTION_KEYS, loadAudio, validateAudioOptions, type DecodedAudio } from "../src/media/audio.js";
import { findFfmpegBinary, runningChildren, runTool } from "../src/media/ffmpeg.js";
import { liveTempDirs } from "../src/media/source.js";
import { ffmpegAvailable } from "./helpers/clips.js";
import { rejection } from "./helpers/rejection.js";

const RATE = 16_000;
const SECONDS = 2;

let tmp: string;
let wav: string; // 2 s, 16 kHz, mono, s16: a 440 Hz sine mixed with noise
let mp3: string;
let opus: string; // Ogg/Opus
let flac: string;
let stereo: string; // 2 s, 44.1 kHz, stereo s16: 440 Hz left, 1 kHz right
let withSound: string; // 1 s H.264 + AAC 440 Hz sine
let silentVideo: string; // 1 s H.264, no audio stream
let realFfmpeg: string;
let slowFfmpeg: string; // ffmpeg reading its input at native speed (-re): a 2 s clip takes 2 s
let sleepingFfmpeg: string; // never writes anything

function ffmpeg(args: string[]): void {
  const r = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", ...args], { encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(" ")} failed: ${r.stderr}`);
}

/** The fmt and data chunks of a PCM s16 WAV, found by walking its chunks. */
function parseWav(file: string): { sampleRate: number; channels: number; samples: Int16Array } {
  const bytes = fs.readFileSync(file);
  expect(bytes.toString("latin1", 0, 4)).toBe("RIFF");
  expect(bytes.toString("latin1", 8, 12)).toBe("WAVE");
  let sampleRate = 0;
  let channels = 0;
  for (let at = 12; at + 8 <= bytes.length; ) {
    const id = bytes.toString("latin1", at, at + 4);
    const size = bytes.readUInt32LE(at + 4);
    if (id === "fmt ") {
      expect(bytes.readUInt16LE(at + 8)).toBe(1); // PCM
      channels = bytes.readUInt16LE(at + 10);
      sampleRate = bytes.readUInt32LE(at + 12);
      expect(bytes.readUInt16LE(at + 22)).toBe(16);
    } else if (id === "data") {
      const data = bytes.subarray(at + 8, at + 8 + size);
      const samples = new Int16Array(data.length / 2);
      for (let i = 0; i < samples.length; i++) samples[i] = data.readInt16LE(i * 2);
      return { sampleRate, channels, samples };
    }
    at += 8 + size + (size % 2);
  }
  throw new Error(`no data chunk in ${file}`);
}

/** The largest normalised cross-correlation of a and b over lags -maxLag..maxLag. */
function correlation(a: Float32Array, b: Float32Array, maxLag = 200): { r: number; lag: number } {
  let best = { r: -Infinity, lag: 0 };
  for (let lag = -maxLag; lag <= maxLag; lag++) {
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let i = Math.max(0, -lag); i < a.length && i + lag < b.length; i++) {
      const x = a[i]!;
      const y = b[i + lag]!;
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    const r = ab / Math.sqrt(aa * bb);
    if (r > best.r) best = { r, lag };
  }
  return best;
}

function rms(pcm: Float32Array): number {
  let sum = 0;
  for (const x of pcm) sum += x * x;
  return Math.sqrt(sum / pcm.length);
}

/** Sign changes per second: about twice the frequency of a pure tone. */
function crossingsPerSecond(audio: DecodedAudio): number {
  let n = 0;
  for (let i = 1; i < audio.samples; i++) if (audio.pcm[i - 1]! < 0 !== audio.pcm[i]! < 0) n++;
  return n / audio.seconds;
}

/** Child processes of this test process that are ffmpeg or one of the stand-ins. */
function toolChildren(): string[] {
  const out = spawnSync("ps", ["-o", "pid=,comm=", "--ppid", String(process.pid)], { encoding: "utf8" }).stdout;
  return out.split("\n").filter((line) => /ffmpeg|sleep/.test(line));
}

function expectNothingLeft(): void {
  expect(runningChildren()).toBe(0);
  expect(toolChildren()).toEqual([]);
  expect(liveTempDirs()).toBe(0);
}

function script(name: string, body: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return file;
}

beforeAll(() => {
  if (!ffmpegAvailable()) throw new Error("The audio tests need ffmpeg on PATH (Debian/Ubuntu: apt-get install ffmpeg).");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-audio-test-"));
  wav = path.join(tmp, "clip.wav");
  ffmpeg([
    ...["-f", "lavfi", "-i", `sine=frequency=440:sample_rate=${RATE}:duration=${SECONDS}`],
    ...["-f", "lavfi", "-i", `anoisesrc=sample_rate=${RATE}:duration=${SECONDS}:amplitude=0.1:seed=7`],
    ...["-filter_complex", "amix=inputs=2:duration=first", "-ac", "1", "-c:a", "pcm_s16le", wav],
  ]);
  mp3 = path.join(tmp, "clip.mp3");
  ffmpeg(["-i", wav, "-c:a", "libmp3lame", "-b:a", "64k", mp3]);
  opus = path.join(tmp, "clip.ogg");
  ffmpeg(["-i", wav, "-c:a", "libopus", "-b:a", "48k", opus]);
  flac = path.join(tmp, "clip.flac");
  ffmpeg(["-i", wav, "-c:a", "flac", flac]);
  stereo = path.join(tmp, "stereo.wav");
  ffmpeg([
    ...["-f", "lavfi", "-i", `sine=frequency=440:sample_rate=44100:duration=${SECONDS}`],
    ...["-f", "lavfi", "-i", `sine=frequency=1000:sample_rate=44100:duration=${SECONDS}`],
    ...["-filter_complex", "[0][1]amerge=inputs=2", "-c:a", "pcm_s16le", stereo],
  ]);
  const video = ["-f", "lavfi", "-i", "color=c=red:s=64x48:r=8:d=1"];
  const x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"];
  withSound = path.join(tmp, "with-sound.mp4");
  ffmpeg([...video, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1", ...x264, "-c:a", "aac", "-shortest", withSound]);
  silentVideo = path.join(tmp, "silent.mp4");
  ffmpeg([...video, ...x264, silentVideo]);
  realFfmpeg = findFfmpegBinary(undefined).ffmpeg;
  // exec, so that killing the child kills the tool itself.
  slowFfmpeg = script("ffmpeg-slow", `exec '${realFfmpeg}' -re "$@"`);
  sleepingFfmpeg = script("ffmpeg-sleeping", "exec sleep 30");
}, 120_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("loadAudio: the samples", () => {
  it("a WAV at the target rate: exactly the s16 samples / 32768 (no resampling, dither or gain)", async () => {
    const source = parseWav(wav);
    expect(source).toMatchObject({ sampleRate: RATE, channels: 1 });
    expect(source.samples.length).toBe(SECONDS * RATE);
    const audio = await loadAudio(wav, RATE);
    expect(audio).toMatchObject({ sampleRate: RATE, samples: SECONDS * RATE, seconds: SECONDS });
    expect(audio.pcm).toBeInstanceOf(Float32Array);
    expect(audio.pcm.length).toBe(audio.samples);
    const expected = Float32Array.from(source.samples, (x) => x / 32768);
    let worst = 0;
    for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(audio.pcm[i]! - expected[i]!));
    expect(worst).toBe(0);
    expect(rms(audio.pcm)).toBeGreaterThan(0.05);
    expect(audio.id).toMatch(/^[0-9a-f]{64}$/);
    // Lossless FLAC of the same samples: the same PCM, so the same id.
    expect((await loadAudio(flac, RATE)).id).toBe(audio.id);
  });

  it("MP3 and Ogg/Opus: about the same length, and the same sound", async () => {
    const reference = await loadAudio(wav, RATE);
    for (const file of [mp3, opus]) {
      const audio = await loadAudio(file, RATE);
      expect(Math.abs(audio.samples - reference.samples), file).toBeLessThanOrEqual(2048);
      const { r, lag } = correlation(reference.pcm, audio.pcm);
      expect(r, file).toBeGreaterThan(0.9);
      expect(Math.abs(lag), file).toBeLessThanOrEqual(64);
      expect(audio.id).not.toBe(reference.id);
    }
  });

  it("resamples to the rate asked for: 24 kHz gives 1.5× the samples", async () => {
    const at16 = await loadAudio(wav, RATE);
    const at24 = await loadAudio(wav, 24_000);
    expect(at24).toMatchObject({ sampleRate: 24_000, samples: 1.5 * at16.samples, seconds: SECONDS });
    expect(at24.id).not.toBe(at16.id);
    expect(rms(at24.pcm)).toBeCloseTo(rms(at16.pcm), 2);
  });

  it("a 44.1 kHz stereo WAV: the channels averaged, as llama.cpp's miniaudio does; resampled to 16 kHz", async () => {
    const source = parseWav(stereo);
    expect(source).toMatchObject({ sampleRate: 44_100, channels: 2 });
    const frames = source.samples.length / 2;
    const native = await loadAudio(stereo, 44_100);
    expect(native.samples).toBe(frames);
    let worst = 0;
    for (let i = 0; i < frames; i++) {
      const mean = (source.samples[2 * i]! + source.samples[2 * i + 1]!) / 65536;
      worst = Math.max(worst, Math.abs(native.pcm[i]! - mean));
    }
    expect(worst).toBe(0);
    const at16 = await loadAudio(stereo, RATE);
    expect(at16).toMatchObject({ samples: SECONDS * RATE, seconds: SECONDS });
    expect(rms(at16.pcm)).toBeCloseTo(rms(native.pcm), 2);
  });

  it("a video's sound track; a video without one is E_AUDIO_DECODE", async () => {
    const audio = await loadAudio(withSound, RATE);
    expect(audio.seconds).toBeGreaterThan(0.95);
    expect(audio.seconds).toBeLessThan(1.1);
    expect(crossingsPerSecond(audio)).toBeGreaterThan(860);
    expect(crossingsPerSecond(audio)).toBeLessThan(900);
    const error = await rejection(loadAudio(silentVideo, RATE));
    expect(error).toBeInstanceOf(AudioError);
    expect(error.code).toBe("E_AUDIO_DECODE");
    expect(error.message).toMatch(/has no audio stream/);
    expectNothingLeft();
  });
});

describe("loadAudio sources", () => {
  let server: http.Server;
  let base: string;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      if (req.url === "/clip.wav") res.end(fs.readFileSync(wav));
      else if (req.url === "/redirect") res.writeHead(302, { location: "/clip.wav" }).end();
      else if (req.url === "/stall") {
        // Half the file, then nothing: only an abort or a timeout ends it.
        res.writeHead(200, { "content-type": "audio/wav" });
        res.write(fs.readFileSync(wav).subarray(0, 1000));
      } else res.writeHead(404).end("not found");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("path, relative path, file: URL, URL object, data: URL, Buffer, Uint8Array and http(s) give the same PCM and id", async () => {
    const bytes = fs.readFileSync(wav);
    // A Uint8Array that is a window into a larger buffer, not at offset 0.
    const padded = new Uint8Array(bytes.length + 10);
    padded.set(bytes, 7);
    const inputs = [
      wav,
      path.relative(process.cwd(), wav),
      pathToFileURL(wav).href,
      pathToFileURL(wav),
      `data:audio/wav;base64,${bytes.toString("base64")}`,
      bytes,
      new Uint8Array(bytes),
      padded.subarray(7, 7 + bytes.length),
      `${base}/clip.wav`,
      `${base}/redirect`,
    ];
    const expected = await loadAudio(wav, RATE);
    for (const input of inputs) {
      const audio = await loadAudio(input, RATE);
      const what = String(input).slice(0, 40);
      expect(audio.id, what).toBe(expected.id);
      expect(Buffer.from(audio.pcm.buffer).equals(Buffer.from(expected.pcm.buffer)), what).toBe(true);
    }
    expectNothingLeft();
  });

  it("download errors and limits", async () => {
    expect((await rejection(loadAudio(`${base}/missing.wav`, RATE))).code).toBe("E_FETCH");
    const capped = await rejection(loadAudio(`${base}/clip.wav`, RATE, { fetch: { maxBytes: 100 } }));
    expect(capped.code).toBe("E_FETCH");
    expect(capped.message).toMatch(/100-byte limit/);
    const slow = await rejection(loadAudio(`${base}/stall`, RATE, { fetch: { timeoutMs: 200 } }));
    expect(slow.code).toBe("E_FETCH");
    expect(slow.message).toMatch(/timed out after 200 ms/);
    expectNothingLeft();
  });

  it("abort during a download", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("enough")), 100);
    const error = await rejection(loadAudio(`${base}/stall`, RATE, { signal: controller.signal }));
    expect(error.code).toBe("E_ABORTED");
    expectNothingLeft();
  });
});

describe("loadAudio: limits, aborts and timeouts", () => {
  it("maxSeconds: a longer clip is refused with E_AUDIO_TOO_LONG, never cut", async () => {
    const error = await rejection(loadAudio(wav, RATE, { maxSeconds: 1 }));
    expect(error).toBeInstanceOf(AudioError);
    expect(error.code).toBe("E_AUDIO_TOO_LONG");
    expect(error.message).toMatch(/longer than the maxSeconds limit of 1 s \(more than 16000 samples at 16000 Hz\)/);
    expect((await rejection(loadAudio(wav, RATE, { maxSeconds: 1.999 }))).code).toBe("E_AUDIO_TOO_LONG");
    expect((await rejection(loadAudio(fs.readFileSync(wav), 24_000, { maxSeconds: 1.5 }))).code).toBe("E_AUDIO_TOO_LONG");
    // Exactly maxSeconds is allowed.
    expect((await loadAudio(wav, RATE, { maxSeconds: 2 })).samples).toBe(2 * RATE);
    expectNothingLeft();
  });

  it("ffmpeg is stopped as soon as the cap is passed, not at the end of the clip", async () => {
    const started = performance.now();
    const error = await rejection(loadAudio(wav, RATE, { maxSeconds: 0.5, ffmpegPath: slowFfmpeg }));
    expect(error.code).toBe("E_AUDIO_TOO_LONG");
    // At native speed the whole 2 s clip would take 2 s.
    expect(performance.now() - started).toBeLessThan(1600);
    expectNothingLeft();
  });

  it("abort: before the start, while ffmpeg decodes, and while ffmpeg hangs", async () => {
    const already = new AbortController();
    already.abort();
    expect((await rejection(loadAudio(wav, RATE, { signal: already.signal }))).code).toBe("E_ABORTED");
    for (const [input, ffmpegPath] of [
      [wav, slowFfmpeg],
      [fs.readFileSync(wav), slowFfmpeg],
      [fs.readFileSync(wav), sleepingFfmpeg],
    ] as const) {
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error("enough")), 300);
      const started = performance.now();
      const error = await rejection(loadAudio(input, RATE, { signal: controller.signal, ffmpegPath }));
      expect(error.code).toBe("E_ABORTED");
      expect(error.message).toBe("Reading the audio was aborted.");
      expect((error.cause as Error).message).toBe("enough");
      expect(performance.now() - started).toBeLessThan(1500);
      expectNothingLeft();
    }
  });

  it("a wall-clock timeout kills ffmpeg: E_AUDIO_TIMEOUT", async () => {
    for (const ffmpegPath of [slowFfmpeg, sleepingFfmpeg]) {
      const error = await rejection(loadAudio(fs.readFileSync(wav), RATE, { timeoutMs: 300, ffmpegPath }));
      expect(error).toBeInstanceOf(AudioError);
      expect(error.code).toBe("E_AUDIO_TIMEOUT");
      expect(error.message).toMatch(/did not finish within the audio's timeoutMs of 300 ms/);
      expectNothingLeft();
    }
  });
});

describe("loadAudio: bad input", () => {
  it("not audio: a PNG, random bytes, a text file, a WAV cut inside its header", async () => {
    const png = fs.readFileSync(path.join(import.meta.dirname, "..", "assets", "sample.png"));
    // Seeded, so a failure can be replayed.
    let seed = 12345;
    const random = Buffer.alloc(64 * 1024);
    for (let i = 0; i < random.length; i++) random[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    const text = path.join(tmp, "notes.txt");
    fs.writeFileSync(text, "just some text, not audio\n".repeat(50));
    const cut = path.join(tmp, "cut.wav");
    fs.writeFileSync(cut, fs.readFileSync(wav).subarray(0, 40));
    for (const input of [png, random, text, cut]) {
      const error = await rejection(loadAudio(input, RATE));
      expect(error, String(input).slice(0, 40)).toBeInstanceOf(AudioError);
      expect(error.code).toBe("E_AUDIO_DECODE");
      expect(error.message).toMatch(/could not be decoded as audio/);
    }
    expectNothingLeft();
  });

  it("empty: a zero-length file, Buffer or Uint8Array", async () => {
    const empty = path.join(tmp, "empty.wav");
    fs.writeFileSync(empty, "");
    for (const input of [empty, Buffer.alloc(0), new Uint8Array(0)]) {
      const error = await rejection(loadAudio(input, RATE));
      expect(error.code).toBe("E_AUDIO_DECODE");
      expect(error.message).toMatch(/empty \(0 bytes\)/);
    }
    expectNothingLeft();
  });

  it("a WAV with an audio stream but no samples", async () => {
    // The header of the clip up to its data chunk, which is made empty.
    const bytes = fs.readFileSync(wav);
    const data = bytes.indexOf("data", 12, "latin1");
    const header = Buffer.from(bytes.subarray(0, data + 8));
    header.writeUInt32LE(0, data + 4);
    header.writeUInt32LE(header.length - 8, 4);
    const noSamples = path.join(tmp, "no-samples.wav");
    fs.writeFileSync(noSamples, header);
    const error = await rejection(loadAudio(noSamples, RATE));
    expect(error.code).toBe("E_AUDIO_DECODE");
    expect(error.message).toMatch(/has an audio stream but no samples decoded from it \(0 samples\)/);
    expectNothingLeft();
  });

  it("missing files, directories, bad URLs and bad base64", async () => {
    const missing = await rejection(loadAudio(path.join(tmp, "missing.wav"), RATE));
    expect(missing).toBeInstanceOf(FileNotFoundError);
    expect(missing.code).toBe("E_FILE_NOT_FOUND");
    expect(missing.message).toMatch(/^Audio file .* does not exist/);
    expect((await rejection(loadAudio(tmp, RATE))).message).toMatch(/is a directory, not an audio file/);
    expect((await rejection(loadAudio("ftp://example.com/a.wav", RATE))).code).toBe("E_INVALID_ARGUMENT");
    expect((await rejection(loadAudio("", RATE))).code).toBe("E_INVALID_ARGUMENT");
    const b64 = await rejection(loadAudio("data:audio/wav;base64,AAAA*AAA", RATE));
    expect(b64).toBeInstanceOf(AudioError);
    expect(b64.code).toBe("E_INVALID_DATA_URL");
    expect(b64.message).toMatch(/data:audio/);
    expect((await rejection(loadAudio(42 as unknown as string, RATE))).code).toBe("E_INVALID_ARGUMENT");
    expectNothingLeft();
  });

  it("playlists and concat lists are refused", async () => {
    const playlist = path.join(tmp, "evil.m3u8");
    fs.writeFileSync(playlist, "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n");
    const list = path.join(tmp, "list.wav");
    fs.writeFileSync(list, `ffconcat version 1.0\nfile '${wav}'\n`);
    for (const input of [playlist, list, fs.readFileSync(list)]) {
      const error = await rejection(loadAudio(input, RATE));
      expect(error.code).toBe("E_AUDIO_DECODE");
      expect(error.message).toMatch(/concat lists are refused/);
    }
    expectNothingLeft();
  });

  it("bad sample rates and options", async () => {
    for (const rate of [0, 999, 16000.5, 1e9, Number.NaN, "16000"]) {
      const error = await rejection(loadAudio(wav, rate as number));
      expect(error.code).toBe("E_INVALID_ARGUMENT");
      expect(error.message).toMatch(/for sampleRate/);
    }
    const zero = await rejection(loadAudio(wav, RATE, { maxSeconds: 0 }));
    expect(zero.message).toBe("Expected a number greater than 0 and at most 86400 for options.maxSeconds but received 0 of type number");
    expect((await rejection(loadAudio(wav, RATE, { maxSeconds: "5" as never }))).code).toBe("E_INVALID_ARGUMENT");
    expect((await rejection(loadAudio(wav, RATE, { timeoutMs: 0 }))).message).toMatch(/options\.timeoutMs/);
    expect((await rejection(loadAudio(wav, RATE, { ffmpegPath: "" }))).message).toMatch(/options\.ffmpegPath/);
    expect((await rejection(loadAudio(wav, RATE, { fetch: { maxBytes: 0 } }))).message).toMatch(/options\.fetch\.maxBytes/);
    expect((await rejection(loadAudio(wav, RATE, { seconds: 3 } as never))).message).toMatch(/Unknown option seconds/);
    expect((await rejection(loadAudio(wav, RATE, { signal: "no" as never }))).message).toMatch(/options\.signal/);
    expect(() => validateAudioOptions({ maxSeconds: -1 }, "audio")).toThrow(/audio\.maxSeconds/);
    expectNothingLeft();
  });

  it("defaults: 10 minutes, 120 s, a 64 MiB download cap", () => {
    expect(validateAudioOptions(undefined)).toEqual({
      maxSeconds: 600,
      timeoutMs: 120_000,
      fetch: { maxBytes: 64 * 1024 * 1024, timeoutMs: 30_000, maxRedirects: 5 },
      ffmpegPath: undefined,
      signal: undefined,
    });
    expect(validateAudioOptions({ fetch: { maxBytes: 10 } }).fetch.maxBytes).toBe(10);
    expect([...AUDIO_OPTION_KEYS].sort()).toEqual(["fetch", "ffmpegPath", "maxSeconds", "signal", "timeoutMs"]);
  });
});

describe("ffmpeg for audio", () => {
  it("a missing ffmpeg: AudioError E_FFMPEG_NOT_FOUND naming the ffmpegPath option; no ffprobe needed", async () => {
    const error = await rejection(loadAudio(wav, RATE, { ffmpegPath: path.join(tmp, "no-ffmpeg") }));
    expect(error).toBeInstanceOf(AudioError);
    expect(error.code).toBe("E_FFMPEG_NOT_FOUND");
    expect(error.message).toMatch(/The ffmpegPath option is .*no-ffmpeg, which is not an executable file/);
    let none: unknown;
    try {
      findFfmpegBinary(undefined, { PATH: path.join(tmp, "empty") }, "audio");
    } catch (e) {
      none = e;
    }
    expect(none).toBeInstanceOf(AudioError);
    for (const fix of ["ffmpegPath option", "MULTIMODAL_LM_FFMPEG", "npm install ffmpeg-static", "apt-get install ffmpeg"]) {
      expect((none as AudioError).message).toContain(fix);
    }
    expect((none as AudioError).message).toMatch(/^Reading audio needs ffmpeg/);
    // A directory with ffmpeg and no ffprobe is enough for audio.
    const onlyFfmpeg = path.join(tmp, "only");
    fs.mkdirSync(onlyFfmpeg, { recursive: true });
    fs.symlinkSync(realFfmpeg, path.join(onlyFfmpeg, "ffmpeg"));
    expect(findFfmpegBinary(undefined, { PATH: onlyFfmpeg }, "audio")).toEqual({ ffmpeg: path.join(onlyFfmpeg, "ffmpeg"), source: "PATH" });
    expectNothingLeft();
  });

  it("runTool for audio: a binary that cannot start is an AudioError", async () => {
    const error = await rejection(runTool(path.join(tmp, "gone"), [], { what: "ffmpeg", media: "audio", deadline: performance.now() + 10_000, timeoutMs: 10_000 }));
    expect(error).toBeInstanceOf(AudioError);
    expect(error.code).toBe("E_FFMPEG_NOT_FOUND");
    expect(runningChildren()).toBe(0);
  });

  it("ffmpeg is asked for mono f32le at the rate, from a local file, with the guards", async () => {
    const log = path.join(tmp, "args.log");
    const logging = script("ffmpeg-logging", `printf '%s\\n' "$@" > '${log}'\nexec '${realFfmpeg}' "$@"`);
    await loadAudio(wav, 22_050, { ffmpegPath: logging });
    const args = fs.readFileSync(log, "utf8").trim().split("\n");
    expect(args).toEqual(audioDecodeArgs(wav, 22_050));
    expect(args.slice(0, 4)).toEqual(["-nostdin", "-hide_banner", "-loglevel", "error"]);
    expect(args[args.indexOf("-protocol_whitelist") + 1]).toBe("file");
    expect(args[args.indexOf("-format_whitelist") + 1]).not.toMatch(/hls|dash|concat|image2|tee/);
    expect(args[args.indexOf("-i") + 1]).toBe(`file:${wav}`);
    expect(args[args.indexOf("-ac") + 1]).toBe("1");
    expect(args[args.indexOf("-ar") + 1]).toBe("22050");
    expect(args.slice(-3)).toEqual(["-f", "f32le", "pipe:1"]);
    for (const flag of ["-vn", "-sn", "-dn"]) expect(args).toContain(flag);
    expectNothingLeft();
  });
});
