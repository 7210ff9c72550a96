import { GGMLType, GGUFValueType } from "../gguf/types.js";
import type { GGUFWriter } from "../gguf/writer.js";
import { BYTE_TO_CHAR, nonPrintableIds, type Vocab } from "./bpe.js";
import { constantFill, maskedRowsFill, normalFill, pairedRowsFill } from "./random.js";

/** Standard deviation of every random weight. */
export const WEIGHT_STD = 0.02;
/**
 * Standard deviation of token embeddings. At 0.02 the layers' own output swamps the token
 * signal and greedy decoding repeats one token; at 0.3 and above text swamps the image
 * embeddings. At 0.1 the output depends on both the prompt and the image.
 */
export const EMBEDDING_STD = 0.1;
/**
 * Standard deviation of attention Q and K projections. At 0.02 every attention score is close
 * to zero, so attention is a plain average and token order (RoPE, M-RoPE) barely matters;
 * larger Q/K make attention position-dependent, so positions are tested too.
 */
export const QK_STD = 0.1;

export interface DecoderShape {
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  nFf: number;
  /** Q/K/V projections carry biases (Qwen2) or not (Llama). */
  qkvBias: boolean;
}

export interface DecoderWeights {
  seed: number;
  /** Type of every 2-D matrix; norms and biases are always F32. */
  matrixType: GGMLType;
  head: HeadKind;
}

/**
 * Output head. `printable`: untied, with zero rows for special, unused and non-printable tokens
 * (never chosen greedily). `random`: untied, nothing zeroed. `tied`: reuses token_embd, as the
 * real models do. `multibyte`: only the byte tokens in MULTIBYTE_PAIRS can come out, so the
 * text is two-byte UTF-8 characters split across tokens, mixed with invalid sequences.
 */
export type HeadKind = "printable" | "random" | "tied" | "multibyte";

/**
 * Byte pairs of the `multibyte` head. Each pair's rows are r and -r, so one of the two has a
 * logit >= 0 and a zero (masked) row never wins. Any lead byte followed by any continuation
 * byte here is a valid character (é, û, Ω, λ).
 */
export const MULTIBYTE_PAIRS: readonly [number, number][] = [
  [0xc3, 0xa9],
  [0xce, 0xbb],
];

/** A tensor of N(0, std) values from its own seeded stream. */
export function addNormal(w: GGUFWriter, name: string, ne: number[], type: GGMLType, seed: number, std = WEIGHT_STD): void {
  w.addTensor({ name, ne, type, data: normalFill(seed, name, std) });
}

/** `general.*` and `<arch>.*` hyperparameter keys of a Llama-style decoder (all UINT32 / FLOAT32, as the loader demands). */
export function setDecoderHparams(
  w: GGUFWriter,
  arch: string,
  h: Omit<DecoderShape, "qkvBias"> & { name: string; fileType: number; contextLength: number; ropeFreqBase: number; rmsEps: number },
): void {
  w.setString("general.architecture", arch);
  w.setString("general.name", h.name);
  w.setUint32("general.file_type", h.fileType);
  w.setUint32(`${arch}.context_length`, h.contextLength);
  w.setUint32(`${arch}.embedding_length`, h.nEmbd);
  w.setUint32(`${arch}.block_count`, h.nLayer);
  w.setUint32(`${arch}.feed_forward_length`, h.nFf);
  w.setUint32(`${arch}.attention.head_count`, h.nHead);
  w.setUint32(`${arch}.attention.head_count_kv`, h.nHeadKv);
  w.setFloat32(`${arch}.rope.freq_base`, h.ropeFreqBase);
  w.setFloat32(`${arch}.attention.layer_norm_rms_epsilon`, h.rmsEps);
}

