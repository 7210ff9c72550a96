// loadAudio (ffmpeg) against llama.cpp's own audio loader: the decoded PCM must equal what
// mtmd-helper's miniaudio decoder gives for the same file, to within 1e-4.
//
// The reference is a tiny C++ program built here with g++ from the vendored tree: its miniaudio
// defines and its `audio_helpers` namespace (is_audio_file, decode_audio_from_buf) are copied
// verbatim out of vendor/llama.cpp/tools/mtmd/mtmd-helper.cpp at test time, and its main() reads
// the whole file as mtmd_helper_bitmap_init_from_file does and takes the audio path of
// mtmd_helper_bitmap_init_from_buf, writing the f32 samples it would hand to mtmd to stdout. The
// binary is cached in .cache/miniaudio-reference/ under a hash of its source, miniaudio.h, the
// compiler and the flags (a cold build takes about 10 s).
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadAudio } from "../src/media/audio.js";
import { rejection } from "./helpers/rejection.js";

const root = path.resolve(import.meta.dirname, "..");
const VENDOR = path.join(root, "vendor", "llama.cpp", "vendor");
const MINIAUDIO = path.join(VENDOR, "miniaudio", "miniaudio.h");
const MTMD_HELPER = path.join(root, "vendor", "llama.cpp", "tools", "mtmd", "mtmd-helper.cpp");
const CXX = "g++";
// mtmd-helper.cpp's own flags in a Release build (see build/compile_commands.json), plus -w:
// miniaudio with MA_API static leaves many unused functions.
const CXX_FLAGS = ["-std=gnu++17", "-O3", "-DNDEBUG", "-w"];
const RATE = 16_000; // every audio projector llama.cpp has so far (Whisper, Ultravox, Qwen2-Audio...)

const missing = spawnSync(CXX, ["--version"]).status !== 0 ? `${CXX} is not on PATH (Debian/Ubuntu: apt-get install build-essential)` : !fs.existsSync(MINIAUDIO) ? `${MINIAUDIO} is missing (npm run vendor)` : undefined;
if (missing) console.warn(`Skipping the miniaudio reference tests: ${missing}.`);

const MAIN = String.raw`
// Reads the whole file (mtmd_helper_bitmap_init_from_file), then mtmd_helper_bitmap_init_from_buf's
// audio path: exit 2 when is_audio_file says it is not audio (mtmd would try it as an image or a
// video), 3 when decode_audio_from_buf fails; else the float samples on stdout.
int main(int argc, char ** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <file> <sample rate>\n", argv[0]);
        return 64;
    }
    FILE * f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 66;
    }
    std::vector<unsigned char> buf;
    unsigned char chunk[1 << 16];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf.insert(buf.end(), chunk, chunk + n);
    fclose(f);
    if (!audio_helpers::is_audio_file((const char *) buf.data(), buf.size())) {
        fprintf(stderr, "not an audio file to mtmd (is_audio_file)\n");
        return 2;
    }
    std::vector<float> pcm;
    if (!audio_helpers::decode_audio_from_buf(buf.data(), buf.size(), atoi(argv[2]), pcm)) {
        fprintf(stderr, "Unable to read WAV audio file from buffer\n");
        return 3;
    }
    fwrite(pcm.data(), sizeof(float), pcm.size(), stdout);
    return 0;
}
`;

/** The reference program's source: mtmd-helper.cpp's miniaudio defines and audio loader, verbatim, and MAIN. */
function referenceSource(): string {
  const helper = fs.readFileSync(MTMD_HELPER, "utf8");
  const defines = /^#define MINIAUDIO_IMPLEMENTATION$[\s\S]*?^#include "miniaudio\/miniaudio\.h"$/m.exec(helper)?.[0];
  const loader = /^namespace audio_helpers \{$[\s\S]*?^\} \/\/ namespace audio_helpers$/m.exec(helper)?.[0];
  if (!defines || !loader || !loader.includes("ma_decoder_config_init(ma_format_f32")) {
    throw new Error(`${MTMD_HELPER}: its miniaudio defines or its audio_helpers namespace were not found; update this test to llama.cpp's audio loader.`);
  }
  return ["#include <cstdio>", "#include <cstdlib>", "#include <cstring>", "#include <vector>", "", defines, "", loader, MAIN].join("\n");
}

