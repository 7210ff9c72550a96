// Image in, typed object out: a zod schema becomes a JSON schema (z.toJSONSchema), the reply is
// constrained to it (responseFormat json_schema, OpenAI's form), and the text is parsed back with
// the same zod schema, so the object printed is typed and checked.
//   npx tsx examples/extract-json.ts [image] [--prompt "..."] [--max-tokens 256]
//                                    [--model model.gguf --mmproj mmproj.gguf]
// Without --model it uses the tiny generated Qwen2-VL test model (random weights: the values are
// nonsense, but they always match the schema); without an image, the bundled assets/sample.png.
import { z } from "zod";

import { asset, generationOptions, integerOption, loadModel, modelOptions, parseOptions } from "./shared/model.js";
import { usageLine } from "./shared/report.js";

// Every field is bounded (enums, integer ranges, string and array lengths), so any reply the
// grammar allows ends within a few hundred tokens, even from a model that never stops by itself.
const ImageFacts = z.object({
  caption: z.string().max(80).describe("one short sentence about the image"),
  kind: z.enum(["photo", "drawing", "diagram", "screenshot", "chart", "other"]),
  mainColors: z.array(z.enum(["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray"])).min(1).max(3),
  objectCount: z.number().int().min(0).max(50).describe("how many distinct objects are visible"),
  hasText: z.boolean(),
});
type ImageFacts = z.infer<typeof ImageFacts>;

const { values, positionals } = parseOptions({ allowPositionals: true, options: { ...modelOptions, ...generationOptions } });
const image = positionals[0] ?? asset("sample.png");
const maxTokens = integerOption(values["max-tokens"], "--max-tokens", 256);

await using lm = await loadModel(values);
const result = await lm.generate({
  prompt: values.prompt ?? "Describe this image as JSON: a caption, its kind, its main colours, how many objects it shows, and whether it contains text.",
  images: [image],
  responseFormat: { type: "json_schema", json_schema: { name: "image_facts", schema: z.toJSONSchema(ImageFacts), strict: true } },
  temperature: 0,
  maxTokens,
});

// A reply cut short is "length" (or "context"): its JSON is incomplete, so do not parse it.
if (result.stopReason === "length" || result.stopReason === "context") {
  if (result.text !== "") console.log(`partial reply: ${result.text}`);
  console.error(
    `The reply was cut short (stopReason "${result.stopReason}") after ${result.usage.completionTokens} tokens, so its JSON is incomplete. ` +
      (result.stopReason === "length" ? "Raise --max-tokens." : "The context is full: use a smaller image or a model with a larger context."),
  );
  process.exit(1);
}

const parsed = ImageFacts.safeParse(JSON.parse(result.text));
if (!parsed.success) {
  console.error(`The reply does not match the schema:\n${z.prettifyError(parsed.error)}\n${result.text}`);
  process.exit(1);
}
const facts: ImageFacts = parsed.data;
console.log(JSON.stringify(facts, null, 2));
console.log(`\n${facts.kind}, ${facts.objectCount} object${facts.objectCount === 1 ? "" : "s"}, colours: ${facts.mainColors.join(", ")}${facts.hasText ? ", with text" : ""}`);
console.log(usageLine(result));
