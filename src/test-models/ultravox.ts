import { GGMLType } from "../gguf/types.js";
import { GGUFWriter } from "../gguf/writer.js";
import { MERGE_CORPUS, TokenType, VocabBuilder, trainMerges, type Vocab } from "./bpe.js";
import { addDecoderTensors, addNormal, fileTypeOf, setDecoderHparams, setTokenizer } from "./layers.js";
import { constantFill } from "./random.js";
import type { RecipeBuild, RecipeOptions } from "./recipe.js";
import { addWhisperEncoder, setAudioClipBase, ultravoxStackedRows, ultravoxWidthWorks, whisperChunkTokens, type WhisperShape } from "./whisper.js";

/**
 * Llama 3.1 Instruct's chat template (meta-llama/Llama-3.1-8B-Instruct, tokenizer_config.json;
 * the same text as vendor/llama.cpp/models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja).
 * Ultravox ships its Llama base model's template. The audio goes where the prompt puts the media
 * marker; libmtmd adds no begin/end tokens around Ultravox audio.
 */
export const LLAMA31_CHAT_TEMPLATE = [
  "{{- bos_token }}",
  "{%- if custom_tools is defined %}",
  "    {%- set tools = custom_tools %}",
  "{%- endif %}",
  "{%- if not tools_in_user_message is defined %}",
  "    {%- set tools_in_user_message = true %}",
  "{%- endif %}",
  "{%- if not date_string is defined %}",
  "    {%- set date_string = \"26 Jul 2024\" %}",
  "{%- endif %}",
  "{%- if not tools is defined %}",
  "    {%- set tools = none %}",
  "{%- endif %}",
  "",
  "{#- This block extracts the system message, so we can slot it into the right place. #}",
  "{%- if messages[0]['role'] == 'system' %}",
  "    {%- set system_message = messages[0]['content']|trim %}",
  "    {%- set messages = messages[1:] %}",
  "{%- else %}",
  "    {%- set system_message = \"\" %}",
  "{%- endif %}",
  "",
  "{#- System message + builtin tools #}",
  "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}",
  "{%- if builtin_tools is defined or tools is not none %}",
  "    {{- \"Environment: ipython\\n\" }}",
  "{%- endif %}",
  "{%- if builtin_tools is defined %}",
  "    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}",
  "{%- endif %}",
  "{{- \"Cutting Knowledge Date: December 2023\\n\" }}",
  "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}",
  "{%- if tools is not none and not tools_in_user_message %}",
  "    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}",
  "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}",
  "    {{- \"Do not use variables.\\n\\n\" }}",
  "    {%- for t in tools %}",
  "        {{- t | tojson(indent=4) }}",
  "        {{- \"\\n\\n\" }}",
  "    {%- endfor %}",
  "{%- endif %}",
  "{{- system_message }}",
  "{{- \"<|eot_id|>\" }}",
  "",
  "{#- Custom tools are passed in a user message with some extra guidance #}",
  "{%- if tools_in_user_message and not tools is none %}",
  "    {#- Extract the first user message so we can plug it in here #}",
  "    {%- if messages | length != 0 %}",
  "        {%- set first_user_message = messages[0]['content']|trim %}",
  "        {%- set messages = messages[1:] %}",
  "    {%- else %}",
  "        {{- raise_exception(\"Cannot put tools in the first user message when there's no first user message!\") }}",
  "{%- endif %}",
  "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}",
  "    {{- \"Given the following functions, please respond with a JSON for a function call \" }}",
  "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}",
  "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}",
  "    {{- \"Do not use variables.\\n\\n\" }}",
  "    {%- for t in tools %}",
  "        {{- t | tojson(indent=4) }}",
  "        {{- \"\\n\\n\" }}",
  "    {%- endfor %}",
  "    {{- first_user_message + \"<|eot_id|>\"}}",
  "{%- endif %}",
  "",
  "{%- for message in messages %}",
  "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}",
  "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}",
  "    {%- elif 'tool_calls' in message %}",
  "        {%- if not message.tool_calls|length == 1 %}",
  "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}",
  "        {%- endif %}",
  "        {%- set tool_call = message.tool_calls[0].function %}",
  "        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}",
  "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}",
  "            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}",
  "            {%- for arg_name, arg_val in tool_call.arguments | items %}",
  "                {{- arg_name + '=\"' + arg_val + '\"' }}",
  "                {%- if not loop.last %}",
  "                    {{- \", \" }}",
  "                {%- endif %}",
  "                {%- endfor %}",
  "            {{- \")\" }}",
  "        {%- else  %}",
  "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}",
  "            {{- '{\"name\": \"' + tool_call.name + '\", ' }}",
  "            {{- '\"parameters\": ' }}",
  "            {{- tool_call.arguments | tojson }}",
  "            {{- \"}\" }}",
  "        {%- endif %}",
  "        {%- if builtin_tools is defined %}",
  "            {#- This means we're in ipython mode #}",
  "            {{- \"<|eom_id|>\" }}",
  "        {%- else %}",
  "            {{- \"<|eot_id|>\" }}",
  "        {%- endif %}",
  "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}",
  "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}",
  "        {%- if message.content is mapping or message.content is iterable %}",
  "            {{- message.content | tojson }}",
  "        {%- else %}",
  "            {{- message.content }}",
  "        {%- endif %}",
  "        {{- \"<|eot_id|>\" }}",
  "    {%- endif %}",
  "{%- endfor %}",
  "{%- if add_generation_prompt %}",
  "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}",
  "{%- endif %}",
  "",
].join("\n");