/** Tensors of a Llama-style decoder (llama, qwen2vl), named as src/llama-arch.cpp names them. */
export function addDecoderTensors(w: GGUFWriter, s: DecoderShape, o: DecoderWeights, vocab: Vocab): void {
  const headDim = s.nEmbd / s.nHead;
  const kvDim = s.nHeadKv * headDim;
  const nVocab = vocab.tokens.length;
  const matrix = (name: string, ne: number[], std = WEIGHT_STD) => addNormal(w, name, ne, o.matrixType, o.seed, std);
  const norm = (name: string, n: number) => w.addTensor({ name, ne: [n], type: GGMLType.F32, data: constantFill(1) });
  const bias = (name: string, n: number) => addNormal(w, name, [n], GGMLType.F32, o.seed);

  matrix("token_embd.weight", [s.nEmbd, nVocab], EMBEDDING_STD);
  norm("output_norm.weight", s.nEmbd);
  addOutputHead(w, s.nEmbd, nVocab, o, byteLevelHeadTokens(vocab));
  for (let i = 0; i < s.nLayer; i++) {
    const p = `blk.${i}`;
    norm(`${p}.attn_norm.weight`, s.nEmbd);
    matrix(`${p}.attn_q.weight`, [s.nEmbd, s.nEmbd], QK_STD);
    matrix(`${p}.attn_k.weight`, [s.nEmbd, kvDim], QK_STD);
    matrix(`${p}.attn_v.weight`, [s.nEmbd, kvDim]);
    if (s.qkvBias) {
      bias(`${p}.attn_q.bias`, s.nEmbd);
      bias(`${p}.attn_k.bias`, kvDim);
      bias(`${p}.attn_v.bias`, kvDim);
    }
    matrix(`${p}.attn_output.weight`, [s.nEmbd, s.nEmbd]);
    norm(`${p}.ffn_norm.weight`, s.nEmbd);
    matrix(`${p}.ffn_gate.weight`, [s.nEmbd, s.nFf]);
    matrix(`${p}.ffn_up.weight`, [s.nEmbd, s.nFf]);
    matrix(`${p}.ffn_down.weight`, [s.nFf, s.nEmbd]);
  }
}

/** The tokens an output head singles out. */
export interface HeadTokens {
  /** Rows the printable head zeroes: special, unused, control and non-printable tokens. */
  nonPrintable(): ReadonlySet<number>;
  /** The token that stands for one raw byte (the multibyte head's lead and continuation bytes). */
  byteToken(byte: number): number;
}

/** HeadTokens of a byte-level BPE vocabulary (bpe.ts). */
export function byteLevelHeadTokens(vocab: Vocab): HeadTokens {
  return { nonPrintable: () => nonPrintableIds(vocab), byteToken: (b) => vocab.id(BYTE_TO_CHAR[b]!) };
}

/** `output.weight {nEmbd, nVocab}` as the head kind asks (none for `tied`). */
export function addOutputHead(w: GGUFWriter, nEmbd: number, nVocab: number, o: DecoderWeights, tokens: HeadTokens): void {
  if (o.head === "random") addNormal(w, "output.weight", [nEmbd, nVocab], o.matrixType, o.seed);
  if (o.head === "printable") {
    const data = maskedRowsFill(o.seed, "output.weight", WEIGHT_STD, nEmbd, tokens.nonPrintable());
    w.addTensor({ name: "output.weight", ne: [nEmbd, nVocab], type: o.matrixType, data });
  }
  if (o.head === "multibyte") {
    const pairs = MULTIBYTE_PAIRS.map(([a, b]) => [tokens.byteToken(a), tokens.byteToken(b)] as [number, number]);
    const data = pairedRowsFill(o.seed, "output.weight", WEIGHT_STD, nEmbd, pairs);
    w.addTensor({ name: "output.weight", ne: [nEmbd, nVocab], type: o.matrixType, data });
  }
}

export interface VisionShape {
  nEmbd: number;
  nFf: number;
  nLayer: number;
  nHead: number;
}

export interface VisionWeights {
  seed: number;
  /** Type of the 2-D attention/FFN/projector matrices; norms and biases are always F32. */
  matrixType: GGMLType;
}

/** A ViT block stack (`v.blk.N.*`, clip-impl.h names): LayerNorm + biased attention + biased MLP. */
export function addVisionBlocks(w: GGUFWriter, s: VisionShape, o: VisionWeights): void {
  for (let i = 0; i < s.nLayer; i++) {
    const p = `v.blk.${i}`;
    addLinear(w, `${p}.attn_q`, s.nEmbd, s.nEmbd, o, true, QK_STD);
    addLinear(w, `${p}.attn_k`, s.nEmbd, s.nEmbd, o, true, QK_STD);
    addLinear(w, `${p}.attn_v`, s.nEmbd, s.nEmbd, o);
    addLinear(w, `${p}.attn_out`, s.nEmbd, s.nEmbd, o);
    addLayerNorm(w, `${p}.ln1`, s.nEmbd, o.seed);
    addLayerNorm(w, `${p}.ln2`, s.nEmbd, o.seed);
    addLinear(w, `${p}.ffn_up`, s.nEmbd, s.nFf, o);
    addLinear(w, `${p}.ffn_down`, s.nFf, s.nEmbd, o);
  }
}

