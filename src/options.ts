// Validation and defaults for MultimodalLM's options. Native code trusts what leaves here.
import { validateImageOptions, type ImageOptions } from "./media/image.js";
import { validateAudioOptions, type AudioOptions } from "./media/audio.js";
import { validateVideoOptions, type VideoOptions } from "./media/video.js";
import type { NativeGenerateRequest, NativeLoadOptions } from "./native-types.js";
import { DEFAULT_SUPERVISOR, type SupervisorOptions } from "./engine/supervised.js";
import { MultimodalLMError } from "./errors.js";
import {
  invalidParameter,
  is,
  optionalBoolean,
  optionalInteger,
  optionalNumber,
  optionalSignal,
  rejectUnknownKeys,
} from "./validate.js";

export type LogLevel = "none" | "error" | "warn" | "info" | "debug";

/** Receives llama.cpp's and mtmd's log lines for one model. */
export type Logger = (level: Exclude<LogLevel, "none">, message: string) => void;

export interface LoadOptions {
  /** Path of the text model GGUF. */
  model: string;
  /** Path of the multimodal projector GGUF (mmproj) that belongs to the model. */
  mmproj: string;
  /**
   * Context window in tokens, shared by all slots (see `parallel`): one request may fill all of it
   * when it runs alone. Default: the model's trained context, at most 8192.
   */
  contextSize?: number;
  /**
   * Slots: how many requests decode together in one batch (continuous batching). More concurrent
   * calls wait in order for a free slot. The slots share one KV cache of `contextSize` tokens, so
   * a slot costs no KV memory of its own. Default 4, as llama-server; 1 runs one request at a time.
   */
  parallel?: number;
  /** CPU threads. Default: the number of physical cores. */
  threads?: number;
  /** Logical batch size for prompt processing. Default 2048. */
  batchSize?: number;
  /** Text-model layers to offload to the GPU: a count, or "auto" (all; the default). Ignored by CPU builds. */
  gpuLayers?: number | "auto";
  /** Run the projector (vision encoder) on the GPU. Default true. Ignored by CPU builds. */
  mmprojOnGpu?: boolean;
  /** Flash attention: "auto" (default), true or false. */
  flashAttention?: boolean | "auto";
  /** Lower bound on tokens per image, for models with dynamic resolution. Default: the mmproj's own. */
  imageMinTokens?: number;
  /** Upper bound on tokens per image, for models with dynamic resolution. Default: the mmproj's own. */
  imageMaxTokens?: number;
  /** A Jinja chat template to use instead of the model's own. */
  chatTemplate?: string;
  /** Run llama.cpp's warm-up passes at load (allocates compute buffers up front). Default true. */
  warmup?: boolean;
  /**
   * Bound, in bytes, of the image embedding cache: projector outputs kept by image content, so
   * an image sent again is not encoded again. Least recently used entries go first. 0 disables
   * it. Default 128 MiB.
   */
  imageCacheBytes?: number;
  /**
   * Keep the KV cache between requests and evaluate only the part of a prompt that differs from
   * what it holds (text compared by token, images by content). A chat that adds a turn after an
   * image does not evaluate the image again. Default true.
   */
  reusePrefix?: boolean;
  /**
   * Where the engine runs. "none" (default): in this process. "process": in a child process that
   * a supervisor restarts when llama.cpp crashes (an assert, a segfault, the OOM killer), so a crash
   * fails the requests it was running and nothing else. Same API; `on("crash" | "restart")` reports it.
   */
  isolation?: "none" | "process";
  /**
   * RPC servers ("host:port", started with `multimodal-lm rpc-server` or llama.cpp's rpc-server)
   * whose devices take layers like local GPUs, as llama.cpp's --rpc. ggml ends the process when a
   * server goes away mid-request, so with `rpc` the default isolation is "process".
   */
  rpc?: string[];
  /** How the supervisor of `isolation: "process"` restarts the engine. */
  supervisor?: Partial<SupervisorOptions>;
  /** Defaults for every image this model reads (pixel limit, pixel budget, download limits). */
  image?: Omit<ImageOptions, "signal">;
  /** Defaults for every video this model reads (sampling, frame budget, ffmpeg path, limits, timestamps). */
  video?: Omit<VideoOptions, "signal">;
  /** Defaults for every audio clip this model reads (maxSeconds, timeout, ffmpeg path, fetch limits). */
  audio?: Omit<AudioOptions, "signal">;
  /** Log level. Default "none", or the MULTIMODAL_LM_LOG environment variable (1 = "info"). */
  logLevel?: LogLevel;
  /** Where log lines go. Default: stderr, prefixed with [multimodal-lm]. */
  logger?: Logger;
  /** Called with the loading progress, 0 to 1. */
  onProgress?: (fraction: number) => void;
  /** Aborts loading. */
  signal?: AbortSignal;
}

