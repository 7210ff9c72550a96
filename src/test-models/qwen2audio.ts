import { GGUFWriter } from "../gguf/writer.js";
import { MERGE_CORPUS, TokenType, VocabBuilder, trainMerges, type Vocab } from "./bpe.js";
import { addDecoderTensors, addLinear, fileTypeOf, setDecoderHparams, setTokenizer } from "./layers.js";
import type { RecipeBuild, RecipeOptions } from "./recipe.js";
import { addWhisperEncoder, setAudioClipBase, whisperChunkTokens, type WhisperShape } from "./whisper.js";

/**
 * Qwen2-Audio-7B-Instruct's chat template (its processor's chat template). With string content,
 * as llama.cpp renders it, the audio goes where the prompt puts the media marker and libmtmd
 * wraps it in `<|audio_bos|>` ... `<|audio_eos|>` itself; the template writes those tokens only
 * for structured `audio` content parts.
 */
export const QWEN2AUDIO_CHAT_TEMPLATE =
  "{% set audio_count = namespace(value=0) %}{% for message in messages %}" +
  "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}" +
  "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n" +
  "{% else %}{% for content in message['content'] %}" +
  "{% if 'audio' in content or 'audio_url' in content %}" +
  "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n" +
  "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n" +
  "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/** Qwen2-Audio added tokens in their real order (ids 151643..151648 in the released tokenizer). */
const QWEN2AUDIO_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"];

export interface Qwen2AudioDims {
  name: string;
  /** Qwen2 decoder (Q/K/V biases). */
  text: { nEmbd: number; nLayer: number; nHead: number; nHeadKv: number; nFf: number; contextLength: number };
  audio: WhisperShape;
  merges: number;
}

/**
 * A 128-wide encoder (2 heads of 64). Qwen2-Audio does not stack frames, so any width works:
 * 750 tokens per 30 s window (conv stride 2, then average pooling by 2).
 */
export const QWEN2AUDIO_TINY: Qwen2AudioDims = {
  name: "tiny-qwen2audio",
  text: { nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 512, contextLength: 4096 },
  audio: { nEmbd: 128, nFf: 256, nLayer: 2, nHead: 2, nMel: 128 },
  merges: 200,
};

/** Audio tokens per 30 s window. */
export function qwen2AudioChunkTokens(): number {
  return whisperChunkTokens("qwen2a");
}

function qwen2AudioVocab(d: Qwen2AudioDims): Vocab {
  const v = new VocabBuilder().addBytes().addMerges(trainMerges(MERGE_CORPUS, d.merges));
  for (const s of QWEN2AUDIO_SPECIALS) v.add(s, TokenType.CONTROL);
  return v.build();
}

export function buildQwen2Audio(d: Qwen2AudioDims, o: RecipeOptions): RecipeBuild {
  const vocab = qwen2AudioVocab(d);
  const t = d.text;
  const a = d.audio;

  const text = new GGUFWriter();
  setDecoderHparams(text, "qwen2", { ...t, name: d.name, fileType: fileTypeOf(o.textType), ropeFreqBase: 10000, rmsEps: 1e-5 });
  setTokenizer(text, vocab, {
    pre: "qwen2",
    bos: "<|endoftext|>",
    eos: "<|im_end|>",
    pad: "<|endoftext|>",
    addBos: false,
    chatTemplate: QWEN2AUDIO_CHAT_TEMPLATE,
  });
  addDecoderTensors(text, { ...t, qkvBias: true }, { seed: o.seed, matrixType: o.textType, head: o.head }, vocab);

  const mmproj = new GGUFWriter();
  setAudioClipBase(mmproj, {
    ...a,
    name: `${d.name}-mmproj`,
    projectorType: "qwen2a",
    projectionDim: t.nEmbd,
    eps: 1e-5,
    fileType: fileTypeOf(o.visionType),
  });
  const ao = { seed: o.seed, matrixType: o.visionType };
  addWhisperEncoder(mmproj, a, ao);
  // Qwen2AudioMultiModalProjector: one biased linear layer from the pooled encoder output.
  addLinear(mmproj, "mm.a.fc", a.nEmbd, t.nEmbd, ao);
  return { text, mmproj };
}
