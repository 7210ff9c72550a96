/**
 * Qwen2.5-Omni (the thinker): one mmproj with a Qwen2.5-VL vision encoder and a Qwen2-Audio-style
 * Whisper encoder, as conversion/qwenvl.py's Qwen25OmniModel writes it (projector type
 * `qwen2.5o`, which tools/mtmd/clip.cpp loads twice: as QWEN25VL for vision and QWEN2A for
 * audio). The text model is the `qwen2vl` architecture (Qwen2 with M-RoPE).
 *
 * What Qwen2.5-VL's vision tower adds over Qwen2-VL's, and this recipe writes:
 * - RMSNorm (weight only) for the block norms and the merger's `ln_q` (`v.post_ln`);
 * - a gated SiLU MLP (`ffn_gate`, `ffn_up`, `ffn_down`, all biased; `clip.use_silu`);
 * - window attention: `clip.vision.n_wa_pattern` (every n-th block attends over the whole image,
 *   the others within 112-pixel windows; 2 here, so both kinds run).
 */
import { GGMLType } from "../gguf/types.js";
import type { GGUFWriter } from "../gguf/writer.js";
import { QK_STD, addLinear, type VisionShape, type VisionWeights } from "./layers.js";
import { addQwenPatchEmbedding, buildQwenVLText, qwenVisionMmproj, type Qwen2VLDims } from "./qwen2vl.js";
import { constantFill } from "./random.js";
import type { RecipeBuild, RecipeOptions } from "./recipe.js";
import { addWhisperEncoder, setAudioClipKeys, type WhisperShape } from "./whisper.js";

/**
 * Qwen2.5-Omni's chat template (its processor's): images, audio and video parts each get their
 * own begin/end tokens. llama.cpp renders string content, so the media go where the prompt puts
 * the marker, and libmtmd adds the begin/end text itself.
 */
export const QWEN25OMNI_CHAT_TEMPLATE =
  "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}" +
  "{% for message in messages %}" +
  "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}" +
  "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n" +
  "{% else %}{% for content in message['content'] %}" +
  "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}" +
  "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>" +
  "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}" +
  "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: {% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>" +
  "{% elif content['type'] == 'video' or 'video' in content %}" +
  "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>" +
  "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n" +
  "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/**
 * Qwen2.5-Omni's added tokens in their real order (ids 151643..151656 in the released tokenizer:
 * <|AUDIO|> 151646, <|vision_bos|> 151652, <|IMAGE|> 151655, <|VIDEO|> 151656). Unlike Qwen2-VL
 * it has no `<|vision_start|>`: libmtmd's QWEN25VL path writes that text around each image, and
 * on the real model it is tokenized as plain text, as it is here.
 */
const QWEN25OMNI_SPECIALS = [
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
  "<|AUDIO|>",
  "<|audio_bos|>",
  "<|audio_eos|>",
  "<|box_end|>",
  "<|quad_start|>",
  "<|quad_end|>",
  "<|vision_bos|>",
  "<|vision_eos|>",
  "<|vision_pad|>",
  "<|IMAGE|>",
  "<|VIDEO|>",
];

export interface Qwen25OmniDims extends Omit<Qwen2VLDims, "vision"> {
  vision: VisionShape & { imageSize: number; windowPattern: number };
  audio: WhisperShape;
}

/** Head dims of 64 everywhere (text, vision, audio). */
export const QWEN25OMNI_TINY: Qwen25OmniDims = {
  name: "tiny-qwen25omni",
  text: { nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 512, contextLength: 4096 },
  ropeSections: [8, 12, 12, 0],
  vision: { nEmbd: 128, nFf: 256, nLayer: 2, nHead: 2, imageSize: 560, windowPattern: 2 },
  audio: { nEmbd: 128, nFf: 256, nLayer: 2, nHead: 2, nMel: 128 },
  merges: 200,
};

function addRmsNorm(w: GGUFWriter, name: string, n: number): void {
  w.addTensor({ name: `${name}.weight`, ne: [n], type: GGMLType.F32, data: constantFill(1) });
}

/** Qwen2.5-VL's vision blocks: RMSNorm, biased attention, gated SiLU MLP with biases. */
function addQwen25VisionBlocks(w: GGUFWriter, s: VisionShape, o: VisionWeights): void {
  for (let i = 0; i < s.nLayer; i++) {
    const p = `v.blk.${i}`;
    addRmsNorm(w, `${p}.ln1`, s.nEmbd);
    addLinear(w, `${p}.attn_q`, s.nEmbd, s.nEmbd, o, true, QK_STD);
    addLinear(w, `${p}.attn_k`, s.nEmbd, s.nEmbd, o, true, QK_STD);
    addLinear(w, `${p}.attn_v`, s.nEmbd, s.nEmbd, o);
    addLinear(w, `${p}.attn_out`, s.nEmbd, s.nEmbd, o);
    addRmsNorm(w, `${p}.ln2`, s.nEmbd);
    addLinear(w, `${p}.ffn_gate`, s.nEmbd, s.nFf, o);
    addLinear(w, `${p}.ffn_up`, s.nEmbd, s.nFf, o);
    addLinear(w, `${p}.ffn_down`, s.nFf, s.nEmbd, o);
  }
}

export function buildQwen25Omni(d: Qwen25OmniDims, o: RecipeOptions): RecipeBuild {
  const t = d.text;
  const text = buildQwenVLText(d, o, QWEN25OMNI_SPECIALS, QWEN25OMNI_CHAT_TEMPLATE);

  const v = d.vision;
  const a = d.audio;
  const mmproj = qwenVisionMmproj(`${d.name}-mmproj`, "qwen2.5o", v, t.nEmbd, o);
  mmproj.setBool("clip.has_audio_encoder", true);
  mmproj.setBool("clip.use_silu", true);
  mmproj.setUint32("clip.vision.n_wa_pattern", v.windowPattern);
  setAudioClipKeys(mmproj, { ...a, projectionDim: t.nEmbd, eps: 1e-5 });

  const wo = { seed: o.seed, matrixType: o.visionType };
  addQwenPatchEmbedding(mmproj, v.nEmbd, o);
  addQwen25VisionBlocks(mmproj, v, wo);
  addRmsNorm(mmproj, "v.post_ln", v.nEmbd);
  addLinear(mmproj, "mm.0", 4 * v.nEmbd, 4 * v.nEmbd, wo);
  addLinear(mmproj, "mm.2", 4 * v.nEmbd, t.nEmbd, wo);

  // The audio tower: Qwen2-Audio's Whisper encoder; its `proj` is the projector (mm.a.fc).
  addWhisperEncoder(mmproj, a, wo);
  addLinear(mmproj, "mm.a.fc", a.nEmbd, t.nEmbd, wo);
  return { text, mmproj };
}
