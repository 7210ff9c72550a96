import { GGMLType } from "../gguf/types.js";
import { GGUFWriter } from "../gguf/writer.js";
import { MERGE_CORPUS, TokenType, trainMerges } from "./bpe.js";
import {
  EMBEDDING_STD,
  QK_STD,
  addLayerNorm,
  addNormal,
  addOutputHead,
  addVisionBlocks,
  fileTypeOf,
  setClipBase,
  setDecoderHparams,
} from "./layers.js";
import { constantFill } from "./random.js";
import type { RecipeBuild, RecipeOptions } from "./recipe.js";
import { SpmVocabBuilder, setSpmTokenizer, spmHeadTokens, type SpmVocab } from "./spm.js";

/** Gemma 3 instruction-tuned models' chat template (google/gemma-3-4b-it, tokenizer_config.json). */
export const GEMMA3_CHAT_TEMPLATE = [
  "{{ bos_token }}",
  "{%- if messages[0]['role'] == 'system' -%}",
  "    {%- if messages[0]['content'] is string -%}",
  "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}",
  "    {%- else -%}",
  "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}",
  "    {%- endif -%}",
  "    {%- set loop_messages = messages[1:] -%}",
  "{%- else -%}",
  '    {%- set first_user_prefix = "" -%}',
  "    {%- set loop_messages = messages -%}",
  "{%- endif -%}",
  "{%- for message in loop_messages -%}",
  "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}",
  '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}',
  "    {%- endif -%}",
  "    {%- if (message['role'] == 'assistant') -%}",
  '        {%- set role = "model" -%}',
  "    {%- else -%}",
  "        {%- set role = message['role'] -%}",
  "    {%- endif -%}",
  "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}",
  "    {%- if message['content'] is string -%}",
  "        {{ message['content'] | trim }}",
  "    {%- elif message['content'] is iterable -%}",
  "        {%- for item in message['content'] -%}",
  "            {%- if item['type'] == 'image' -%}",
  "                {{ '<start_of_image>' }}",
  "            {%- elif item['type'] == 'text' -%}",
  "                {{ item['text'] | trim }}",
  "            {%- endif -%}",
  "        {%- endfor -%}",
  "    {%- else -%}",
  '        {{ raise_exception("Invalid content type") }}',
  "    {%- endif -%}",
  "    {{ '<end_of_turn>\\n' }}",
  "{%- endfor -%}",
  "{%- if add_generation_prompt -%}",
  "    {{'<start_of_turn>model\\n'}}",
  "{%- endif -%}",
  "",
].join("\n");

export interface Gemma3Dims {
  name: string;
  text: {
    nEmbd: number;
    nLayer: number;
    nHead: number;
    nHeadKv: number;
    /** `attention.key_length` / `value_length`: Gemma's heads need not split n_embd (nHead * headDim != nEmbd). */
    headDim: number;
    nFf: number;
    contextLength: number;
    /** `attention.sliding_window`: the local layers' window. */
    slidingWindow: number;
    /** Every n-th layer is global (`attention.sliding_window_pattern`; llama.cpp's default for Gemma 3 is 6). */
    swaPattern: number;
    /** Linear RoPE scaling of the global layers (Gemma 3 4B and larger: 8). */
    ropeScale: number;
  };
  /** SigLIP encoder: every image is resized to imageSize x imageSize (the default; see RecipeOptions.imageSize). */
  vision: { nEmbd: number; nFf: number; nLayer: number; nHead: number; imageSize: number; patchSize: number };
  /** Average-pooling kernel after the encoder (`clip.vision.projector.scale_factor`, written only when not 4). */
  pooling: number;
  merges: number;
}

/**
 * Head dims of 64 (text and vision), with 2 query heads of 64 in a 256-wide model as Gemma's
 * heads do not split n_embd either. Layer 0 is local (sliding window 512), layer 1 global.
 * 224 px images of 14 px patches, pooled 4x4: 16 tokens per image.
 */
export const GEMMA3_TINY: Gemma3Dims = {
  name: "tiny-gemma3",
  text: {
    nEmbd: 256,
    nLayer: 2,
    nHead: 2,
    nHeadKv: 1,
    headDim: 64,
    nFf: 512,
    contextLength: 4096,
    slidingWindow: 512,
    swaPattern: 2,
    ropeScale: 8,
  },
  vision: { nEmbd: 128, nFf: 256, nLayer: 2, nHead: 2, imageSize: 224, patchSize: 14 },
  pooling: 4,
  merges: 200,
};

/** Side of one image-token cell in pixels: image sizes must be a multiple of it. */
export function gemma3Cell(d: Gemma3Dims): number {
  return d.vision.patchSize * d.pooling;
}

/** Image tokens libmtmd makes of any image for this projector (it resizes every image to one square). */
export function gemma3ImageTokens(d: Gemma3Dims, imageSize = d.vision.imageSize): number {
  return (imageSize / gemma3Cell(d)) ** 2;
}

/**
 * Gemma's SentencePiece layout: pad, eos, bos, unk, mask and the turn markers first, newline,
 * byte fallback, characters and pieces, then the image markers mtmd wraps every image in
 * (`<start_of_image>`, `<end_of_image>`) and `<image_soft_token>` last, as in the real
 * vocabulary (ids 255999, 256000 and 262144 there).
 */
