// An OpenAI chat-completions request body → MultimodalLM chat options, checked field by field
// with OpenAI's names. Messages are checked by the library's parser (src/messages.ts) and passed
// on as sent; response_format, tools, tool_choice, logprobs and logit_bias are reshaped into the
// library's options, which MultimodalLM.chat checks against the model. Extra fields of vllm-mlx
// (video_fps, video_max_frames), LMDeploy (media_io_kwargs, mm_processor_kwargs) and llama-server
// (grammar, json_schema) are read top-level or inside extra_body; unknown fields are ignored, as
// OpenAI-compatible servers do.
import { MultimodalLMError } from "../errors.js";
import { MAX_VIDEO_FRAMES } from "../media/video.js";
import { parseMessages, type ChatMessage, type ParsedChat } from "../messages.js";
import type { CallImageOptions, CallVideoOptions } from "../multimodal-lm.js";
import { resolveSampling, TEMPERATURE_MAX, type SamplingOptions } from "../options.js";
import type { StructuredOptions } from "../structured.js";
import { describeValue, is } from "../validate.js";
import { HttpError } from "./http-errors.js";

export interface ChatCompletionRequest {
  model: string | undefined;
  /** The messages as sent (checked): media stay references until the media policy resolves them. */
  messages: ChatMessage[];
  stream: boolean;
  includeUsage: boolean;
  /** Sampling, with logprobs, topLogprobs and logitBias. */
  sampling: Omit<SamplingOptions, "signal">;
  /** response_format, grammar, tools, tool_choice, parallel_tool_calls. */
  structured: StructuredOptions;
  /** Library option names → the request's field names, for errors (see toOpenAIError). */
  paramNames: Array<[string, string]>;
  image: CallImageOptions;
  video: CallVideoOptions;
}

function invalid(param: string, expected: string, value: unknown): HttpError {
  return new HttpError(400, "E_INVALID_ARGUMENT", `Expected ${expected} for ${param} but received ${describeValue(value)}`, { param });
}

function unsupported(param: string, message: string): HttpError {
  return new HttpError(400, "E_INVALID_ARGUMENT", message, { param });
}

/** `body[key]`, with null read as absent (some clients send every field). */
function field(body: Record<string, unknown>, key: string): unknown {
  const value = body[key];
  return value === null ? undefined : value;
}

function number(body: Record<string, unknown>, key: string, min: number, max: number, param = key): number | undefined {
  const value = field(body, key);
  if (value === undefined) return undefined;
  if (!is.number(value) || value < min || value > max) throw invalid(param, `a number between ${min} and ${max}`, value);
  return value;
}

function positive(body: Record<string, unknown>, key: string, max: number, param = key): number | undefined {
  const value = field(body, key);
  if (value === undefined) return undefined;
  if (!is.number(value) || value <= 0 || value > max) throw invalid(param, `a positive number up to ${max}`, value);
  return value;
}

function integer(body: Record<string, unknown>, key: string, min: number, max: number, param = key): number | undefined {
  const value = field(body, key);
  if (value === undefined) return undefined;
  if (!is.integer(value) || value < min || value > max) throw invalid(param, `an integer between ${min} and ${max}`, value);
  return value;
}

function object(body: Record<string, unknown>, key: string, param = key): Record<string, unknown> {
  const value = field(body, key);
  if (value === undefined) return {};
  if (!is.object(value)) throw invalid(param, "an object", value);
  return value;
}

const MAX_PIXELS = Number.MAX_SAFE_INTEGER;
const MAX_SEED = 0xfffffffe;

