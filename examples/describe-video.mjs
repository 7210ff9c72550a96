// Describes a video with MultimodalLM: shows frame extraction progress, streams the text, and
// prints what was sampled and the timings.
//   node examples/describe-video.mjs [video] [--model m.gguf --mmproj mmproj.gguf] [--prompt "..."]
//                                    [--fps 2] [--max-frames 32] [--num-frames N]
// Without --model it uses the tiny generated Qwen2-VL test model (random weights, so the text is
// gibberish, but every step runs for real); without a video, the bundled assets/sample.mp4.
// Needs ffmpeg and ffprobe (Debian/Ubuntu: apt-get install ffmpeg).
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { MultimodalLM } from "multimodal-lm";
import { ensureTestModel } from "multimodal-lm/test-models";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: "string" },
    mmproj: { type: "string" },
    prompt: { type: "string" },
    fps: { type: "string" },
    "max-frames": { type: "string" },
    "num-frames": { type: "string" },
    "max-tokens": { type: "string" },
  },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const video = positionals[0] ?? path.join(root, "assets", "sample.mp4");
const files = values.model ? { model: values.model, mmproj: values.mmproj } : await ensureTestModel("qwen2vl-tiny");
const number = (name) => (values[name] === undefined ? undefined : Number(values[name]));

const lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });
const stream = lm.generateStream({
  prompt: values.prompt ?? "Describe this video.",
  videos: [video],
  video: {
    fps: number("fps"),
    maxFrames: number("max-frames"),
    numFrames: number("num-frames"),
    onProgress: (fraction) => process.stderr.write(`\rextracting frames: ${Math.round(fraction * 100)}%${fraction === 1 ? "\n" : ""}`),
  },
  maxTokens: Number(values["max-tokens"] ?? 64),
});
for await (const piece of stream) process.stdout.write(piece);
const { usage, timings, stopReason, videos } = await stream.result;
const [v] = videos;
console.log(
  `\n\n${v.frames} frames of ${v.width}×${v.height} at ${v.timestamps.map((t) => t.toFixed(2)).join(", ")} s ` +
    `from a ${v.info.duration.toFixed(1)} s ${v.info.codec} video at ${v.info.fps.toFixed(2)} fps`,
);
console.log(`${usage.promptTokens} prompt tokens (${usage.mediaTokens} from ${usage.mediaChunks} media chunks), ${usage.completionTokens} generated (${stopReason})`);
console.log(
  `video load ${timings.imageLoadMs.toFixed(1)} ms, encode ${timings.encodeMs.toFixed(1)} ms, prompt ${timings.promptMs.toFixed(1)} ms, ` +
    `generation ${timings.generationMs.toFixed(1)} ms (${timings.generationTokensPerSecond.toFixed(0)} tok/s), total ${timings.totalMs.toFixed(1)} ms`,
);
await lm.dispose();