/** Llama 3 special tokens in their real order (ids 128000..128010 in the released tokenizer). */
const LLAMA3_SPECIALS = [
  "<|begin_of_text|>",
  "<|end_of_text|>",
  "<|reserved_special_token_0|>",
  "<|reserved_special_token_1|>",
  "<|finetune_right_pad_id|>",
  "<|reserved_special_token_2|>",
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<|eom_id|>",
  "<|eot_id|>",
  "<|python_tag|>",
];

export interface UltravoxDims {
  name: string;
  /** Llama 3.2-style decoder. */
  text: { nEmbd: number; nLayer: number; nHead: number; nHeadKv: number; nFf: number; contextLength: number };
  audio: WhisperShape;
  /** `clip.audio.projector.stack_factor`: encoder frames stacked per token (8 in Ultravox v0.5). */
  stackFactor: number;
  /** Build even a width the pinned tree aborts on (for the test that the library refuses it at load). */
  unchecked?: boolean;
  /** Output width of the projector's first linear layer; SwiGLU halves it. */
  projectorHidden: number;
  merges: number;
}

/**
 * A 160-wide encoder (2 heads of 80, a flash-attention head size) with Ultravox's stack factor of
 * 8: 187 tokens per 30 s window. Widths whose stacked stride (8 x width) is a power of two (64,
 * 128, 256, ...) and most other multiples of 32 below 320 make the pinned tree abort
 * (see `ultravoxWidthWorks`); 160, 224 and 320 work.
 */
export const ULTRAVOX_TINY: UltravoxDims = {
  name: "tiny-ultravox",
  text: { nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 512, contextLength: 4096 },
  audio: { nEmbd: 160, nFf: 320, nLayer: 2, nHead: 2, nMel: 128 },
  stackFactor: 8,
  projectorHidden: 512,
  merges: 200,
};

/**
 * fixie-ai/ultravox-v0_5-llama-3_2-1b's dimensions, for the bench (recipe `ultravox-bench`): the
 * encoder of openai/whisper-large-v3-turbo (1280 wide, 32 layers, 20 heads of 64, FFN 5120, 128 mel
 * bins; the one real Whisper width the pinned tree runs with a stack factor of 8), Ultravox's
 * projector (stack factor 8, `hidden_size` 4096: 10240 -> 4096, SwiGLU to 2048, -> 2048) and
 * meta-llama/Llama-3.2-1B-Instruct (2048 wide, 16 layers, 32 heads, 8 KV heads, FFN 8192, 128K
 * context, tied output). The vocabulary is the generator's small Llama 3 one, not Llama 3's 128256
 * tokens, so the output head costs less per token than the real model's.
 */