/** The sampling fields, OpenAI names → SamplingOptions. */
function readSampling(body: Record<string, unknown>): Omit<SamplingOptions, "signal"> {
  const sampling: Omit<SamplingOptions, "signal"> = {};
  const maxTokens = integer(body, "max_completion_tokens", 1, 1 << 30) ?? integer(body, "max_tokens", 1, 1 << 30);
  if (maxTokens !== undefined) sampling.maxTokens = maxTokens;
  const temperature = number(body, "temperature", 0, TEMPERATURE_MAX);
  if (temperature !== undefined) sampling.temperature = temperature;
  const topP = number(body, "top_p", 0, 1);
  if (topP !== undefined) sampling.topP = topP;
  // vLLM's top_k: -1 (and 0) mean no limit.
  const topK = integer(body, "top_k", -1, 1 << 30);
  if (topK !== undefined) sampling.topK = Math.max(0, topK);
  const minP = number(body, "min_p", 0, 1);
  if (minP !== undefined) sampling.minP = minP;
  const presence = number(body, "presence_penalty", -2, 2);
  if (presence !== undefined) sampling.presencePenalty = presence;
  const frequency = number(body, "frequency_penalty", -2, 2);
  if (frequency !== undefined) sampling.frequencyPenalty = frequency;
  const repetition = number(body, "repetition_penalty", 0, 100);
  if (repetition !== undefined) sampling.repeatPenalty = repetition;
  const seed = field(body, "seed");
  if (seed !== undefined) {
    if (!is.integer(seed) || !Number.isSafeInteger(seed)) throw invalid("seed", "an integer", seed);
    // OpenAI takes any integer; the sampler takes 0..2^32-2.
    sampling.seed = ((seed % (MAX_SEED + 1)) + MAX_SEED + 1) % (MAX_SEED + 1);
  }
  const stop = field(body, "stop");
  if (stop !== undefined) {
    const list = is.string(stop) ? [stop] : stop;
    if (!Array.isArray(list) || list.some((s) => !is.string(s))) throw invalid("stop", "a string or an array of strings", stop);
    const nonEmpty = (list as string[]).filter((s) => s.length > 0);
    if (nonEmpty.length > 0) sampling.stop = nonEmpty;
  }
  const ignoreEos = field(body, "ignore_eos");
  if (ignoreEos !== undefined) {
    if (!is.bool(ignoreEos)) throw invalid("ignore_eos", "a boolean", ignoreEos);
    sampling.ignoreEos = ignoreEos;
  }
  return sampling;
}

/** Fields we understand but cannot honour: refused, rather than silently giving a different answer. */
function refuseUnsupported(body: Record<string, unknown>): void {
  const n = field(body, "n");
  if (n !== undefined && n !== 1) throw unsupported("n", `Only n=1 is supported; received n=${describeValue(n)}. Send one request per completion.`);
  for (const key of ["functions", "function_call"]) {
    const value = field(body, key);
    if (Array.isArray(value) ? value.length > 0 : value !== undefined) {
      throw unsupported(key, `${key} (the legacy form of function calling) is not supported by this server. Send tools and tool_choice instead.`);
    }
  }
  const modalities = field(body, "modalities");
  if (Array.isArray(modalities) && modalities.some((m) => m !== "text")) {
    throw unsupported("modalities", 'Only the "text" output modality is supported.');
  }
}

/** Pixel bounds from an mm_processor_kwargs entry. */
function readPixels(kwargs: Record<string, unknown>, param: string): { minPixels?: number; maxPixels?: number } {
  const out: { minPixels?: number; maxPixels?: number } = {};
  const min = integer(kwargs, "min_pixels", 1, MAX_PIXELS, `${param}.min_pixels`);
  const max = integer(kwargs, "max_pixels", 1, MAX_PIXELS, `${param}.max_pixels`);
  if (min !== undefined) out.minPixels = min;
  if (max !== undefined) out.maxPixels = max;
  if (min !== undefined && max !== undefined && min > max) {
    throw invalid(`${param}.min_pixels`, `an integer no greater than max_pixels (${max})`, min);
  }
  return out;
}

/**
 * Media options: vllm-mlx's video_fps / video_max_frames, then LMDeploy's media_io_kwargs.video
 * (num_frames, fps, max_frames) and mm_processor_kwargs ({image,video}.{min,max}_pixels; flat
 * min/max_pixels apply to both; use_audio_in_video, as vLLM takes it for Qwen2.5-Omni). num_frames,
 * when given, wins over fps, as in LMDeploy.
 */
