/**
 * The Whisper audio encoder shared by the audio recipes (ultravox-tiny, qwen2audio-tiny): the
 * `a.*` tensors and `clip.audio.*` keys that tools/mtmd/clip.cpp loads for PROJECTOR_TYPE_ULTRAVOX
 * and PROJECTOR_TYPE_QWEN2A (graph: models/whisper-enc.cpp), as conversion/ultravox.py writes them.
 *
 * The mel front end is not in the GGUF: libmtmd (mtmd-audio.cpp, mtmd_audio_preprocessor_whisper)
 * computes the mel filter bank itself from `clip.audio.num_mel_bins` and its fixed Whisper
 * settings (16 kHz, n_fft 400, hop 160), pads 30 s of silence after the clip and cuts the log-mel
 * spectrogram into 30 s windows of 3000 frames, dropping the last incomplete one. Every window
 * is one audio chunk of a fixed number of tokens (`whisperChunkTokens`).
 */
import { GGMLType } from "../gguf/types.js";
import type { GGUFWriter } from "../gguf/writer.js";
import { QK_STD, addLayerNorm, addLinear, addNormal, setMmprojHeader, type VisionWeights } from "./layers.js";
import type { Recipe, RecipeBuild, RecipeOptions } from "./recipe.js";

/** Sample rate of every Whisper-style projector (`mtmd_get_audio_sample_rate`). */
export const WHISPER_SAMPLE_RATE = 16000;
/** Mel frames per second (hop of 160 samples). */
export const WHISPER_FRAMES_PER_SECOND = 100;
/** Mel frames in one encoder window: 30 s. */
export const WHISPER_CHUNK_FRAMES = 3000;
/** Encoder positions per window: the second convolution has stride 2. */
export const WHISPER_POSITIONS = WHISPER_CHUNK_FRAMES / 2;

export interface WhisperShape {
  nEmbd: number;
  nFf: number;
  nLayer: number;
  nHead: number;
  /** `clip.audio.num_mel_bins`: 128 in Whisper large-v3 (Ultravox v0.5, Qwen2-Audio). */
  nMel: number;
}

/** The projector types the Whisper encoder is written for. */
export type WhisperProjector = "ultravox" | "qwen2a";

/**
 * Tokens libmtmd makes of one 30 s window: `clip_n_output_tokens` for the projector (clip.cpp):
 * Ultravox stacks `stackFactor` frames, then halves; Qwen2-Audio halves (conv) and pools by 2.
 */
export function whisperChunkTokens(projector: WhisperProjector, stackFactor = 1): number {
  if (projector === "qwen2a") return WHISPER_CHUNK_FRAMES / 2 / 2;
  const aligned = Math.ceil(WHISPER_CHUNK_FRAMES / stackFactor) * stackFactor;
  return Math.floor(aligned / stackFactor / 2);
}

/**
 * Rows `build_stack` (clip.cpp) really makes of one window for an encoder `nEmbd` wide. It pads
 * with GGML_PAD, a bit mask that is only a round-up for powers of two, so the count depends on
 * the width: where it differs from `whisperChunkTokens` the pinned tree aborts every audio
 * ("expected output 187 tokens, got 188" for a width of 64 and a stack factor of 8).
 */
export function ultravoxStackedRows(nEmbd: number, stackFactor: number): number {
  const total = BigInt(nEmbd * WHISPER_POSITIONS);
  const stride = BigInt(nEmbd * stackFactor);
  const padded = (total + stride - 1n) & ~(stride - 1n);
  return Number(padded / stride);
}

/** Whether the pinned tree runs an Ultravox encoder of this width and stack factor. */
export function ultravoxWidthWorks(nEmbd: number, stackFactor: number): boolean {
  return stackFactor <= 1 || ultravoxStackedRows(nEmbd, stackFactor) === whisperChunkTokens("ultravox", stackFactor);
}

/**
 * Audio chunks (30 s windows) libmtmd makes of `nSamples` samples at 16 kHz: it appends 30 s of
 * silence plus a 200-sample reflection each side, takes frames of 400 every 160, and keeps only
 * whole windows. A clip of exactly 30 s therefore makes two chunks (the second silent).
 */
