// Frame extraction benchmark: 16 frames from a 60 s 720p clip with loadVideo, next to baselines
// that decode the whole clip with ffmpeg's `-vf fps=` (as llama.cpp's video helper does).
//   node scripts/bench-video.mjs [--runs 3] [--gop 250] [--keep]
// The clip is generated with ffmpeg (testsrc2, H.264) into .cache/bench-video/ and reused.
// This is a report, not a test: it prints times and ratios and never fails on them.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { loadVideo } from "../lib/media/video.js";

const { values } = parseArgs({ options: { runs: { type: "string" }, gop: { type: "string" } } });
const runs = Number(values.runs ?? 3);
const gop = Number(values.gop ?? 250);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dir = path.join(root, ".cache", "bench-video");
fs.mkdirSync(dir, { recursive: true });
const clip = path.join(dir, `720p-60s-gop${gop}.mp4`);

if (!fs.existsSync(clip)) {
  process.stderr.write(`making ${path.relative(root, clip)} (60 s, 1280x720, 30 fps, H.264, keyframe every ${gop} frames)...\n`);
  const t = performance.now();
  const r = spawnSync(
    "ffmpeg",
    ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=60", "-c:v", "libx264", "-preset", "veryfast", "-g", String(gop), "-pix_fmt", "yuv420p", `${clip}.tmp.mp4`],
    { stdio: "inherit" },
  );
  if (r.status !== 0) throw new Error("could not make the clip (is ffmpeg installed?)");
  fs.renameSync(`${clip}.tmp.mp4`, clip);
  process.stderr.write(`made in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
}

function ffmpegWhole(fps) {
  const t = performance.now();
  const r = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-i", clip, "-vf", `fps=${fps}`, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], {
    maxBuffer: 2 ** 31 - 1,
  });
  if (r.status !== 0) throw new Error(r.stderr.toString());
  return { ms: performance.now() - t, frames: r.stdout.length / (1280 * 720 * 3) };
}

async function ours() {
  const t = performance.now();
  const video = await loadVideo(clip, { numFrames: 16 });
  return { ms: performance.now() - t, frames: video.frames.length };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function measure(name, fn) {
  const samples = [];
  let frames = 0;
  for (let i = 0; i < runs; i++) {
    const r = await fn();
    samples.push(r.ms);
    frames = r.frames;
  }
  return { name, ms: median(samples), frames };
}

const results = [
  await measure("loadVideo numFrames 16 (probe + one ffmpeg, fps filter + -frames:v)", ours),
  await measure("ffmpeg -vf fps=16/60 (whole clip, 16 frames out)", () => ffmpegWhole("16/60")),
  await measure("ffmpeg -vf fps=2 (whole clip, llama.cpp's helper at 2 fps)", () => ffmpegWhole(2)),
];
const base = results[1].ms;
console.log(`clip: ${path.relative(root, clip)}, median of ${runs} runs`);
for (const r of results) console.log(`${r.ms.toFixed(0).padStart(7)} ms  ${String(r.frames).padStart(4)} frames  ${(r.ms / base).toFixed(2)}x  ${r.name}`);