function readMediaOptions(body: Record<string, unknown>): { image: CallImageOptions; video: CallVideoOptions } {
  const video: CallVideoOptions = {};
  const fps = positive(body, "video_fps", 1000);
  if (fps !== undefined) video.fps = fps;
  const maxFrames = integer(body, "video_max_frames", 1, MAX_VIDEO_FRAMES);
  if (maxFrames !== undefined) video.maxFrames = maxFrames;

  const io = object(object(body, "media_io_kwargs"), "video", "media_io_kwargs.video");
  const ioFps = positive(io, "fps", 1000, "media_io_kwargs.video.fps");
  if (ioFps !== undefined) video.fps = ioFps;
  const ioMax = integer(io, "max_frames", 1, MAX_VIDEO_FRAMES, "media_io_kwargs.video.max_frames");
  if (ioMax !== undefined) video.maxFrames = ioMax;
  const numFrames = integer(io, "num_frames", 1, MAX_VIDEO_FRAMES, "media_io_kwargs.video.num_frames");
  if (numFrames !== undefined) video.numFrames = numFrames;

  const processor = object(body, "mm_processor_kwargs");
  // vLLM's switch for Qwen2.5-Omni: also read each video's sound track.
  const audio = field(processor, "use_audio_in_video");
  if (audio !== undefined) {
    if (!is.bool(audio)) throw invalid("mm_processor_kwargs.use_audio_in_video", "true or false", audio);
    video.audio = audio;
  }
  const shared = readPixels(processor, "mm_processor_kwargs");
  const image = { ...shared, ...readPixels(object(processor, "image", "mm_processor_kwargs.image"), "mm_processor_kwargs.image") };
  Object.assign(video, shared, readPixels(object(processor, "video", "mm_processor_kwargs.video"), "mm_processor_kwargs.video"));
  return { image, video };
}

/**
 * The messages as given, checked by the library's one message parser (roles, every content-part
 * type, tool calls and tool results). Media given by reference must be strings here: the media
 * policy resolves them later (MultimodalLM.chat's resolveMedia hook).
 */
function checkMessages(messages: unknown): ChatMessage[] {
  let parsed: ParsedChat;
  try {
    // The marker only stands for media in the template's text; any string does for checking.
    parsed = parseMessages(messages, "<__media__>");
  } catch (error) {
    if (error instanceof MultimodalLMError) throw new HttpError(400, error.code, error.message, { param: error.param ?? "messages", cause: error });
    throw error;
  }
  for (const ref of parsed.media) {
    if (!is.string(ref.input)) throw invalid(ref.param, "a URL or path string", ref.input);
  }
  return messages as ChatMessage[];
}

/** The library's camelCase names of top-level options → the request's snake_case fields. */
const PARAM_NAMES: ReadonlyArray<[string, string]> = [
  ["responseFormat", "response_format"],
  ["toolChoice", "tool_choice"],
  ["parallelToolCalls", "parallel_tool_calls"],
  ["topLogprobs", "top_logprobs"],
  ["logitBias", "logit_bias"],
  ["video.audio", "mm_processor_kwargs.use_audio_in_video"],
];

/**
 * Structured output and tools, OpenAI's fields (and llama-server's grammar and json_schema) →
 * the library's options. Only reshaped: MultimodalLM.chat checks them against the model.
 */