export function whisperChunks(nSamples: number): number {
  const padded = Math.max(nSamples, 201) + 30 * WHISPER_SAMPLE_RATE + 400;
  const frames = Math.floor((padded - 400) / 160) + 1;
  return Math.floor(frames / WHISPER_CHUNK_FRAMES);
}

/** Keys of an audio-only mmproj (conversion/base.py MmprojModel with has_audio_encoder). */
export function setAudioClipBase(
  w: GGUFWriter,
  c: WhisperShape & { name: string; projectorType: WhisperProjector; projectionDim: number; eps: number; fileType: number },
): void {
  setMmprojHeader(w, { ...c, encoder: "audio" });
  setAudioClipKeys(w, c);
}

/** The `clip.audio.*` keys of a Whisper encoder (also in an omni mmproj, beside the `clip.vision.*` ones). */
export function setAudioClipKeys(w: GGUFWriter, c: WhisperShape & { projectionDim: number; eps: number }): void {
  w.setUint32("clip.audio.projection_dim", c.projectionDim);
  w.setUint32("clip.audio.embedding_length", c.nEmbd);
  w.setUint32("clip.audio.feed_forward_length", c.nFf);
  w.setUint32("clip.audio.block_count", c.nLayer);
  w.setUint32("clip.audio.attention.head_count", c.nHead);
  w.setUint32("clip.audio.num_mel_bins", c.nMel);
  w.setFloat32("clip.audio.attention.layer_norm_epsilon", c.eps);
}

/**
 * The Whisper encoder's tensors, as the converter names and types them: two Conv1D layers (F16
 * kernels, as the converter forces; biases transposed to {1, n}), learned positions for one
 * 30 s window, pre-norm blocks whose K projection has no bias, and the final LayerNorm.
 */
export function addWhisperEncoder(w: GGUFWriter, s: WhisperShape, o: VisionWeights): void {
  if (s.nEmbd % s.nHead !== 0) throw new Error(`Whisper encoder: ${s.nHead} heads do not split a width of ${s.nEmbd}`);
  addNormal(w, "a.conv1d.1.weight", [3, s.nMel, s.nEmbd], GGMLType.F16, o.seed);
  addNormal(w, "a.conv1d.1.bias", [1, s.nEmbd], GGMLType.F32, o.seed);
  addNormal(w, "a.conv1d.2.weight", [3, s.nEmbd, s.nEmbd], GGMLType.F16, o.seed);
  addNormal(w, "a.conv1d.2.bias", [1, s.nEmbd], GGMLType.F32, o.seed);
  addNormal(w, "a.position_embd.weight", [s.nEmbd, WHISPER_POSITIONS], GGMLType.F32, o.seed);
  for (let i = 0; i < s.nLayer; i++) {
    const p = `a.blk.${i}`;
    addLayerNorm(w, `${p}.ln1`, s.nEmbd, o.seed);
    addLinear(w, `${p}.attn_q`, s.nEmbd, s.nEmbd, o, true, QK_STD);
    addLinear(w, `${p}.attn_k`, s.nEmbd, s.nEmbd, o, false, QK_STD);
    addLinear(w, `${p}.attn_v`, s.nEmbd, s.nEmbd, o);
    addLinear(w, `${p}.attn_out`, s.nEmbd, s.nEmbd, o);
    addLayerNorm(w, `${p}.ln2`, s.nEmbd, o.seed);
    addLinear(w, `${p}.ffn_up`, s.nEmbd, s.nFf, o);
    addLinear(w, `${p}.ffn_down`, s.nFf, s.nEmbd, o);
  }
  addLayerNorm(w, "a.post_ln", s.nEmbd, o.seed);
}

/**
 * A Recipe entry for an audio recipe. Audio projectors have no image size: `imageSize` is 0 and
 * fixed; `visionType` sets the type of the audio projector's matrices.
 */
export function audioRecipe<S extends object>(name: string, description: string, shape: S, build: (shape: S, options: RecipeOptions) => RecipeBuild): Recipe {
  return {
    name,
    kind: "tiny",
    description,
    defaults: { textType: "f32", visionType: "f32", head: "printable", imageSize: 0 },
    shape,
    build: (o) => build(shape, o),
  };
}

