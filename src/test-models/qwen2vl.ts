import { GGMLType, GGUFValueType } from "../gguf/types.js";
import { GGUFWriter } from "../gguf/writer.js";
import { MERGE_CORPUS, TokenType, VocabBuilder, trainMerges, type Vocab } from "./bpe.js";
import { addDecoderTensors, addNormal, setDecoderHparams, addLayerNorm, addLinear, addVisionBlocks, fileTypeOf, setClipBase, setTokenizer } from "./layers.js";
import type { RecipeBuild, RecipeOptions } from "./recipe.js";

/** Qwen2-VL-Instruct's chat template, as shipped in its chat_template.json. */
export const QWEN2VL_CHAT_TEMPLATE =
  "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}" +
  "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}" +
  "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n" +
  "{% else %}{% for content in message['content'] %}" +
  "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}" +
  "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}" +
  "<|vision_start|><|image_pad|><|vision_end|>" +
  "{% elif content['type'] == 'video' or 'video' in content %}" +
  "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}" +
  "<|vision_start|><|video_pad|><|vision_end|>" +
  "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n" +
  "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/** Qwen2 added tokens, in their real order (ids 151643.. in the released tokenizer). */
const QWEN2VL_SPECIALS = [
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
  "<|object_ref_start|>",
  "<|object_ref_end|>",
  "<|box_start|>",
  "<|box_end|>",
  "<|quad_start|>",
  "<|quad_end|>",
  "<|vision_start|>",
  "<|vision_end|>",
  "<|vision_pad|>",
  "<|image_pad|>",
  "<|video_pad|>",
];

export interface Qwen2VLDims {
  name: string;
  text: { nEmbd: number; nLayer: number; nHead: number; nHeadKv: number; nFf: number; contextLength: number };
  /** M-RoPE sections [t, h, w, 0]; they sum to head_dim / 2. */
  ropeSections: [number, number, number, number];
  vision: { nEmbd: number; nFf: number; nLayer: number; nHead: number; imageSize: number };
  merges: number;
  /** Reproduce the real ids: word tokens up to `specialsAt`, then the specials, then unused padding to `vocabSize`. */
  realIds?: { specialsAt: number; vocabSize: number };
}

/** Head dims of 64 (text and vision), the size GPU flash-attention kernels support. */
export const QWEN2VL_TINY: Qwen2VLDims = {
  name: "tiny-qwen2vl",
  text: { nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 512, contextLength: 4096 },
  ropeSections: [8, 12, 12, 0],
  vision: { nEmbd: 128, nFf: 256, nLayer: 2, nHead: 2, imageSize: 560 },
  merges: 200,
};

/** Qwen2-VL-2B-Instruct's dimensions (config.json of the released model). */
export const QWEN2VL_2B: Qwen2VLDims = {
  name: "qwen2vl-2b-shape",
  text: { nEmbd: 1536, nLayer: 28, nHead: 12, nHeadKv: 2, nFf: 8960, contextLength: 32768 },
  ropeSections: [16, 24, 24, 0],
  vision: { nEmbd: 1280, nFf: 5120, nLayer: 32, nHead: 16, imageSize: 560 },
  merges: 200,
  realIds: { specialsAt: 151643, vocabSize: 151936 },
};

function qwenVocab(d: Pick<Qwen2VLDims, "merges" | "realIds">, specials: readonly string[]): Vocab {
  const v = new VocabBuilder().addBytes().addMerges(trainMerges(MERGE_CORPUS, d.merges));
  if (d.realIds) v.fillTo(d.realIds.specialsAt);
  for (const s of specials) v.add(s, TokenType.CONTROL);
  if (d.realIds) v.padTo(d.realIds.vocabSize);
  return v.build();
}

/**
 * The text GGUF of a Qwen-VL family model (`qwen2vl` architecture: Qwen2 with M-RoPE), which
 * Qwen2-VL, Qwen2.5-VL and Qwen2.5-Omni's thinker all convert to; the families differ in their
 * added tokens and chat template.
 */
export function buildQwenVLText(d: Omit<Qwen2VLDims, "vision">, o: RecipeOptions, specials: readonly string[], chatTemplate: string): GGUFWriter {
  const vocab = qwenVocab(d, specials);
  const t = d.text;
  const headDim = t.nEmbd / t.nHead;
  if (d.ropeSections.reduce((a, b) => a + b, 0) * 2 !== headDim) throw new Error(`${d.name}: M-RoPE sections must sum to head_dim / 2`);

  const text = new GGUFWriter();
  // This tree's qwen2vl never reads the RMS epsilon (it uses 0); it is written as the converter does.
  setDecoderHparams(text, "qwen2vl", { ...t, name: d.name, fileType: fileTypeOf(o.textType), ropeFreqBase: 1000000, rmsEps: 1e-6 });
  text.setArray("qwen2vl.rope.dimension_sections", GGUFValueType.INT32, d.ropeSections);
  setTokenizer(text, vocab, { pre: "qwen2", bos: "<|endoftext|>", eos: "<|im_end|>", pad: "<|endoftext|>", chatTemplate });
  addDecoderTensors(text, { ...t, qkvBias: true }, { seed: o.seed, matrixType: o.textType, head: o.head }, vocab);
  return text;
}

/** The Conv3D patch embedding split into its two temporal slices (two video frames are merged per token), as the converter writes it. */
export function addQwenPatchEmbedding(w: GGUFWriter, nEmbd: number, o: RecipeOptions): void {
  const patchType = o.visionType === GGMLType.F32 ? GGMLType.F32 : GGMLType.F16;
  for (const name of ["v.patch_embd.weight", "v.patch_embd.weight.1"]) addNormal(w, name, [14, 14, 3, nEmbd], patchType, o.seed);
}

/** A new mmproj with the Qwen-VL vision keys: 14 px patches, CLIP's normalisation, RMS/LayerNorm epsilon 1e-6. */
export function qwenVisionMmproj(name: string, projectorType: string, v: Qwen2VLDims["vision"], projectionDim: number, o: RecipeOptions): GGUFWriter {
  const mmproj = new GGUFWriter();
  setClipBase(mmproj, {
    name,
    projectorType,
    ...v,
    patchSize: 14,
    projectionDim,
    eps: 1e-6,
    mean: [0.48145466, 0.4578275, 0.40821073],
    std: [0.26862954, 0.26130258, 0.27577711],
    fileType: fileTypeOf(o.visionType),
  });
  return mmproj;
}

export function buildQwen2VL(d: Qwen2VLDims, o: RecipeOptions): RecipeBuild {
  const t = d.text;
  const text = buildQwenVLText(d, o, QWEN2VL_SPECIALS, QWEN2VL_CHAT_TEMPLATE);

  const v = d.vision;
  const mmproj = qwenVisionMmproj(`${d.name}-mmproj`, "qwen2vl_merger", v, t.nEmbd, o);
  mmproj.setUint32("clip.vision.spatial_merge_size", 2);
  const vo = { seed: o.seed, matrixType: o.visionType };
  addQwenPatchEmbedding(mmproj, v.nEmbd, o);
  addVisionBlocks(mmproj, v, vo);
  addLayerNorm(mmproj, "v.post_ln", v.nEmbd, o.seed);
  addLinear(mmproj, "mm.0", 4 * v.nEmbd, 4 * v.nEmbd, vo);
  addLinear(mmproj, "mm.2", 4 * v.nEmbd, t.nEmbd, vo);
  return { text, mmproj };
}
