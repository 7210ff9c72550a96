// Describes an image with MultimodalLM and prints the text and timings.
//   node examples/describe.mjs [image] [--model m.gguf --mmproj mmproj.gguf] [--prompt "..."]
// Without --model it uses the tiny generated Qwen2-VL test model (random weights, so the text
// is gibberish, but every step runs for real); without an image, the bundled assets/sample.png.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { MultimodalLM } from "multimodal-lm";
import { ensureTestModel } from "multimodal-lm/test-models";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { model: { type: "string" }, mmproj: { type: "string" }, prompt: { type: "string" }, "max-tokens": { type: "string" } },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const image = positionals[0] ?? path.join(root, "assets", "sample.png");
const files = values.model ? { model: values.model, mmproj: values.mmproj } : await ensureTestModel("qwen2vl-tiny");

const lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });
const stream = lm.generateStream({
  prompt: values.prompt ?? "Describe this image.",
  images: [image],
  maxTokens: Number(values["max-tokens"] ?? 64),
});
for await (const piece of stream) process.stdout.write(piece);
const { usage, timings, stopReason } = await stream.result;
console.log(`\n\n${usage.promptTokens} prompt tokens, ${usage.completionTokens} generated (${stopReason})`);
console.log(
  `image load ${timings.imageLoadMs.toFixed(1)} ms, encode ${timings.encodeMs.toFixed(1)} ms, prompt ${timings.promptMs.toFixed(1)} ms ` +
    `(${timings.promptTokensPerSecond.toFixed(0)} tok/s), generation ${timings.generationMs.toFixed(1)} ms ` +
    `(${timings.generationTokensPerSecond.toFixed(0)} tok/s), first token ${timings.timeToFirstTokenMs.toFixed(1)} ms, total ${timings.totalMs.toFixed(1)} ms`,
);
await lm.dispose();