/** `<prefix>.weight {nIn, nOut}` and, unless `bias` is false, `<prefix>.bias {nOut}`. */
export function addLinear(w: GGUFWriter, prefix: string, nIn: number, nOut: number, o: VisionWeights, bias = true, std = WEIGHT_STD): void {
  addNormal(w, `${prefix}.weight`, [nIn, nOut], o.matrixType, o.seed, std);
  if (bias) addNormal(w, `${prefix}.bias`, [nOut], GGMLType.F32, o.seed);
}

export function addLayerNorm(w: GGUFWriter, prefix: string, n: number, seed: number): void {
  w.addTensor({ name: `${prefix}.weight`, ne: [n], type: GGMLType.F32, data: constantFill(1) });
  addNormal(w, `${prefix}.bias`, [n], GGMLType.F32, seed);
}

/** Keys every mmproj carries (conversion/base.py MmprojModel). */
export function setClipBase(
  w: GGUFWriter,
  c: VisionShape & {
    name: string;
    projectorType: string;
    imageSize: number;
    patchSize: number;
    projectionDim: number;
    eps: number;
    mean: readonly number[];
    std: readonly number[];
    fileType: number;
  },
): void {
  setMmprojHeader(w, { ...c, encoder: "vision" });
  w.setUint32("clip.vision.image_size", c.imageSize);
  w.setUint32("clip.vision.patch_size", c.patchSize);
  w.setUint32("clip.vision.embedding_length", c.nEmbd);
  w.setUint32("clip.vision.feed_forward_length", c.nFf);
  w.setUint32("clip.vision.block_count", c.nLayer);
  w.setUint32("clip.vision.attention.head_count", c.nHead);
  w.setUint32("clip.vision.projection_dim", c.projectionDim);
  w.setFloat32("clip.vision.attention.layer_norm_epsilon", c.eps);
  w.setArray("clip.vision.image_mean", GGUFValueType.FLOAT32, c.mean);
  w.setArray("clip.vision.image_std", GGUFValueType.FLOAT32, c.std);
}

/** `general.file_type` (llama_ftype) for a given matrix type: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7. */
export function fileTypeOf(t: GGMLType): number {
  return t === GGMLType.F32 ? 0 : t === GGMLType.F16 ? 1 : 7;
}

/** `tokenizer.*` keys for a byte-level BPE ("gpt2") vocabulary. */
export function setTokenizer(
  w: GGUFWriter,
  vocab: Pick<Vocab, "tokens" | "types" | "merges" | "id">,
  t: { pre: string; bos: string; eos: string; pad: string; chatTemplate: string; addBos?: boolean },
): void {
  w.setString("tokenizer.ggml.model", "gpt2");
  w.setString("tokenizer.ggml.pre", t.pre);
  w.setArray("tokenizer.ggml.tokens", GGUFValueType.STRING, vocab.tokens);
  w.setArray("tokenizer.ggml.token_type", GGUFValueType.INT32, vocab.types);
  w.setArray("tokenizer.ggml.merges", GGUFValueType.STRING, vocab.merges);
  w.setUint32("tokenizer.ggml.bos_token_id", vocab.id(t.bos));
  w.setUint32("tokenizer.ggml.eos_token_id", vocab.id(t.eos));
  w.setUint32("tokenizer.ggml.padding_token_id", vocab.id(t.pad));
  w.setBool("tokenizer.ggml.add_bos_token", t.addBos ?? false);
  w.setBool("tokenizer.ggml.add_eos_token", false);
  w.setString("tokenizer.chat_template", t.chatTemplate);
}

/** The keys every mmproj starts with: general.*, which encoder it has, and its projector type. */
export function setMmprojHeader(w: GGUFWriter, c: { name: string; fileType: number; encoder: "vision" | "audio"; projectorType: string }): void {
  w.setString("general.architecture", "clip");
  w.setString("general.type", "mmproj");
  w.setString("general.name", c.name);
  w.setUint32("general.file_type", c.fileType);
  w.setBool(`clip.has_${c.encoder}_encoder`, true);
  w.setString("clip.projector_type", c.projectorType);
}