const LOAD_KEYS = [
  "model",
  "mmproj",
  "contextSize",
  "parallel",
  "threads",
  "batchSize",
  "gpuLayers",
  "mmprojOnGpu",
  "flashAttention",
  "imageMinTokens",
  "imageMaxTokens",
  "chatTemplate",
  "warmup",
  "imageCacheBytes",
  "reusePrefix",
  "isolation",
  "rpc",
  "supervisor",
  "image",
  "video",
  "audio",
  "logLevel",
  "logger",
  "onProgress",
  "signal",
] as const;

/** Default bound of the image embedding cache: 128 MiB. */
export const DEFAULT_IMAGE_CACHE_BYTES = 128 * 1024 * 1024;
/** llama-server's default slot count. */
export const DEFAULT_PARALLEL = 4;
export const MAX_PARALLEL = 64;

const LOG_LEVELS: Record<LogLevel, number> = { none: 0, debug: 1, info: 2, warn: 3, error: 4 };
export const LOG_LEVEL_NAMES: Record<number, Exclude<LogLevel, "none">> = { 1: "debug", 2: "info", 3: "warn", 4: "error" };

function logLevelFromEnv(env: NodeJS.ProcessEnv): LogLevel {
  const value = env.MULTIMODAL_LM_LOG?.trim().toLowerCase();
  if (!value || value === "0" || value === "none") return "none";
  if (value in LOG_LEVELS) return value as LogLevel;
  return "info";
}

export interface ResolvedLoadOptions {
  native: NativeLoadOptions;
  isolation: "none" | "process";
  supervisor: SupervisorOptions;
  logLevel: number;
  logger: Logger | undefined;
  onProgress: ((fraction: number) => void) | undefined;
  signal: AbortSignal | undefined;
  image: Omit<ImageOptions, "signal">;
  video: Omit<VideoOptions, "signal">;
  audio: Omit<AudioOptions, "signal">;
}

export function resolveLoadOptions(options: unknown, env: NodeJS.ProcessEnv = process.env): ResolvedLoadOptions {
  if (!is.object(options)) throw invalidParameter("options", "an object with model and mmproj paths", options);
  rejectUnknownKeys("MultimodalLM.load()", options, LOAD_KEYS);
  const o = options as Partial<LoadOptions>;
  for (const key of ["model", "mmproj"] as const) {
    if (!is.string(o[key]) || o[key].length === 0) throw invalidParameter(key, "a path to a GGUF file", o[key]);
  }
  let gpuLayers = -1;
  if (o.gpuLayers !== undefined && o.gpuLayers !== "auto") {
    gpuLayers = optionalInteger("gpuLayers", o.gpuLayers, 0, 100_000, 0);
  }
  let flashAttention = -1;
  if (o.flashAttention !== undefined && o.flashAttention !== "auto") {
    if (!is.bool(o.flashAttention)) throw invalidParameter("flashAttention", 'true, false or "auto"', o.flashAttention);
    flashAttention = o.flashAttention ? 1 : 0;
  }
  if (o.chatTemplate !== undefined && (!is.string(o.chatTemplate) || o.chatTemplate.length === 0)) {
    throw invalidParameter("chatTemplate", "a non-empty Jinja template string", o.chatTemplate);
  }
  const imageMinTokens = optionalInteger("imageMinTokens", o.imageMinTokens, 1, 1_000_000, -1);
  const imageMaxTokens = optionalInteger("imageMaxTokens", o.imageMaxTokens, 1, 1_000_000, -1);
  if (imageMinTokens > 0 && imageMaxTokens > 0 && imageMinTokens > imageMaxTokens) {
    throw new MultimodalLMError(
      "E_INVALID_ARGUMENT",
      `Expected imageMinTokens (${imageMinTokens}) to be at most imageMaxTokens (${imageMaxTokens})`,
    );
  }
  const logLevelName = o.logLevel ?? logLevelFromEnv(env);
  if (!(logLevelName in LOG_LEVELS)) throw invalidParameter("logLevel", `one of ${Object.keys(LOG_LEVELS).join(", ")}`, o.logLevel);
  if (o.logger !== undefined && !is.fn(o.logger)) throw invalidParameter("logger", "a function (level, message) => void", o.logger);
  if (o.onProgress !== undefined && !is.fn(o.onProgress)) throw invalidParameter("onProgress", "a function (fraction) => void", o.onProgress);
  if (o.image !== undefined && is.object(o.image) && "signal" in o.image) {
    throw invalidParameter("image.signal", "no signal here (pass signal to each call)", o.image.signal);
  }
  validateImageOptions(o.image, "image");
  if (o.video !== undefined && is.object(o.video) && "signal" in o.video) {
    throw invalidParameter("video.signal", "no signal here (pass signal to each call)", o.video.signal);
  }
  validateVideoOptions(o.video, "video");
  if (o.audio !== undefined && is.object(o.audio) && "signal" in o.audio) {
    throw invalidParameter("audio.signal", "no signal here (pass signal to each call)", o.audio.signal);
  }
  validateAudioOptions(o.audio, "audio");
  if (o.isolation !== undefined && o.isolation !== "none" && o.isolation !== "process") {
    throw invalidParameter("isolation", '"none" or "process"', o.isolation);
  }
  const rpc = validateRpc(o.rpc);

  return {
    native: {
      model: o.model!,
      mmproj: o.mmproj!,
      ...(o.chatTemplate !== undefined ? { chatTemplate: o.chatTemplate } : {}),
      contextSize: optionalInteger("contextSize", o.contextSize, 16, 1 << 24, 0),
      parallel: optionalInteger("parallel", o.parallel, 1, MAX_PARALLEL, DEFAULT_PARALLEL),
      threads: optionalInteger("threads", o.threads, 1, 1024, -1),
      batchSize: optionalInteger("batchSize", o.batchSize, 32, 1 << 20, 2048),
      gpuLayers,
      mmprojOnGpu: optionalBoolean("mmprojOnGpu", o.mmprojOnGpu, true),
      flashAttention,
      imageMinTokens,
      imageMaxTokens,
      warmup: optionalBoolean("warmup", o.warmup, true),
      imageCacheBytes: optionalInteger("imageCacheBytes", o.imageCacheBytes, 0, Number.MAX_SAFE_INTEGER, DEFAULT_IMAGE_CACHE_BYTES),
      reusePrefix: optionalBoolean("reusePrefix", o.reusePrefix, true),
      ...(rpc.length > 0 ? { rpc } : {}),
    },
    isolation: o.isolation ?? (rpc.length > 0 ? "process" : "none"),
    supervisor: resolveSupervisor(o.supervisor),
    logLevel: LOG_LEVELS[logLevelName as LogLevel],
    logger: o.logger as Logger | undefined,
    onProgress: o.onProgress as ((fraction: number) => void) | undefined,
    signal: optionalSignal("signal", o.signal),
    image: (o.image ?? {}) as Omit<ImageOptions, "signal">,
    video: (o.video ?? {}) as Omit<VideoOptions, "signal">,
    audio: (o.audio ?? {}) as Omit<AudioOptions, "signal">,
  };
}

