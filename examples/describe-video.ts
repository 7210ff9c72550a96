// Describes a video: shows a frame-extraction progress line on stderr, streams the text, then
// prints what was sampled (frames, size, instants), the token counts and the timings.
//   npx tsx examples/describe-video.ts [video] [--fps 2] [--max-frames 32] [--num-frames N]
//                                      [--prompt "..."] [--max-tokens 64] [--model model.gguf --mmproj mmproj.gguf]
// --fps samples that many frames per second, at most --max-frames of them (more are spread evenly
// over the clip); --num-frames takes exactly that many, spread evenly, and wins over both.
// Without --model it uses the tiny generated Qwen2-VL test model (random weights: the text is
// gibberish, but every step runs for real); without a video, the bundled assets/sample.mp4 (4 s).
// Needs ffmpeg and ffprobe (Debian/Ubuntu: apt-get install ffmpeg).

import { asset, generationOptions, integerOption, loadModel, modelOptions, numberOption, parseOptions } from "./shared/model.js";
import { printStream, timingsLine, usageLine } from "./shared/report.js";

const { values, positionals } = parseOptions({
  allowPositionals: true,
  options: {
    ...modelOptions,
    ...generationOptions,
    fps: { type: "string" },
    "max-frames": { type: "string" },
    "num-frames": { type: "string" },
  },
});
const video = positionals[0] ?? asset("sample.mp4");

await using lm = await loadModel(values);
const numFrames = integerOption(values["num-frames"], "--num-frames");
let extracting = false;
const result = await printStream(
  lm.generateStream({
    prompt: values.prompt ?? "Describe this video.",
    videos: [video],
    video: {
      fps: numberOption(values.fps, "--fps"),
      maxFrames: integerOption(values["max-frames"], "--max-frames"),
      numFrames,
      onProgress: (fraction) => {
        extracting = fraction < 1;
        process.stderr.write(`\rextracting frames: ${Math.round(fraction * 100)}%${extracting ? "" : "\n"}`);
      },
    },
    maxTokens: integerOption(values["max-tokens"], "--max-tokens", 64),
  }),
);
if (extracting) process.stderr.write("\n");

for (const v of result.videos) {
  console.log(
    `\n${v.frames} frames of ${v.width}×${v.height} at ${v.timestamps.map((t) => t.toFixed(2)).join(", ")} s ` +
      `from a ${v.info.duration.toFixed(1)} s ${v.info.codec} video at ${v.info.fps.toFixed(2)} fps (${v.info.width}×${v.info.height})`,
  );
  if (numFrames !== undefined && v.frames !== numFrames && lm.info.frameMerge === 2) {
    console.log(`(${numFrames} frames asked for: this model merges pairs of frames, so the count is made even)`);
  }
}
console.log(usageLine(result));
console.log(timingsLine(result));