function readStructured(body: Record<string, unknown>): { structured: StructuredOptions; paramNames: Array<[string, string]> } {
  const structured: Record<string, unknown> = {};
  const paramNames = [...PARAM_NAMES];
  const format = field(body, "response_format");
  if (format !== undefined) structured.responseFormat = format;
  const schema = field(body, "json_schema");
  if (schema !== undefined) {
    if (format !== undefined) throw unsupported("json_schema", "Send either response_format or json_schema (llama-server's form), not both.");
    // llama-server's top-level schema: errors name it as sent.
    structured.responseFormat = { type: "json_schema", schema };
    paramNames.unshift(["responseFormat.schema", "json_schema"], ["responseFormat", "json_schema"]);
  }
  const grammar = field(body, "grammar");
  if (grammar !== undefined) structured.grammar = grammar;
  const tools = field(body, "tools");
  if (tools !== undefined) structured.tools = tools;
  const toolChoice = field(body, "tool_choice");
  if (toolChoice !== undefined) structured.toolChoice = toolChoice;
  const parallel = field(body, "parallel_tool_calls");
  if (parallel !== undefined) structured.parallelToolCalls = parallel;
  return { structured: structured as StructuredOptions, paramNames };
}

/** logprobs, top_logprobs and logit_bias → the library's sampling options, checked by it now. */
function readTokenOptions(body: Record<string, unknown>, sampling: Omit<SamplingOptions, "signal">): void {
  const logprobs = field(body, "logprobs");
  const top = field(body, "top_logprobs");
  if (top !== undefined && logprobs !== true) {
    throw unsupported("top_logprobs", `top_logprobs (${describeValue(top)}) needs logprobs: true; send both, or neither.`);
  }
  const bias = field(body, "logit_bias");
  const options = sampling as Record<string, unknown>;
  if (logprobs !== undefined) options.logprobs = logprobs;
  if (top !== undefined) options.topLogprobs = top;
  // Token ids are the object's keys (strings in JSON); the library checks them and the biases.
  if (bias !== undefined) options.logitBias = bias;
  try {
    resolveSampling(sampling);
  } catch (error) {
    throw toOpenAIError(error, PARAM_NAMES);
  }
}

function renamed(path: string, names: ReadonlyArray<[string, string]>): string {
  for (const [from, to] of names) {
    if (path === from || path.startsWith(`${from}.`) || path.startsWith(`${from}[`)) return to + path.slice(from.length);
  }
  return path;
}

/**
 * A library error as the HTTP client should see it: its `param` (and the same names in its
 * message) in the request's own field names, e.g. responseFormat.json_schema.schema →
 * response_format.json_schema.schema. Anything else is returned as it is.
 */
export function toOpenAIError(error: unknown, names: ReadonlyArray<[string, string]>): unknown {
  if (!(error instanceof MultimodalLMError) || error instanceof HttpError) return error;
  const param = error.param === undefined ? undefined : renamed(error.param, names);
  let message = error.param === undefined ? error.message : error.message.split(error.param).join(param);
  for (const [from, to] of names) if (!from.includes(".")) message = message.replace(new RegExp(`\\b${from}\\b`, "g"), to);
  if (param === error.param && message === error.message) return error;
  return new MultimodalLMError(error.code, message, { ...(param !== undefined ? { param } : {}), cause: error });
}

/** Checks a parsed JSON body and maps it; throws HttpError(400) naming the field at fault. */
export function parseChatCompletionRequest(input: unknown): ChatCompletionRequest {
  if (!is.object(input)) throw invalid("body", "a JSON object", input);
  // The OpenAI SDKs merge extra_body into the top level; clients that send it literally get the same.
  const extra = object(input, "extra_body");
  const body = { ...extra, ...input };
  refuseUnsupported(body);

  const model = field(body, "model");
  if (model !== undefined && !is.string(model)) throw invalid("model", "a string", model);
  const messages = checkMessages(field(body, "messages"));

  const stream = field(body, "stream");
  if (stream !== undefined && !is.bool(stream)) throw invalid("stream", "a boolean", stream);
  const streamOptions = object(body, "stream_options");
  const includeUsage = field(streamOptions, "include_usage");
  if (includeUsage !== undefined && !is.bool(includeUsage)) throw invalid("stream_options.include_usage", "a boolean", includeUsage);

  const sampling = readSampling(body);
  readTokenOptions(body, sampling);
  return {
    model,
    messages,
    stream: stream === true,
    includeUsage: includeUsage === true,
    sampling,
    ...readStructured(body),
    ...readMediaOptions(body),
  };
}