function gemmaVocab(d: Gemma3Dims): SpmVocab {
  const v = new SpmVocabBuilder();
  for (const s of ["<pad>", "<eos>", "<bos>"]) v.add(s, TokenType.CONTROL);
  v.add("<unk>", TokenType.UNKNOWN);
  for (const s of ["<mask>", "<start_of_turn>", "<end_of_turn>"]) v.add(s, TokenType.CONTROL);
  v.add("\n", TokenType.NORMAL);
  v.addBytes();
  v.addCharacters(-1000);
  v.addMerges(trainMerges(MERGE_CORPUS, d.merges));
  for (const s of ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]) v.add(s, TokenType.CONTROL);
  return v.build();
}

export function buildGemma3(d: Gemma3Dims, o: RecipeOptions): RecipeBuild {
  const vocab = gemmaVocab(d);
  const t = d.text;
  const v = d.vision;
  const imageSize = o.imageSize ?? v.imageSize;
  if (imageSize % gemma3Cell(d) !== 0) throw new Error(`${d.name}: image size must be a multiple of ${gemma3Cell(d)}`);
  const gridSide = imageSize / v.patchSize;

  const text = new GGUFWriter();
  setDecoderHparams(text, "gemma3", { ...t, name: d.name, fileType: fileTypeOf(o.textType), ropeFreqBase: 1000000, rmsEps: 1e-6 });
  text.setUint32("gemma3.attention.key_length", t.headDim);
  text.setUint32("gemma3.attention.value_length", t.headDim);
  text.setUint32("gemma3.attention.sliding_window", t.slidingWindow);
  text.setUint32("gemma3.attention.sliding_window_pattern", t.swaPattern);
  text.setString("gemma3.rope.scaling.type", "linear");
  text.setFloat32("gemma3.rope.scaling.factor", t.ropeScale);
  setSpmTokenizer(text, vocab, {
    pre: "default",
    bos: "<bos>",
    eos: "<eos>",
    unk: "<unk>",
    pad: "<pad>",
    addBos: true,
    addSpacePrefix: false,
    chatTemplate: GEMMA3_CHAT_TEMPLATE,
  });

  // Tensors as llama_model_gemma3::load_arch_tensors creates them. Norm weights are 1: the
  // converter adds Gemma3RMSNorm's +1 to weights that start at 0.
  const nVocab = vocab.tokens.length;
  const qDim = t.nHead * t.headDim;
  const kvDim = t.nHeadKv * t.headDim;
  const weights = { seed: o.seed, matrixType: o.textType, head: o.head };
  const matrix = (name: string, ne: number[], std?: number) => addNormal(text, name, ne, o.textType, o.seed, std);
  const norm = (name: string, n: number) => text.addTensor({ name, ne: [n], type: GGMLType.F32, data: constantFill(1) });
  // The graph scales token embeddings by sqrt(n_embd) (image embeddings are not): 0.1 after scaling.
  matrix("token_embd.weight", [t.nEmbd, nVocab], EMBEDDING_STD / Math.sqrt(t.nEmbd));
  norm("output_norm.weight", t.nEmbd);
  addOutputHead(text, t.nEmbd, nVocab, weights, spmHeadTokens(vocab));
  for (let i = 0; i < t.nLayer; i++) {
    const p = `blk.${i}`;
    norm(`${p}.attn_norm.weight`, t.nEmbd);
    matrix(`${p}.attn_q.weight`, [t.nEmbd, qDim], QK_STD);
    matrix(`${p}.attn_k.weight`, [t.nEmbd, kvDim], QK_STD);
    matrix(`${p}.attn_v.weight`, [t.nEmbd, kvDim]);
    norm(`${p}.attn_q_norm.weight`, t.headDim);
    norm(`${p}.attn_k_norm.weight`, t.headDim);
    matrix(`${p}.attn_output.weight`, [qDim, t.nEmbd]);
    norm(`${p}.post_attention_norm.weight`, t.nEmbd);
    norm(`${p}.ffn_norm.weight`, t.nEmbd);
    matrix(`${p}.ffn_gate.weight`, [t.nEmbd, t.nFf]);
    matrix(`${p}.ffn_up.weight`, [t.nEmbd, t.nFf]);
    matrix(`${p}.ffn_down.weight`, [t.nFf, t.nEmbd]);
    norm(`${p}.post_ffw_norm.weight`, t.nEmbd);
  }

  const mmproj = new GGUFWriter();
  setClipBase(mmproj, {
    name: `${d.name}-mmproj`,
    projectorType: "gemma3",
    ...v,
    imageSize,
    projectionDim: t.nEmbd,
    eps: 1e-6,
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
    fileType: fileTypeOf(o.visionType),
  });
  mmproj.setBool("clip.use_gelu", true);
  if (d.pooling !== 4) mmproj.setUint32("clip.vision.projector.scale_factor", d.pooling);
  const vo = { seed: o.seed, matrixType: o.visionType };
  // The converter keeps the SigLIP embeddings in F32 and the input projection in F16.
  addNormal(mmproj, "v.patch_embd.weight", [v.patchSize, v.patchSize, 3, v.nEmbd], GGMLType.F32, o.seed);
  addNormal(mmproj, "v.patch_embd.bias", [v.nEmbd], GGMLType.F32, o.seed);
  addNormal(mmproj, "v.position_embd.weight", [v.nEmbd, gridSide * gridSide], GGMLType.F32, o.seed);
  addVisionBlocks(mmproj, v, vo);
  addLayerNorm(mmproj, "v.post_ln", v.nEmbd, o.seed);
  mmproj.addTensor({ name: "mm.soft_emb_norm.weight", ne: [v.nEmbd], type: GGMLType.F32, data: constantFill(1) });
  addNormal(mmproj, "mm.input_projection.weight", [t.nEmbd, v.nEmbd], GGMLType.F16, o.seed);
  return { text, mmproj };
}