/** "host:port" endpoints of RPC servers: a host name or IPv4/IPv6 address, and a port. */
function validateRpc(value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length === 0) throw invalidParameter("rpc", 'a non-empty array of "host:port" strings', value);
  if (value.length > 16) throw invalidParameter("rpc", "at most 16 servers (GGML_RPC_MAX_SERVERS)", value);
  value.forEach((endpoint, i) => {
    const m = is.string(endpoint) ? /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(endpoint) : null;
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw invalidParameter(`rpc[${i}]`, 'a "host:port" endpoint, e.g. "192.168.1.20:50052"', endpoint);
  });
  return [...(value as string[])];
}

const SUPERVISOR_KEYS = ["maxRestarts", "windowMs", "backoffMs", "maxBackoffMs", "loadStallMs"] as const;

function resolveSupervisor(value: unknown): SupervisorOptions {
  if (value === undefined) return { ...DEFAULT_SUPERVISOR };
  if (!is.object(value)) throw invalidParameter("supervisor", "an object", value);
  rejectUnknownKeys("supervisor", value, SUPERVISOR_KEYS);
  const v = value as Partial<SupervisorOptions>;
  const ms = (key: Exclude<keyof SupervisorOptions, "maxRestarts">) => optionalInteger(`supervisor.${key}`, v[key], 0, 2 ** 31 - 1, DEFAULT_SUPERVISOR[key]);
  return {
    maxRestarts: optionalInteger("supervisor.maxRestarts", v.maxRestarts, 0, 1000, DEFAULT_SUPERVISOR.maxRestarts),
    windowMs: ms("windowMs"),
    backoffMs: ms("backoffMs"),
    maxBackoffMs: ms("maxBackoffMs"),
    loadStallMs: Math.max(1, ms("loadStallMs")),
  };
}