export const ULTRAVOX_BENCH: UltravoxDims = {
  name: "ultravox-v0.5-llama-3.2-1b-shape",
  text: { nEmbd: 2048, nLayer: 16, nHead: 32, nHeadKv: 8, nFf: 8192, contextLength: 131072 },
  audio: { nEmbd: 1280, nFf: 5120, nLayer: 32, nHead: 20, nMel: 128 },
  stackFactor: 8,
  projectorHidden: 4096,
  merges: 200,
};

/** Audio tokens per 30 s window of this recipe. */
export function ultravoxChunkTokens(d: UltravoxDims): number {
  return whisperChunkTokens("ultravox", d.stackFactor);
}

function llama3Vocab(d: UltravoxDims): Vocab {
  const v = new VocabBuilder().addBytes().addMerges(trainMerges(MERGE_CORPUS, d.merges));
  for (const s of LLAMA3_SPECIALS) v.add(s, TokenType.CONTROL);
  return v.build();
}

export function buildUltravox(d: UltravoxDims, o: RecipeOptions): RecipeBuild {
  const a = d.audio;
  if (!d.unchecked && !ultravoxWidthWorks(a.nEmbd, d.stackFactor)) {
    throw new Error(
      `${d.name}: an encoder ${a.nEmbd} wide with stack factor ${d.stackFactor} makes ${ultravoxStackedRows(a.nEmbd, d.stackFactor)} ` +
        `tokens per window where libmtmd expects ${whisperChunkTokens("ultravox", d.stackFactor)}; the pinned tree aborts on it`,
    );
  }
  if (d.projectorHidden % 2 !== 0) throw new Error(`${d.name}: the projector's hidden width must be even (SwiGLU halves it)`);
  const vocab = llama3Vocab(d);
  const t = d.text;

  const text = new GGUFWriter();
  setDecoderHparams(text, "llama", { ...t, name: d.name, fileType: fileTypeOf(o.textType), ropeFreqBase: 500000, rmsEps: 1e-5 });
  text.setUint32("llama.rope.dimension_count", t.nEmbd / t.nHead);
  text.setUint32("llama.vocab_size", vocab.tokens.length);
  setTokenizer(text, vocab, {
    pre: "llama-bpe",
    bos: "<|begin_of_text|>",
    eos: "<|eot_id|>",
    pad: "<|finetune_right_pad_id|>",
    addBos: true,
    chatTemplate: LLAMA31_CHAT_TEMPLATE,
  });
  addDecoderTensors(text, { ...t, qkvBias: false }, { seed: o.seed, matrixType: o.textType, head: o.head }, vocab);

  const mmproj = new GGUFWriter();
  setAudioClipBase(mmproj, {
    ...a,
    name: `${d.name}-mmproj`,
    projectorType: "ultravox",
    projectionDim: t.nEmbd,
    eps: 1e-5,
    fileType: fileTypeOf(o.visionType),
  });
  mmproj.setUint32("clip.audio.projector.stack_factor", d.stackFactor);
  const ao = { seed: o.seed, matrixType: o.visionType };
  addWhisperEncoder(mmproj, a, ao);
  // UltravoxProjector: RMSNorm over the stacked frames, linear_1 (no bias), SwiGLU, RMSNorm, linear_2 (no bias).
  const stacked = a.nEmbd * d.stackFactor;
  const half = d.projectorHidden / 2;
  mmproj.addTensor({ name: "mm.a.norm_pre.weight", ne: [stacked], type: GGMLType.F32, data: constantFill(1) });
  addNormal(mmproj, "mm.a.mlp.1.weight", [stacked, d.projectorHidden], o.visionType, o.seed);
  mmproj.addTensor({ name: "mm.a.norm_mid.weight", ne: [half], type: GGMLType.F32, data: constantFill(1) });
  addNormal(mmproj, "mm.a.mlp.2.weight", [half, t.nEmbd], o.visionType, o.seed);
  return { text, mmproj };
}
