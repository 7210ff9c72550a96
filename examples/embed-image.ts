// Runs the vision encoder and projector on one or two images and prints each embedding's shape
// (tokens × the text model's embedding size) and first values; with two images, the cosine
// similarity of their mean-pooled embeddings.
//   npx tsx examples/embed-image.ts [image [image2]] [--model model.gguf --mmproj mmproj.gguf]
// Without --model it uses the tiny generated Qwen2-VL test model (random weights: the numbers
// mean nothing, but every step runs for real); without images, the bundled assets/sample.png and
// assets/sample-2.png.
import path from "node:path";

import type { ImageEmbedding } from "multimodal-lm";

import { asset, loadModel, modelOptions, parseOptions, usageError } from "./shared/model.js";

const { values, positionals } = parseOptions({ allowPositionals: true, options: { ...modelOptions } });
if (positionals.length > 2) usageError(`embed-image takes one or two images, not ${positionals.length}.`);
const images = positionals.length > 0 ? positionals : [asset("sample.png"), asset("sample-2.png")];

/** The average over the tokens: one vector of the embedding size. */
function meanPool({ data, shape: [tokens, size] }: ImageEmbedding): Float64Array {
  const mean = new Float64Array(size);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < size; i++) mean[i]! += data[t * size + i]! / tokens;
  }
  return mean;
}

function cosine(a: Float64Array, b: Float64Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return dot / Math.sqrt(na * nb);
}

await using lm = await loadModel(values);
const pooled: Float64Array[] = [];
for (const image of images) {
  const embedding = await lm.embedImage(image);
  const [tokens, size] = embedding.shape;
  const first = Array.from(embedding.data.subarray(0, 5), (x) => x.toFixed(4)).join(", ");
  console.log(`${path.basename(image)}: ${tokens} tokens × ${size} dimensions (id ${embedding.id.slice(0, 12)}…, encoded in ${embedding.encodeMs.toFixed(1)} ms)`);
  console.log(`  first values: [${first}, …]`);
  const mean = meanPool(embedding);
  console.log(`  mean-pooled: ${mean.length} values, L2 norm ${Math.sqrt(mean.reduce((sum, x) => sum + x * x, 0)).toFixed(4)}`);
  pooled.push(mean);
}
if (pooled.length === 2) {
  console.log(`cosine similarity of the mean-pooled embeddings: ${cosine(pooled[0]!, pooled[1]!).toFixed(4)}`);
}