/** Compiles the reference decoder into .cache/miniaudio-reference (once per source, header, compiler and flags); returns its path. */
function buildReference(): string {
  const source = referenceSource();
  const compiler = spawnSync(CXX, ["--version"], { encoding: "utf8" }).stdout;
  const hash = createHash("sha256").update(source).update(fs.readFileSync(MINIAUDIO)).update(compiler).update(CXX_FLAGS.join(" ")).digest("hex").slice(0, 16);
  const dir = path.join(root, ".cache", "miniaudio-reference");
  const binary = path.join(dir, `mtmd-audio-decode-${hash}`);
  if (fs.existsSync(binary)) return binary;
  fs.mkdirSync(dir, { recursive: true });
  const cpp = path.join(dir, `mtmd-audio-decode-${hash}.cpp`);
  fs.writeFileSync(cpp, source);
  // Built under a private name and renamed, so a parallel run never sees half a binary.
  const partial = `${binary}.${process.pid}.partial`;
  const r = spawnSync(CXX, [...CXX_FLAGS, `-I${VENDOR}`, cpp, "-o", partial, "-pthread", "-lm", "-ldl"], { encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) throw new Error(`${CXX} could not build the miniaudio reference (${r.status ?? r.signal}):\n${r.stderr}`);
  fs.renameSync(partial, binary);
  return binary;
}

let reference: string;
let tmp: string;

interface MiniaudioResult {
  /** 0 decoded, 2 not audio to mtmd (is_audio_file), 3 decode_audio_from_buf failed. */
  status: number | null;
  pcm: Float32Array;
}

/** What llama.cpp's loader gives for `file` at RATE. */
function miniaudio(file: string): MiniaudioResult {
  const r = spawnSync(reference, [file, String(RATE)], { maxBuffer: 1 << 30, timeout: 60_000 });
  if (r.status !== 0 && r.status !== 2 && r.status !== 3) throw new Error(`the miniaudio reference failed on ${file} (${r.status ?? r.signal}): ${r.stderr.toString()}`);
  const pcm = new Float32Array(Math.floor(r.stdout.length / 4)); // host-order floats, copied to an aligned buffer
  new Uint8Array(pcm.buffer).set(r.stdout.subarray(0, pcm.byteLength));
  return { status: r.status, pcm };
}

/** The largest |a[i] - b[i]| over the first `n` samples. */
function maxDiff(a: Float32Array, b: Float32Array, n = Math.min(a.length, b.length)): number {
  let worst = 0;
  for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** Samples decode_audio_from_buf really read: mtmd sizes its buffer to the length in the header and leaves the rest zero. */
function framesRead(pcm: Float32Array): number {
  let n = pcm.length;
  while (n > 0 && pcm[n - 1] === 0) n--;
  return n;
}

function ffmpeg(args: string[]): void {
  const r = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", ...args], { encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(" ")} failed: ${r.stderr}`);
}

/** `file` with bytes [from, to) overwritten by a fixed pseudo-random sequence. */
function garble(from: string, to: string, start: number, end: number): string {
  const bytes = fs.readFileSync(from);
  let x = 0x9e3779b9;
  for (let i = start; i < end; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  fs.writeFileSync(to, bytes);
  return to;
}

const clip = (name: string) => path.join(tmp, name);

describe.skipIf(missing !== undefined)("loadAudio against llama.cpp's miniaudio loader (mtmd-helper)", () => {
  beforeAll(() => {
    reference = buildReference();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-audio-reference-"));
    // 2 s at 16 kHz, mono s16: a 440 Hz sine mixed with noise (every sample value matters).
    ffmpeg([
      ...["-f", "lavfi", "-i", `sine=frequency=440:sample_rate=${RATE}:duration=2`],
      ...["-f", "lavfi", "-i", `anoisesrc=sample_rate=${RATE}:duration=2:amplitude=0.1:seed=7`],
      ...["-filter_complex", "amix=inputs=2:duration=first", "-ac", "1", "-c:a", "pcm_s16le", clip("mono.wav")],
    ]);
    // 2 s at 16 kHz, stereo s16, loud and different in each channel: L + R would clip, (L + R) / √2 would be too loud.
    ffmpeg(["-f", "lavfi", "-i", `aevalsrc=0.9*sin(2*PI*440*t)|0.8*sin(2*PI*1000*t+1):s=${RATE}:d=2`, "-c:a", "pcm_s16le", clip("stereo.wav")]);
    ffmpeg(["-i", clip("mono.wav"), "-c:a", "libmp3lame", "-b:a", "64k", clip("mono.mp3")]);
    ffmpeg(["-i", clip("mono.wav"), "-c:a", "flac", clip("mono.flac")]);
    ffmpeg(["-f", "lavfi", "-i", "color=c=red:s=64x48:r=8:d=1", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", clip("silent.mp4")]);
  }, 600_000);
  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it.each([
    ["a 16 kHz mono s16 WAV", "mono.wav"],
    // ffmpeg's stereo → mono matrix is (L + R) / √2; with -rematrix_maxval 1 it is (L + R) / 2, miniaudio's average.
    ["a 16 kHz stereo s16 WAV (the channels averaged)", "stereo.wav"],
    ["a FLAC", "mono.flac"],
  ])("%s: the same length and every sample within 1e-4", async (_, name) => {
    const ours = await loadAudio(clip(name), RATE);
    const theirs = miniaudio(clip(name));
    expect(theirs.status).toBe(0);
    expect(ours.samples).toBe(2 * RATE);
    expect(ours.samples).toBe(theirs.pcm.length);
    const diff = maxDiff(ours.pcm, theirs.pcm);
    console.log(`miniaudio vs loadAudio, ${name}: max |diff| ${diff.toExponential(2)} over ${ours.samples} samples`);
    // Measured: 0 (both give s16 / 32768 at the source rate, and (L + R) / 2 exactly).
    expect(diff).toBeLessThanOrEqual(1e-4);
  });

  it("an MP3: the same length (both honour the LAME gapless header), every sample within 1e-4", async () => {
    const ours = await loadAudio(clip("mono.mp3"), RATE);
    const theirs = miniaudio(clip("mono.mp3"));
    expect(theirs.status).toBe(0);
    expect(ours.samples).toBe(2 * RATE);
    expect(ours.samples).toBe(theirs.pcm.length);
    const diff = maxDiff(ours.pcm, theirs.pcm);
    console.log(`miniaudio vs loadAudio, mono.mp3: max |diff| ${diff.toExponential(2)} over ${ours.samples} samples`);
    // Two different float MP3 decoders (ffmpeg's mp3float, miniaudio's dr_mp3) on the same frames:
    // measured 1.5e-5 (ffmpeg 5.1, libmp3lame 64 kb/s), well inside the 1e-4 asked for.
    expect(diff).toBeLessThanOrEqual(1e-4);
  });

  it("a truncated MP3 decodes what is there, as miniaudio does (which pads to the header's length with zeros)", async () => {
    const full = fs.readFileSync(clip("mono.mp3"));
    fs.writeFileSync(clip("truncated.mp3"), full.subarray(0, Math.floor(full.length / 2)));
    const whole = await loadAudio(clip("mono.mp3"), RATE);
    const ours = await loadAudio(clip("truncated.mp3"), RATE);
    const theirs = miniaudio(clip("truncated.mp3"));
    expect(theirs.status).toBe(0);
    const read = framesRead(theirs.pcm);
    console.log(`truncated MP3: loadAudio ${ours.samples} samples, miniaudio read ${read} of ${theirs.pcm.length}`);
    // About half the sound; ffmpeg also decodes the last (cut) frame, miniaudio drops it (measured 15 599 and 15 023).
    expect(ours.samples).toBeGreaterThan(0.35 * whole.samples);
    expect(ours.samples).toBeLessThan(0.65 * whole.samples);
    expect(Math.abs(ours.samples - read)).toBeLessThanOrEqual(2 * 1152);
    // What both decoded is the start of the whole clip.
    expect(maxDiff(ours.pcm, theirs.pcm, Math.min(ours.samples, read))).toBeLessThanOrEqual(1e-4);
    expect(maxDiff(ours.pcm, whole.pcm)).toBeLessThanOrEqual(1e-4);
  });

  it("an MP3 garbled in its middle third decodes, shorter than the clip, with the sound before the damage intact", async () => {
    const size = fs.statSync(clip("mono.mp3")).size;
    garble(clip("mono.mp3"), clip("garbled.mp3"), Math.floor(size / 3), Math.floor((2 * size) / 3));
    const whole = await loadAudio(clip("mono.mp3"), RATE);
    const ours = await loadAudio(clip("garbled.mp3"), RATE);
    const theirs = miniaudio(clip("garbled.mp3"));
    expect(theirs.status).toBe(0);
    console.log(`garbled MP3: loadAudio ${ours.samples} samples, miniaudio read ${framesRead(theirs.pcm)} of ${theirs.pcm.length}`);
    // ffmpeg skips the frames it cannot parse: no error, fewer samples (measured 20 207 of 32 000).
    expect(ours.samples).toBeGreaterThan(0.25 * whole.samples);
    expect(ours.samples).toBeLessThan(whole.samples);
    // The first quarter (the damage starts a third of the way in) equals the clean clip in both decoders.
    const intact = Math.floor(0.25 * whole.samples);
    expect(maxDiff(ours.pcm, whole.pcm, intact)).toBeLessThanOrEqual(1e-4);
    expect(maxDiff(ours.pcm, theirs.pcm, intact)).toBeLessThanOrEqual(1e-4);
  });

  it("an MP3 with no readable frame (the frames overwritten): E_AUDIO_DECODE, and miniaudio fails too", async () => {
    const bytes = fs.readFileSync(clip("mono.mp3"));
    const id3 = 10 + ((bytes[6]! << 21) | (bytes[7]! << 14) | (bytes[8]! << 7) | bytes[9]!); // the ID3v2 tag's length
    expect(bytes.toString("latin1", 0, 3)).toBe("ID3");
    bytes.fill(0x55, id3);
    fs.writeFileSync(clip("no-frames.mp3"), bytes);
    expect((await rejection(loadAudio(clip("no-frames.mp3"), RATE))).code).toBe("E_AUDIO_DECODE");
    expect(miniaudio(clip("no-frames.mp3")).status).toBe(3);
  });

  it("a video with no audio track: E_AUDIO_DECODE (mtmd does not take it for audio at all)", async () => {
    const error = await rejection(loadAudio(clip("silent.mp4"), RATE));
    expect(error.code).toBe("E_AUDIO_DECODE");
    expect(error.message).toMatch(/has no audio stream/);
    expect(miniaudio(clip("silent.mp4")).status).toBe(2);
  });
});
