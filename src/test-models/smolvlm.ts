import { GGMLType } from "../gguf/types.js";
import { GGUFWriter } from "../gguf/writer.js";
import { MERGE_CORPUS, TokenType, VocabBuilder, trainMerges, type Vocab } from "./bpe.js";
import { addDecoderTensors, addNormal, setDecoderHparams, addLayerNorm, addLinear, addVisionBlocks, fileTypeOf, setClipBase, setTokenizer } from "./layers.js";
import type { RecipeBuild, RecipeOptions } from "./recipe.js";

/** SmolVLM-Instruct's chat template, as shipped in its chat_template.json. */
export const SMOLVLM_CHAT_TEMPLATE =
  "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}" +
  "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}" +
  "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}" +
  "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n" +
  "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

export interface SmolVLMDims {
  name: string;
  text: { nEmbd: number; nLayer: number; nHead: number; nHeadKv: number; nFf: number; contextLength: number };
  vision: { nEmbd: number; nFf: number; nLayer: number; nHead: number; imageSize: number; patchSize: number };
  /** Pixel-shuffle factor of the idefics3 connector. */
  scaleFactor: number;
  /** Longest edge images are resized to before tiling (`size.longest_edge` in HF). */
  longestEdge: number;
  merges: number;
  /** Reproduce the real ids: word tokens up to 49152, the image specials, unused padding, `<end_of_utterance>` last. */
  realVocabSize?: number;
}

/** Head dims of 64 (text and vision); 64 px tiles of 16 px patches, up to 2x2 tiles plus the overview. */
export const SMOLVLM_TINY: SmolVLMDims = {
  name: "tiny-smolvlm",
  text: { nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 512, contextLength: 2048 },
  vision: { nEmbd: 128, nFf: 256, nLayer: 2, nHead: 2, imageSize: 64, patchSize: 16 },
  scaleFactor: 2,
  longestEdge: 128,
  merges: 200,
};

/** SmolVLM-256M-Instruct's dimensions: SmolLM2-135M-style text, SigLIP-base/16 at 512 px. */
export const SMOLVLM_256M: SmolVLMDims = {
  name: "smolvlm-256m-shape",
  text: { nEmbd: 576, nLayer: 30, nHead: 9, nHeadKv: 3, nFf: 1536, contextLength: 8192 },
  vision: { nEmbd: 768, nFf: 3072, nLayer: 12, nHead: 12, imageSize: 512, patchSize: 16 },
  scaleFactor: 4,
  longestEdge: 2048,
  merges: 200,
  realVocabSize: 49280,
};

const GRID = 6;

function smolVocab(d: SmolVLMDims): Vocab {
  const v = new VocabBuilder();
  for (const s of ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) v.add(s, TokenType.CONTROL);
  v.addBytes();
  // mtmd looks up "\n\n" as one token to open the global image.
  const merges = trainMerges(MERGE_CORPUS, d.merges);
  if (!merges.some(([a, b]) => a === "Ċ" && b === "Ċ")) merges.push(["Ċ", "Ċ"]);
  v.addMerges(merges);
  if (d.realVocabSize) v.fillTo(49152);
  v.add("<global-img>", TokenType.CONTROL);
  for (let r = 1; r <= GRID; r++) for (let c = 1; c <= GRID; c++) v.add(`<row_${r}_col_${c}>`, TokenType.CONTROL);
  v.add("<fake_token_around_image>", TokenType.CONTROL);
  v.add("<image>", TokenType.CONTROL);
  if (d.realVocabSize) v.padTo(d.realVocabSize - 1);
  v.add("<end_of_utterance>", TokenType.CONTROL);
  return v.build();
}

export function buildSmolVLM(d: SmolVLMDims, o: RecipeOptions): RecipeBuild {
  const vocab = smolVocab(d);
  const t = d.text;
  const v = d.vision;
  const gridSide = v.imageSize / v.patchSize;
  if (gridSide % d.scaleFactor !== 0) throw new Error(`${d.name}: (image_size / patch_size) must be a multiple of scale_factor`);
  if (d.longestEdge / v.imageSize > GRID) throw new Error(`${d.name}: longest edge needs more than ${GRID}x${GRID} row/col tokens`);

  const text = new GGUFWriter();
  setDecoderHparams(text, "llama", { ...t, name: d.name, fileType: fileTypeOf(o.textType), ropeFreqBase: 100000, rmsEps: 1e-5 });
  text.setUint32("llama.rope.dimension_count", t.nEmbd / t.nHead);
  text.setUint32("llama.vocab_size", vocab.tokens.length);
  setTokenizer(text, vocab, {
    pre: "smollm",
    bos: "<|im_start|>",
    eos: "<end_of_utterance>",
    pad: "<|im_end|>",
    chatTemplate: SMOLVLM_CHAT_TEMPLATE,
  });
  addDecoderTensors(
    text,
    { ...t, qkvBias: false },
    { seed: o.seed, matrixType: o.textType, head: o.head },
    vocab,
  );

  const mmproj = new GGUFWriter();
  setClipBase(mmproj, {
    name: `${d.name}-mmproj`,
    projectorType: "idefics3",
    ...v,
    projectionDim: t.nEmbd,
    eps: 1e-6,
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
    fileType: fileTypeOf(o.visionType),
  });
  mmproj.setBool("clip.use_gelu", true);
  mmproj.setUint32("clip.vision.projector.scale_factor", d.scaleFactor);
  mmproj.setUint32("clip.vision.preproc_image_size", d.longestEdge);
  const vo = { seed: o.seed, matrixType: o.visionType };
  // The converter keeps the SigLIP embeddings in F32.
  addNormal(mmproj, "v.patch_embd.weight", [v.patchSize, v.patchSize, 3, v.nEmbd], GGMLType.F32, o.seed);
  addNormal(mmproj, "v.patch_embd.bias", [v.nEmbd], GGMLType.F32, o.seed);
  addNormal(mmproj, "v.position_embd.weight", [v.nEmbd, gridSide * gridSide], GGMLType.F32, o.seed);
  addVisionBlocks(mmproj, v, vo);
  addLayerNorm(mmproj, "v.post_ln", v.nEmbd, o.seed);
  addLinear(mmproj, "mm.model.fc", v.nEmbd * d.scaleFactor * d.scaleFactor, t.nEmbd, vo, false);
  return { text, mmproj };
}
