// An OpenAI chat-completions request body → MultimodalLM chat options, checked field by field
// with OpenAI's names. Extra fields of vllm-mlx (video_fps, video_max_frames) and LMDeploy
// (media_io_kwargs, mm_processor_kwargs) are read top-level or inside extra_body; unknown
// fields are ignored, as OpenAI-compatible servers do.
import type { CallImageOptions, CallVideoOptions } from "../multimodal-lm.js";
import type { SamplingOptions } from "../options.js";
import { MAX_VIDEO_FRAMES } from "../media/video.js";
import { describeValue, is } from "../validate.js";
import { HttpError } from "./http-errors.js";

/** A media reference as the request gave it, still to be checked against the media policy. */
export interface MediaPart {
  kind: "image" | "video";
  ref: string;
  /** Where it was, e.g. messages[0].content[1].image_url.url, for error messages. */
  param: string;
}

export type RequestPart = { type: "text"; text: string } | MediaPart;

export interface RequestMessage {
  role: string;
  content: string | RequestPart[];
}

export interface ChatCompletionRequest {
  model: string | undefined;
  messages: RequestMessage[];
  stream: boolean;
  includeUsage: boolean;
  sampling: Omit<SamplingOptions, "signal">;
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
  const temperature = number(body, "temperature", 0, 2);
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
  if (field(body, "logprobs") === true || field(body, "top_logprobs") !== undefined) {
    throw unsupported("logprobs", "logprobs are not supported by this server. Remove logprobs and top_logprobs.");
  }
  for (const key of ["tools", "functions"]) {
    const value = field(body, key);
    if (Array.isArray(value) ? value.length > 0 : value !== undefined) {
      throw unsupported(key, `${key} (function calling) is not supported by this server. Remove ${key} from the request.`);
    }
  }
  const format = field(body, "response_format");
  if (format !== undefined && !(is.object(format) && format.type === "text")) {
    throw unsupported("response_format", 'Only response_format {"type": "text"} is supported; structured output is not.');
  }
  const bias = field(body, "logit_bias");
  if (is.object(bias) && Object.keys(bias).length > 0) throw unsupported("logit_bias", "logit_bias is not supported by this server.");
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
 * min/max_pixels apply to both). num_frames, when given, wins over fps, as in LMDeploy.
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
  const shared = readPixels(processor, "mm_processor_kwargs");
  const image = { ...shared, ...readPixels(object(processor, "image", "mm_processor_kwargs.image"), "mm_processor_kwargs.image") };
  Object.assign(video, shared, readPixels(object(processor, "video", "mm_processor_kwargs.video"), "mm_processor_kwargs.video"));
  return { image, video };
}

/** The URL string of an image_url / video_url value: "url" or {url}. */
function urlOf(value: unknown, param: string): string {
  const url = is.string(value) ? value : is.object(value) ? value.url : undefined;
  if (!is.string(url) || url.length === 0) throw invalid(param, "a URL string or an object with a url", value);
  return url;
}

function readContent(content: unknown, where: string): string | RequestPart[] {
  if (content === null || content === undefined) return "";
  if (is.string(content)) return content;
  if (!Array.isArray(content)) throw invalid(`${where}.content`, "a string or an array of content parts", content);
  return content.map((part: unknown, j): RequestPart => {
    const at = `${where}.content[${j}]`;
    if (!is.object(part) || !is.string(part.type)) throw invalid(at, "a content part with a type", part);
    switch (part.type) {
      case "text":
        if (!is.string(part.text)) throw invalid(`${at}.text`, "a string", part.text);
        return { type: "text", text: part.text };
      case "image_url":
        return { kind: "image", ref: urlOf(part.image_url, `${at}.image_url`), param: `${at}.image_url` };
      case "video_url":
        return { kind: "video", ref: urlOf(part.video_url, `${at}.video_url`), param: `${at}.video_url` };
      case "image":
      case "video": {
        const value = part[part.type];
        if (!is.string(value) || value.length === 0) throw invalid(`${at}.${part.type}`, "a URL or path string", value);
        return { kind: part.type, ref: value, param: `${at}.${part.type}` };
      }
      case "input_audio":
      case "audio_url":
        throw unsupported(`${at}.type`, `${part.type} content parts are not supported: this server takes text, images and videos.`);
      case "time_series_url":
        throw unsupported(`${at}.type`, "time_series_url content parts are not supported: this server takes text, images and videos.");
      default:
        throw invalid(`${at}.type`, '"text", "image_url", "video_url", "image" or "video"', part.type);
    }
  });
}

const ROLES = new Set(["system", "user", "assistant", "developer", "tool"]);

/** Checks a parsed JSON body and maps it; throws HttpError(400) naming the field at fault. */
export function parseChatCompletionRequest(input: unknown): ChatCompletionRequest {
  if (!is.object(input)) throw invalid("body", "a JSON object", input);
  // The OpenAI SDKs merge extra_body into the top level; clients that send it literally get the same.
  const extra = object(input, "extra_body");
  const body = { ...extra, ...input };
  refuseUnsupported(body);

  const model = field(body, "model");
  if (model !== undefined && !is.string(model)) throw invalid("model", "a string", model);
  const messages = field(body, "messages");
  if (!Array.isArray(messages) || messages.length === 0) throw invalid("messages", "a non-empty array of messages", messages);
  const parsed = messages.map((message: unknown, i): RequestMessage => {
    const where = `messages[${i}]`;
    if (!is.object(message)) throw invalid(where, "an object with role and content", message);
    if (!is.string(message.role) || !ROLES.has(message.role)) throw invalid(`${where}.role`, `one of ${[...ROLES].join(", ")}`, message.role);
    return { role: message.role, content: readContent(message.content, where) };
  });

  const stream = field(body, "stream");
  if (stream !== undefined && !is.bool(stream)) throw invalid("stream", "a boolean", stream);
  const streamOptions = object(body, "stream_options");
  const includeUsage = field(streamOptions, "include_usage");
  if (includeUsage !== undefined && !is.bool(includeUsage)) throw invalid("stream_options.include_usage", "a boolean", includeUsage);

  return {
    model,
    messages: parsed,
    stream: stream === true,
    includeUsage: includeUsage === true,
    sampling: readSampling(body),
    ...readMediaOptions(body),
  };
}
