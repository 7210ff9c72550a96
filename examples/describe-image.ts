// Streams a description of one image, then prints the token counts and the timings.
//   npx tsx examples/describe-image.ts [image] [--prompt "..."] [--max-tokens 64]
//                                      [--model model.gguf --mmproj mmproj.gguf]
// Without --model it uses the tiny generated Qwen2-VL test model (random weights: the text is
// gibberish, but every step runs for real); without an image, the bundled assets/sample.png.

import { asset, generationOptions, integerOption, loadModel, modelOptions, parseOptions } from "./shared/model.js";
import { printStream, timingsLine, usageLine } from "./shared/report.js";

const { values, positionals } = parseOptions({ allowPositionals: true, options: { ...modelOptions, ...generationOptions } });
const image = positionals[0] ?? asset("sample.png");

await using lm = await loadModel(values);
const result = await printStream(
  lm.generateStream({
    prompt: values.prompt ?? "Describe this image.",
    images: [image],
    maxTokens: integerOption(values["max-tokens"], "--max-tokens", 64),
  }),
);
console.log(`\n${usageLine(result)}`);
console.log(timingsLine(result));
