// Video sampling and extraction (src/media/video.ts, src/media/ffmpeg.ts) on clips made here
// with ffmpeg: which frames are taken, how many, and how every bad input fails.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { VideoError } from "../src/errors.js";
import { findFfmpeg, runningChildren, runTool } from "../src/media/ffmpeg.js";
import { liveTempDirs, loadVideo, MAX_VIDEO_FRAMES, planFrames, planVideo, validateVideoOptions } from "../src/media/video.js";
import { audioOnlyClip, ffmpegAvailable, frameAt, frameIndex, indexClip, rotateMp4, truncateCopy, vfrClip, withSoundTrack } from "./helpers/clips.js";
import { rejection } from "./helpers/rejection.js";

let tmp: string;
let clip: string; // 8 fps, 4 s: 32 frames, index i at i/8 s
let longClip: string; // 25 fps, 20 s, 320x240: slow enough to abort mid-way
const VFR_TIMES = [0, 0.1, 0.2, 0.3, 1.0, 1.1, 2.5, 2.6, 2.7, 3.0];
let vfr: string;

beforeAll(() => {
  if (!ffmpegAvailable()) throw new Error("The video tests need ffmpeg and ffprobe on PATH (Debian/Ubuntu: apt-get install ffmpeg).");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-video-test-"));
  clip = indexClip(path.join(tmp, "index.mp4"), { fps: 8, seconds: 4 });
  vfr = vfrClip(path.join(tmp, "vfr.mp4"), VFR_TIMES);
  longClip = indexClip(path.join(tmp, "long.mp4"), { fps: 25, seconds: 20, width: 320, height: 240 });
}, 120_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Child processes of this test process that are ffmpeg or ffprobe. */
function ffmpegChildren(): string[] {
  const out = spawnSync("ps", ["-o", "pid=,comm=", "--ppid", String(process.pid)], { encoding: "utf8" }).stdout;
  return out.split("\n").filter((line) => /ff(mpeg|probe)/.test(line));
}

function expectNothingLeft(): void {
  expect(runningChildren()).toBe(0);
  expect(ffmpegChildren()).toEqual([]);
  expect(liveTempDirs()).toBe(0);
}

describe("planFrames", () => {
  it("samples the middle of each 1/fps interval", () => {
    expect(planFrames(4, { fps: 2 })).toEqual({ timestamps: [0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75], step: 0.5 });
    expect(planFrames(10, { fps: 1, start: 2, end: 5 }).timestamps).toEqual([2.5, 3.5, 4.5]);
  });

  it("respects fps, maxFrames and numFrames in every combination", () => {
    for (const duration of [0.1, 0.9, 1, 3.3, 10, 61.7, 3600]) {
      for (const fps of [0.5, 1, 2, 2.5, 30]) {
        for (const maxFrames of [1, 2, 7, 32, 1024]) {
          for (const numFrames of [undefined, 1, 4, 5, 64]) {
            for (const pairs of [false, true]) {
              const { timestamps: t, step } = planFrames(duration, { fps, maxFrames, numFrames, pairs });
              const what = JSON.stringify({ duration, fps, maxFrames, numFrames, pairs });
              const natural = Math.max(1, Math.ceil(duration * fps - 0.5 - 1e-9));
              let expected: number;
              if (numFrames !== undefined) expected = pairs && numFrames % 2 ? numFrames + 1 : numFrames;
              else {
                expected = Math.min(natural, maxFrames);
                if (pairs) expected = expected === 1 ? 2 : expected - (expected % 2);
              }
              expect(t.length, what).toBe(expected);
              if (numFrames === undefined && !(pairs && Math.min(natural, maxFrames) === 1)) expect(t.length, what).toBeLessThanOrEqual(maxFrames);
              // Inside the clip, ascending, evenly spaced at the plan's step.
              for (const x of t) expect(x > 0 && x < duration, what).toBe(true);
              for (let i = 1; i < t.length; i++) {
                const gap = t[i]! - t[i - 1]!;
                if (gap !== 0) expect(gap, what).toBeCloseTo(step, 9);
              }
              // Uncapped fps sampling keeps the fps; capped or counted sampling spans the clip.
              if (numFrames === undefined && natural <= maxFrames && natural > 1) expect(step, what).toBeCloseTo(1 / fps, 12);
              if (numFrames !== undefined || natural > maxFrames) expect(step * (t.length - (pairs && t.length === 2 && t[0] === t[1] ? 1 : 0)), what).toBeCloseTo(duration, 9);
            }
          }
        }
      }
    }
  });

  it("rejects start past the end", () => {
    expect(() => planFrames(4, { start: 4 })).toThrow(/start/);
    expect(() => planFrames(4, { start: 3, end: 2 })).toThrow(/start/);
  });
});

describe("loadVideo: the frames taken are the planned instants", () => {
  it.each([
    [{}, [2, 6, 10, 14, 18, 22, 26, 30]],
    [{ fps: 3 }, [1, 4, 6, 9, 12, 14, 17, 20, 22, 25, 28, 30]],
    [{ fps: 20, maxFrames: 1024 }, Array.from({ length: 80 }, (_, k) => Math.floor((k + 0.5) * 0.05 * 8 + 1e-9))],
    [{ maxFrames: 4 }, [4, 12, 20, 28]],
    [{ numFrames: 5 }, [3, 9, 16, 22, 28]],
    [{ fps: 2, maxFrames: 3, numFrames: 2 }, [8, 24]],
    [{ start: 1.1, end: 2 }, [10, 14]],
    [{ start: 3.9 }, [31]],
  ] as const)("%j", async (options, expected) => {
    const video = await loadVideo(clip, options);
    expect(video.frames.map(frameIndex)).toEqual(expected);
    // Each instant's frame is the one on screen then (frame i is shown from i/8 s).
    for (const f of video.frames) expect(frameIndex(f)).toBe(Math.floor(f.timestamp * 8 + 1e-9));
    expect(video.info).toMatchObject({ duration: 4, fps: 8, frameCount: 32, width: 64, height: 48, rotation: 0, codec: "h264", hasAudio: false });
  });

  it("pairs: an even count for models that merge frames", async () => {
    const odd = await loadVideo(clip, { fps: 2, maxFrames: 7 }, { pairs: true });
    expect(odd.frames).toHaveLength(6);
    const one = await loadVideo(clip, { numFrames: 1 }, { pairs: true });
    expect(one.frames.map(frameIndex)).toEqual([8, 24]);
    const single = await loadVideo(clip, { fps: 2, maxFrames: 1 }, { pairs: true });
    expect(single.frames.map(frameIndex)).toEqual([16, 16]);
    expect(single.frames[0]!.id).toBe(single.frames[1]!.id);
  });

  it("a sound track changes nothing: the same frames, each taken once (no copies of the first filling the start)", async () => {
    const withSound = withSoundTrack(clip, path.join(tmp, "index-sound.mp4"), 4);
    for (const options of [{}, { fps: 3 }, { numFrames: 5 }, { start: 1.1, end: 2 }]) {
      const silent = await loadVideo(clip, options);
      const sound = await loadVideo(withSound, options);
      expect(sound.info.hasAudio).toBe(true);
      expect(sound.frames.map(frameIndex), JSON.stringify(options)).toEqual(silent.frames.map(frameIndex));
    }
  });

  it("audio: the sound between start and end, decoded at the rate asked for, before any frame", async () => {
    const withSound = withSoundTrack(clip, path.join(tmp, "index-sound-2.mp4"), 4);
    const video = await loadVideo(withSound, { fps: 1, audio: true }, { audioSampleRate: 8000 });
    expect(video.audio).toMatchObject({ sampleRate: 8000 });
    expect(Math.abs(video.audio!.samples - 4 * 8000)).toBeLessThan(0.05 * 8000);
    const part = await loadVideo(withSound, { fps: 1, start: 1, end: 2.5, audio: true }, { audioSampleRate: 8000 });
    expect(Math.abs(part.audio!.seconds - 1.5)).toBeLessThan(0.05);
    expect((await planVideo(withSound, { audio: true }, { audioSampleRate: 8000 })).audio?.samples).toBe(video.audio!.samples);
    expect(await loadVideo(withSound, { fps: 1 })).not.toHaveProperty("audio");
    const tooLong = await rejection(loadVideo(withSound, { audio: true }, { audioOptions: { maxSeconds: 1 } }));
    expect(tooLong.code).toBe("E_AUDIO_TOO_LONG");
    const silent = await rejection(loadVideo(clip, { audio: true }));
    expect(silent).toMatchObject({ code: "E_AUDIO_DECODE" });
    expect(silent.message).toMatch(/has no sound track.*Leave audio off/);
    expect((await rejection(loadVideo(clip, { audio: "yes" } as never))).message).toMatch(/audio/);
    expectNothingLeft();
  });

  it("a VFR clip: each instant gets the frame on screen then", async () => {
    for (const fps of [1, 2, 4, 7]) {
      const video = await loadVideo(vfr, { fps, maxFrames: 100 });
      expect(video.frames.length).toBeGreaterThan(0);
      expect(video.frames.map(frameIndex), `fps ${fps}`).toEqual(video.frames.map((f) => frameAt(VFR_TIMES, f.timestamp)));
    }
  });

  it("a rotated clip is decoded upright", async () => {
    const file = rotateMp4(indexClip(path.join(tmp, "rotated.mp4"), { fps: 4, seconds: 1, width: 64, height: 32 }));
    const video = await loadVideo(file, {});
    expect(video.info).toMatchObject({ rotation: 90, width: 32, height: 64 });
    expect(video.frames.map((f) => [f.width, f.height, frameIndex(f)])).toEqual([
      [32, 64, 1],
      [32, 64, 3],
    ]);
  });

  it("applies the per-frame pixel budget", async () => {
    const small = await loadVideo(longClip, { numFrames: 2, maxPixels: 80 * 60 });
    expect(small.frames.map((f) => [f.width, f.height])).toEqual([
      [80, 60],
      [80, 60],
    ]);
    const big = await loadVideo(clip, { numFrames: 1, minPixels: 128 * 96 });
    expect([big.frames[0]!.width, big.frames[0]!.height]).toEqual([128, 96]);
    expect(big.frames[0]!.data.length).toBe(128 * 96 * 3);
  });

  it("reports progress, ids and the plan without decoding", async () => {
    const seen: number[] = [];
    const video = await loadVideo(clip, { numFrames: 4, onProgress: (f) => seen.push(f) });
    expect(seen).toEqual([0.25, 0.5, 0.75, 1]);
    expect(new Set(video.frames.map((f) => f.id)).size).toBe(4);
    expect(video.id).toMatch(/^[0-9a-f]{64}$/);
    const plan = await planVideo(clip, { numFrames: 4, maxPixels: 32 * 24 });
    expect(plan).toMatchObject({ timestamps: [0.5, 1.5, 2.5, 3.5], width: 32, height: 24 });
  });
});

describe("loadVideo sources", () => {
  let server: http.Server;
  let base: string;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      if (req.url === "/clip.mp4") res.end(fs.readFileSync(clip));
      else if (req.url === "/redirect") res.writeHead(302, { location: "/clip.mp4" }).end();
      else res.writeHead(404).end("not found");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("path, file:// URL, URL object, Buffer, Uint8Array, data: URL and http(s) give the same frames", async () => {
    const bytes = fs.readFileSync(clip);
    const inputs = [
      clip,
      path.relative(process.cwd(), clip),
      pathToFileURL(clip).href,
      pathToFileURL(clip),
      bytes,
      new Uint8Array(bytes),
      `data:video/mp4;base64,${bytes.toString("base64")}`,
      `${base}/clip.mp4`,
      `${base}/redirect`,
    ];
    const expected = (await loadVideo(clip, { numFrames: 4 })).frames.map((f) => f.id);
    for (const input of inputs) {
      const video = await loadVideo(input, { numFrames: 4 });
      expect(video.frames.map((f) => f.id), String(input).slice(0, 40)).toEqual(expected);
    }
    expectNothingLeft();
  });

  it("download errors and limits", async () => {
    expect((await rejection(loadVideo(`${base}/missing.mp4`))).code).toBe("E_FETCH");
    const capped = await rejection(loadVideo(`${base}/clip.mp4`, { fetch: { maxBytes: 100 } }));
    expect(capped.code).toBe("E_FETCH");
    expect(capped.message).toMatch(/100-byte limit/);
    expectNothingLeft();
  });
});

describe("finding ffmpeg", () => {
  it("explicit option, then MULTIMODAL_LM_FFMPEG, then PATH; ffprobe next to ffmpeg", () => {
    const onPath = findFfmpeg({}, { PATH: process.env.PATH });
    expect(onPath.source).toBe("PATH");
    expect(onPath.ffprobe).toBe(path.join(path.dirname(onPath.ffmpeg), "ffprobe"));
    const link = path.join(tmp, "bin");
    fs.mkdirSync(link, { recursive: true });
    fs.symlinkSync(onPath.ffmpeg, path.join(link, "my-ffmpeg"));
    expect(findFfmpeg({}, { PATH: "", MULTIMODAL_LM_FFMPEG: path.join(link, "my-ffmpeg"), MULTIMODAL_LM_FFPROBE: onPath.ffprobe })).toMatchObject({
      source: "MULTIMODAL_LM_FFMPEG",
      ffmpeg: path.join(link, "my-ffmpeg"),
    });
    expect(findFfmpeg({ ffmpeg: onPath.ffmpeg }, { PATH: "", MULTIMODAL_LM_FFMPEG: "/nonexistent" }).source).toBe("option");
  });

  it("none found: E_FFMPEG_NOT_FOUND naming all four fixes", () => {
    let error: unknown;
    try {
      findFfmpeg({}, { PATH: path.join(tmp, "empty") });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(VideoError);
    expect((error as VideoError).code).toBe("E_FFMPEG_NOT_FOUND");
    const message = (error as VideoError).message;
    for (const fix of ["ffmpeg option", "MULTIMODAL_LM_FFMPEG", "npm install ffmpeg-static", "apt-get install ffmpeg"]) expect(message).toContain(fix);
    expect(() => findFfmpeg({ ffmpeg: path.join(tmp, "nope") }, {})).toThrow(/not an executable file/);
    const onlyFfmpeg = path.join(tmp, "only");
    fs.mkdirSync(onlyFfmpeg, { recursive: true });
    fs.symlinkSync(findFfmpeg().ffmpeg, path.join(onlyFfmpeg, "ffmpeg"));
    expect(() => findFfmpeg({}, { PATH: onlyFfmpeg })).toThrow(/needs ffprobe[\s\S]*ffprobe-static/);
  });

  it("loadVideo with a missing ffmpeg rejects with E_FFMPEG_NOT_FOUND", async () => {
    const error = await rejection(loadVideo(clip, { ffmpeg: path.join(tmp, "no-ffmpeg") }));
    expect(error.code).toBe("E_FFMPEG_NOT_FOUND");
    expectNothingLeft();
  });
});

describe("loadVideo: bad input", () => {
  it("an HLS playlist that references file:///etc/passwd is refused", async () => {
    const playlist = path.join(tmp, "evil.m3u8");
    fs.writeFileSync(playlist, "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n");
    const error = await rejection(loadVideo(playlist));
    expect(error.code).toBe("E_VIDEO_DECODE");
    expect(error.message).toMatch(/playlists/);
    expectNothingLeft();
  });

  it("ffconcat lists are refused, though ffmpeg alone would follow them", async () => {
    const absolute = path.join(tmp, "absolute.ffconcat");
    fs.writeFileSync(absolute, `ffconcat version 1.0\nfile '${clip}'\nfile '/etc/passwd'\n`);
    // Without the whitelists, ffprobe follows a list's (relative) entries and finds the clip's video.
    const relative = path.join(tmp, "relative.mp4");
    fs.writeFileSync(relative, "ffconcat version 1.0\nfile 'index.mp4'\n");
    const unguarded = spawnSync("ffprobe", ["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", relative], { encoding: "utf8" });
    expect(unguarded.stdout.trim()).toBe("h264");
    for (const list of [absolute, relative]) {
      const error = await rejection(loadVideo(list));
      expect(error.code).toBe("E_VIDEO_DECODE");
      expect(error.message).toMatch(/concat lists are refused/);
    }
    // The same bytes as a Buffer go through a temp file: refused too, and the temp file is gone.
    expect((await rejection(loadVideo(fs.readFileSync(absolute)))).code).toBe("E_VIDEO_DECODE");
    expectNothingLeft();
  });

  it("truncated MP4s: moov missing, and data missing after a fast-start moov", async () => {
    const cut = truncateCopy(clip, path.join(tmp, "cut.mp4"), 0.5);
    const e1 = await rejection(loadVideo(cut));
    expect(e1.code).toBe("E_VIDEO_DECODE");
    expect(e1.message).toMatch(/moov atom not found/);
    const faststart = indexClip(path.join(tmp, "faststart.mp4"), { fps: 25, seconds: 8, width: 160, height: 120, extra: ["-movflags", "+faststart"] });
    const cut2 = truncateCopy(faststart, path.join(tmp, "cut2.mp4"), 0.5);
    const e2 = await rejection(loadVideo(cut2, { fps: 2 }));
    expect(e2.code).toBe("E_VIDEO_DECODE");
    expect(e2.message).toMatch(/truncated or corrupt/);
    expectNothingLeft();
  });

  it("a non-video file, an audio-only file and a zero-length file", async () => {
    const text = path.join(tmp, "notes.txt");
    fs.writeFileSync(text, "just some text, not a video\n".repeat(50));
    expect((await rejection(loadVideo(text))).code).toBe("E_VIDEO_DECODE");
    const png = await rejection(loadVideo(Buffer.from("89504e470d0a1a0a0000000d49484452", "hex")));
    expect(png.code).toBe("E_VIDEO_DECODE");
    const audio = await rejection(loadVideo(audioOnlyClip(path.join(tmp, "audio.m4a"))));
    expect(audio.code).toBe("E_VIDEO_DECODE");
    expect(audio.message).toMatch(/audio but no video stream/);
    const empty = path.join(tmp, "empty.mp4");
    fs.writeFileSync(empty, "");
    expect((await rejection(loadVideo(empty))).message).toMatch(/empty \(0 bytes\)/);
    expect((await rejection(loadVideo(Buffer.alloc(0)))).code).toBe("E_VIDEO_DECODE");
    expectNothingLeft();
  });

  it("missing files, bad URLs and bad base64", async () => {
    expect((await rejection(loadVideo(path.join(tmp, "missing.mp4")))).code).toBe("E_FILE_NOT_FOUND");
    expect((await rejection(loadVideo(tmp))).message).toMatch(/is a directory/);
    expect((await rejection(loadVideo("ftp://example.com/a.mp4"))).code).toBe("E_INVALID_ARGUMENT");
    const b64 = await rejection(loadVideo("data:video/mp4;base64,AAAA*AAA"));
    expect(b64).toBeInstanceOf(VideoError);
    expect(b64.code).toBe("E_INVALID_DATA_URL");
    expect(b64.message).toMatch(/data:video/);
    expect((await rejection(loadVideo(42 as unknown as string))).code).toBe("E_INVALID_ARGUMENT");
  });

  it("bad options: fps 0, maxFrames 1e6, start past the end, unknown keys", async () => {
    const fps = await rejection(loadVideo(clip, { fps: 0 }));
    expect(fps.code).toBe("E_INVALID_ARGUMENT");
    expect(fps.message).toBe("Expected a number greater than 0 and at most 1000 for options.fps but received 0 of type number");
    const max = await rejection(loadVideo(clip, { maxFrames: 1e6 }));
    expect(max.message).toBe(`Expected an integer between 1 and ${MAX_VIDEO_FRAMES} for options.maxFrames but received 1000000 of type number`);
    expect((await rejection(loadVideo(clip, { numFrames: 0 }))).code).toBe("E_INVALID_ARGUMENT");
    expect((await rejection(loadVideo(clip, { start: 2, end: 1 }))).code).toBe("E_INVALID_ARGUMENT");
    expect((await rejection(loadVideo(clip, { start: 10 }))).message).toMatch(/before the end of the video \(4 s\)/);
    expect((await rejection(loadVideo(clip, { frames: 3 } as never))).message).toMatch(/Unknown option frames/);
    expect((await rejection(loadVideo(clip, { timestamps: -1 }))).message).toMatch(/options\.timestamps/);
    expect((await rejection(loadVideo(clip, { prefix: 3 as never }))).message).toMatch(/options\.prefix/);
    expect((await rejection(loadVideo(clip, { minPixels: 100, maxPixels: 10 }))).message).toMatch(/options\.minPixels/);
    expect((await rejection(loadVideo(clip, { limitInputPixels: 0 }))).message).toMatch(/options\.limitInputPixels/);
    expectNothingLeft();
  });

  it("defaults: 2 fps, 32 frames, 1 GiB of frames, 300 s, 5 s timestamps, a 256 MiB download cap", () => {
    expect(validateVideoOptions({})).toMatchObject({
      fps: 2,
      maxFrames: 32,
      maxTotalBytes: 1024 ** 3,
      timeoutMs: 300_000,
      timestamps: 5,
      prefix: "Video:",
      limitInputPixels: 100_000_000,
      fetch: { maxBytes: 256 * 1024 * 1024, timeoutMs: 30_000, maxRedirects: 5 },
    });
    expect(validateVideoOptions({ fetch: { timeoutMs: 5 } }).fetch).toEqual({ maxBytes: 256 * 1024 * 1024, timeoutMs: 5, maxRedirects: 5 });
    expect(validateVideoOptions({ fetch: { maxBytes: 10 } }).fetch.maxBytes).toBe(10);
    expect(validateVideoOptions({ timestamps: false }).timestamps).toBe(0);
  });

  it("a binary that cannot be started rejects with E_FFMPEG_NOT_FOUND instead of hanging", async () => {
    const notExecutable = path.join(tmp, "not-executable");
    fs.writeFileSync(notExecutable, "#!/bin/sh\n", { mode: 0o644 });
    for (const bin of [path.join(tmp, "gone"), notExecutable]) {
      const error = await rejection(runTool(bin, [], { what: "ffmpeg", deadline: performance.now() + 10_000, timeoutMs: 10_000 }));
      expect(error.code).toBe("E_FFMPEG_NOT_FOUND");
    }
    expect(runningChildren()).toBe(0);
  });

  it("caps: frame bytes and frame pixels", async () => {
    const bytes = await rejection(loadVideo(clip, { numFrames: 10, maxTotalBytes: 64 * 48 * 3 * 9 }));
    expect(bytes.code).toBe("E_VIDEO_TOO_LARGE");
    expect(bytes.message).toMatch(/10 frames of 64×48 need 92160 bytes/);
    expect((await loadVideo(clip, { numFrames: 10, maxTotalBytes: 64 * 48 * 3 * 10 })).frames).toHaveLength(10);
    const pixels = await rejection(loadVideo(clip, { limitInputPixels: 1000 }));
    expect(pixels.code).toBe("E_VIDEO_TOO_LARGE");
    expectNothingLeft();
  });

  it("abort in the middle of extraction kills ffmpeg and removes the temp file", async () => {
    for (const input of [longClip, fs.readFileSync(longClip)]) {
      const controller = new AbortController();
      let progress = 0;
      const promise = loadVideo(input, {
        fps: 25,
        maxFrames: 500,
        signal: controller.signal,
        onProgress: (f) => {
          progress = f;
          if (f > 0.1) controller.abort(new Error("enough"));
        },
      });
      const error = await rejection(promise);
      expect(error.code).toBe("E_ABORTED");
      expect(progress).toBeGreaterThan(0.1);
      expect(progress).toBeLessThan(1);
      expectNothingLeft();
    }
    const already = new AbortController();
    already.abort();
    expect((await rejection(loadVideo(clip, { signal: already.signal }))).code).toBe("E_ABORTED");
  });

  it("a wall-clock timeout kills ffmpeg", async () => {
    const error = await rejection(loadVideo(fs.readFileSync(longClip), { fps: 25, maxFrames: 500, timeoutMs: 150 }));
    expect(error.code).toBe("E_VIDEO_TIMEOUT");
    expect(error.message).toMatch(/timeoutMs of 150 ms/);
    expectNothingLeft();
  });
});

describe("extraction stays bounded", () => {
  it("ffmpeg is asked for exactly the planned frames, from a local file, with the guards", async () => {
    // Check the command line through a wrapper that logs its arguments.
    const real = findFfmpeg().ffmpeg;
    const wrapper = path.join(tmp, "ffmpeg-logging");
    const log = path.join(tmp, "args.log");
    fs.writeFileSync(wrapper, `#!/bin/sh\nprintf '%s\\n' "$@" > '${log}'\nexec '${real}' "$@"\n`, { mode: 0o755 });
    await loadVideo(clip, { numFrames: 3, ffmpeg: wrapper, ffprobe: findFfmpeg().ffprobe });
    const args = fs.readFileSync(log, "utf8").trim().split("\n");
    expect(args).toContain("-nostdin");
    expect(args[args.indexOf("-protocol_whitelist") + 1]).toBe("file");
    expect(args[args.indexOf("-format_whitelist") + 1]).not.toMatch(/hls|concat|image2/);
    expect(args[args.indexOf("-i") + 1]).toBe(`file:${clip}`);
    expect(args[args.indexOf("-frames:v") + 1]).toBe("3");
    expect(execFileSync(real, ["-version"]).toString()).toMatch(/ffmpeg version/);
  });
});
