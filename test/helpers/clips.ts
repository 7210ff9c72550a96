// Test clips made with ffmpeg. In an "index" clip frame i is one flat colour that encodes i:
// red carries i % 16, blue (i / 16) % 16 and green i / 256, each as a level 16·k + 8, which
// survives lossy coding and the YUV round trip (the error is a few levels, the step is 16).
import { spawnSync } from "node:child_process";
import fs from "node:fs";

export function ffmpegAvailable(): boolean {
  return spawnSync("ffmpeg", ["-version"]).status === 0 && spawnSync("ffprobe", ["-version"]).status === 0;
}

/** Runs ffmpeg quietly, overwriting outputs; throws with its stderr when it fails. */
export function ffmpeg(args: string[]): void {
  const r = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", ...args], { encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(" ")} failed: ${r.stderr}`);
}

const X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-pix_fmt", "yuv420p"];
const INDEX_COLOUR = "format=rgb24,geq=r='mod(N,16)*16+8':g='floor(N/256)*16+8':b='mod(floor(N/16),16)*16+8'";

export interface ClipOptions {
  fps: number;
  seconds: number;
  width?: number;
  height?: number;
  /** x264 keyframe interval, in frames. */
  gop?: number;
  /** Extra output arguments (metadata, container flags). */
  extra?: string[];
}

/** A CFR H.264 MP4 whose frame i encodes i. */
export function indexClip(file: string, o: ClipOptions): string {
  const { fps, seconds, width = 64, height = 48 } = o;
  ffmpeg([
    "-f",
    "lavfi",
    "-i",
    `color=c=black:s=${width}x${height}:r=${fps}:d=${seconds}`,
    "-vf",
    INDEX_COLOUR,
    ...X264,
    ...(o.gop ? ["-g", String(o.gop)] : []),
    ...(o.extra ?? []),
    file,
  ]);
  return file;
}

/** A VFR MP4 whose frame i encodes i and is shown from `times[i]` seconds (ascending, from 0) until the next one. */
export function vfrClip(file: string, times: number[]): string {
  // Whole milliseconds in a 1/1000 time base: setpts truncates, so 0.3/TB with TB = 0.1 would give 2.
  const ms = times.map((t) => Math.round(t * 1000));
  const pts = ms.reduceRight((inner, t, i) => (i === ms.length - 1 ? String(t) : `if(eq(N,${i}),${t},${inner})`), "");
  ffmpeg([
    "-f",
    "lavfi",
    "-i",
    `color=c=black:s=64x48:r=10:d=${times.length / 10}`,
    "-vf",
    `${INDEX_COLOUR},settb=1/1000,setpts='${pts}'`,
    "-fps_mode",
    "passthrough",
    // The encoder's time base would otherwise come from a guessed frame rate and round the times.
    "-enc_time_base",
    "1/1000",
    "-video_track_timescale",
    "1000",
    ...X264,
    file,
  ]);
  return file;
}

/** A copy of an MP4 `video` with a sound track muxed in (the video stream copied, a 44.1 kHz AAC sweep for its duration). */
export function withSoundTrack(video: string, file: string, seconds: number): string {
  ffmpeg(["-i", video, "-f", "lavfi", "-i", `aevalsrc=sin(2*PI*(200+150*t)*t):s=44100:d=${seconds}`, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", file]);
  return file;
}

/** An AAC-in-MP4 file with no video stream. */
export function audioOnlyClip(file: string): string {
  ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", file]);
  return file;
}

/** The index a decoded RGB frame encodes (its centre pixel). */
export function frameIndex(frame: { data: Uint8Array; width: number; height: number }): number {
  const at = (Math.floor(frame.height / 2) * frame.width + Math.floor(frame.width / 2)) * 3;
  const level = (v: number) => Math.max(0, Math.min(15, Math.round((v - 8) / 16)));
  return level(frame.data[at + 1]!) * 256 + level(frame.data[at + 2]!) * 16 + level(frame.data[at]!);
}

/** The frame on screen at `t` for frames starting at `times`: the last one starting at or before t. */
export function frameAt(times: number[], t: number): number {
  let index = 0;
  for (let i = 0; i < times.length; i++) if (times[i]! <= t + 1e-9) index = i;
  return index;
}

/** Frames exactly as llama.cpp's video helper asks ffmpeg for them: `-vf fps=F`, rgb24. */
export function llamaCppFrames(file: string, fps: number, width: number, height: number): Buffer[] {
  const r = spawnSync("ffmpeg", ["-nostdin", "-i", file, "-vf", `fps=${fps.toFixed(6)}`, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1", "-loglevel", "error"], {
    maxBuffer: 1 << 30,
  });
  if (r.status !== 0) throw new Error(`ffmpeg failed: ${r.stderr.toString()}`);
  const size = width * height * 3;
  const frames: Buffer[] = [];
  for (let at = 0; at + size <= r.stdout.length; at += size) frames.push(r.stdout.subarray(at, at + size));
  return frames;
}

/** Cuts a file to its first `fraction` of bytes. */
export function truncateCopy(from: string, to: string, fraction: number): string {
  const bytes = fs.readFileSync(from);
  fs.writeFileSync(to, bytes.subarray(0, Math.floor(bytes.length * fraction)));
  return to;
}

/**
 * Sets the display matrix of an MP4's video track to a 90° clockwise rotation, as phones write
 * it (ffmpeg 5.1 has no option for that): the track header's identity matrix is patched in place.
 */
export function rotateMp4(file: string): string {
  const bytes = fs.readFileSync(file);
  const tkhd = bytes.indexOf("tkhd");
  const identity = Buffer.from("000100000000000000000000000000000001000000000000000000000000000040000000", "hex");
  const at = bytes.indexOf(identity, tkhd);
  if (tkhd < 0 || at < 0) throw new Error(`no track header matrix in ${file}`);
  // a = 0, b = 1, c = -1, d = 0 (16.16 fixed point): display = stored rotated 90° clockwise.
  const matrix = [0, 0x00010000, 0, 0xffff0000, 0, 0, 0, 0, 0x40000000];
  matrix.forEach((v, i) => bytes.writeUInt32BE(v, at + 4 * i));
  fs.writeFileSync(file, bytes);
  return file;
}
