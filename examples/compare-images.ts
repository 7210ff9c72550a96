// Asks one question about two images in one prompt, streams the answer, and prints the token
// counts and timings.
//   npx tsx examples/compare-images.ts [imageA imageB] [--prompt "..."] [--max-tokens 64]
//                                      [--model model.gguf --mmproj mmproj.gguf]
// Without --model it uses the tiny generated Qwen2-VL test model (random weights: the text is
// gibberish, but every step runs for real); without images, the bundled assets/sample.png and
// assets/sample-2.png.
import path from "node:path";

import { asset, generationOptions, integerOption, loadModel, modelOptions, parseOptions, usageError } from "./shared/model.js";
import { printStream, timingsLine, usageLine } from "./shared/report.js";

const { values, positionals } = parseOptions({ allowPositionals: true, options: { ...modelOptions, ...generationOptions } });
if (positionals.length !== 0 && positionals.length !== 2) {
  usageError(`compare-images takes two images (or none, for the bundled pair), not ${positionals.length}.`);
}
const images = positionals.length === 2 ? positionals : [asset("sample.png"), asset("sample-2.png")];
const prompt = values.prompt ?? "What is different between these two images?";

await using lm = await loadModel(values);
console.log(`images: ${images.map((image) => path.basename(image)).join(" and ")}`);
console.log(`prompt: ${prompt}\n`);
// Without media markers in the prompt, the images go before the text, in this order.
const result = await printStream(lm.generateStream({ prompt, images, maxTokens: integerOption(values["max-tokens"], "--max-tokens", 64) }));
console.log(`\n${usageLine(result)}`);
console.log(timingsLine(result));