/** Sampling and stopping options shared by every generating call. */
export interface SamplingOptions {
  /** 0 to 2 (OpenAI's range); 0 picks the most likely token every time (greedy). Default 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 keeps all. Default 40. */
  topK?: number;
  /** Nucleus sampling; 1 disables it. Default 0.95. */
  topP?: number;
  /** Drop tokens below minP × the top token's probability; 0 disables it. Default 0.05. */
  minP?: number;
  /** Penalty for repeating any of the last 64 tokens; 1 disables it. Default 1. */
  repeatPenalty?: number;
  /** OpenAI-style presence penalty, -2 to 2. Default 0. */
  presencePenalty?: number;
  /** OpenAI-style frequency penalty, -2 to 2. Default 0. */
  frequencyPenalty?: number;
  /** RNG seed for sampling. Default: random. */
  seed?: number;
  /** Most tokens to generate. Default: until end of generation or a full context. */
  maxTokens?: number;
  /** Stop before any of these strings; they are not part of the text. */
  stop?: string | string[];
  /** Keep going past end-of-generation tokens. Default false. */
  ignoreEos?: boolean;
  /** Report each generated token's log-probability (from the raw logits, before sampling). Default false. */
  logprobs?: boolean;
  /** With logprobs: also the this-many most likely tokens at each position, 0 to 20. Default 0. */
  topLogprobs?: number;
  /** Added to the logits of these token ids (OpenAI's logit_bias): -100 bans a token, +100 all but forces it. */
  logitBias?: Record<number, number>;
  /** Aborting it rejects the call with `AbortError` (code E_ABORTED). */
  signal?: AbortSignal;
}

export const SAMPLING_KEYS = [
  "temperature",
  "topK",
  "topP",
  "minP",
  "repeatPenalty",
  "presencePenalty",
  "frequencyPenalty",
  "seed",
  "maxTokens",
  "stop",
  "ignoreEos",
  "logprobs",
  "topLogprobs",
  "logitBias",
  "signal",
] as const;

export type NativeSampling = Omit<NativeGenerateRequest, "prompt" | "media" | "addSpecial" | "constraint">;

/**
 * The sampling temperature's range, in the library, the CLI, the server and the chat page alike:
 * OpenAI's 0–2 (0 is greedy). llama.cpp takes any value, but beyond 2 the text is noise.
 */
export const TEMPERATURE_MAX = 2;

export function resolveSampling(o: SamplingOptions): NativeSampling {
  let stop: string[] = [];
  if (o.stop !== undefined) {
    stop = typeof o.stop === "string" ? [o.stop] : Array.isArray(o.stop) ? o.stop : [];
    if ((!is.string(o.stop) && !Array.isArray(o.stop)) || stop.some((s) => !is.string(s) || s.length === 0)) {
      throw invalidParameter("stop", "a non-empty string or an array of them", o.stop);
    }
  }
  return {
    temperature: optionalNumber("temperature", o.temperature, 0, TEMPERATURE_MAX, 0.8),
    topK: optionalInteger("topK", o.topK, 0, 1 << 30, 40),
    topP: optionalNumber("topP", o.topP, 0, 1, 0.95),
    minP: optionalNumber("minP", o.minP, 0, 1, 0.05),
    repeatPenalty: optionalNumber("repeatPenalty", o.repeatPenalty, 0, 100, 1),
    repeatLastN: 64,
    presencePenalty: optionalNumber("presencePenalty", o.presencePenalty, -2, 2, 0),
    frequencyPenalty: optionalNumber("frequencyPenalty", o.frequencyPenalty, -2, 2, 0),
    seed: optionalInteger("seed", o.seed, 0, 0xfffffffe, 0xffffffff),
    maxTokens: optionalInteger("maxTokens", o.maxTokens, 0, 1 << 30, -1),
    stop,
    ignoreEos: optionalBoolean("ignoreEos", o.ignoreEos, false),
    logprobs: resolveLogprobs(o),
    logitBias: resolveLogitBias(o.logitBias),
  };
}

function resolveLogprobs(o: SamplingOptions): number {
  const on = optionalBoolean("logprobs", o.logprobs, false);
  const top = optionalInteger("topLogprobs", o.topLogprobs, 0, 20);
  if (top !== undefined && !on) throw invalidParameter("topLogprobs", "topLogprobs only with logprobs: true", top);
  return on ? (top ?? 0) : -1;
}

function resolveLogitBias(bias: unknown): Array<[number, number]> {
  if (bias === undefined) return [];
  if (!is.object(bias)) throw invalidParameter("logitBias", "an object of token id → bias", bias);
  return Object.entries(bias).map(([key, value]): [number, number] => {
    const token = Number(key);
    if (!/^\d+$/.test(key) || !Number.isSafeInteger(token) || token > 0x7fffffff) throw invalidParameter(`logitBias[${key}]`, "a token id (a non-negative integer key)", key);
    if (!is.number(value) || value < -100 || value > 100) throw invalidParameter(`logitBias[${key}]`, "a bias between -100 and 100", value);
    return [token, value];
  });
}
