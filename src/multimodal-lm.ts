// The public class: validates in JS, reads media (sharp, ffmpeg), renders prompts with the
// model's chat template (natively), and drives the engine: the native engine thread in this
// process, or the same engine in a supervised child process (engine/supervised.ts) behind the
// same NativeModel interface (native-types.ts). Prompt assembly is in prompt.ts, native errors in
// native-errors.ts, the first check of the model files in model-files.ts, and result shaping in
// results.ts.
import { EventEmitter } from "node:events";

import { getBinding } from "./binding.js";
import { AbortError, MultimodalLMError, StateError } from "./errors.js";
import { AUDIO_OPTION_KEYS, loadAudio, validateAudioOptions, type AudioInput, type AudioOptions, type DecodedAudio } from "./media/audio.js";
import { imageSize, loadImage, validateImageOptions, type DecodedImage, type ImageInput, type ImageOptions } from "./media/image.js";
import { SupervisedEngine, type CrashEvent, type EngineState, type RestartEvent } from "./engine/supervised.js";
import { checkGguf } from "./model-files.js";
import { fromNative, grammarChecks } from "./native-errors.js";
import { countOccurrences, mismatch, userContent, videoSegments, type VideoLayout } from "./prompt.js";
import { generateResult, toTokenLogprob } from "./results.js";
import { checkRpcServers } from "./rpc.js";
import {
  loadVideo,
  planVideo,
  validateVideoOptions,
  VIDEO_OPTION_KEYS,
  type DecodedVideo,
  type LoadVideoPlanOptions,
  type VideoInfo,
  type VideoInput,
  type VideoOptions,
} from "./media/video.js";
import { atPart, parseMessages, resolveMedia, type ChatMessage, type MediaRef, type MediaResolver, type TemplateMessage, type ToolCall } from "./messages.js";
import type {
  NativeAudio,
  NativeChatParams,
  NativeConstraint,
  NativeGenerateResult,
  NativeMedia,
  NativeMediaItem,
  NativeMediaSizeItem,
  NativeModel,
  NativeModelInfo,
  NativeTokenLogprob,
} from "./native-types.js";
import {
  LOG_LEVEL_NAMES,
  resolveLoadOptions,
  resolveSampling,
  SAMPLING_KEYS,
  type LoadOptions,
  type Logger,
  type ResolvedLoadOptions,
  type SamplingOptions,
} from "./options.js";
import { PieceQueue, type TextStream } from "./stream.js";
import { OutputParser, planOutput, STRUCTURED_KEYS, type OutputPlan, type StreamEvent, type StructuredOptions, type TokenLogprob } from "./structured.js";
import { invalidParameter, is, optionalBoolean, optionalSignal, rejectUnknownKeys } from "./validate.js";

/** Per-call image options: the pixel budget and limits (the signal is the call's own). */
export type CallImageOptions = Omit<ImageOptions, "signal">;

/** Per-call video options: sampling, frame budget, limits, timestamps (the signal is the call's own). */
export type CallVideoOptions = Omit<VideoOptions, "signal">;

/** Per-call audio options: maxSeconds, timeout, fetch limits (the signal is the call's own). */
export type CallAudioOptions = Omit<AudioOptions, "signal">;

export interface GenerateRequest extends SamplingOptions, StructuredOptions {
  /**
   * One user turn. Without media markers, the images and then the videos go before the text
   * (as llama-mtmd-cli does); with markers, they fill them in that order: images first, then videos.
   */
  prompt: string;
  images?: ImageInput[];
  videos?: VideoInput[];
  /** Audio clips (a path, URL, data: URL or the bytes of any file ffmpeg reads); markers take them after the images and videos. */
  audios?: AudioInput[];
  /** Skip the chat template: the prompt is tokenized as given (with BOS if the model wants one). */
  raw?: boolean;
  /** Image options for this call, over the model's defaults. */
  image?: CallImageOptions;
  /** Video options for this call, over the model's defaults. */
  video?: CallVideoOptions;
  /** Audio options for this call, over the model's defaults. */
  audio?: CallAudioOptions;
}

export interface ChatRequest extends SamplingOptions, StructuredOptions {
  /**
   * OpenAI-style messages; content parts may be text, image_url, image, video_url or video.
   * Assistant messages may carry tool_calls, and tool messages answer them (tool_call_id).
   */
  messages: ChatMessage[];
  /** Called on every image and video part before it is loaded: return what to load, or throw to refuse it (a server's media policy). */
  resolveMedia?: MediaResolver;
  image?: CallImageOptions;
  video?: CallVideoOptions;
  audio?: CallAudioOptions;
}

export interface DescribeImageOptions extends SamplingOptions {
  /** The question. Default "Describe this image." */
  prompt?: string;
  image?: CallImageOptions;
}

/** describeAudio's options: the question (default "Transcribe this audio."), sampling, and the audio options, all in one object. */
export interface DescribeAudioOptions extends SamplingOptions, CallAudioOptions {
  prompt?: string;
}

/** describeVideo's options: the question, sampling, and the video options, all in one object. */
export interface DescribeVideoOptions extends SamplingOptions, CallVideoOptions {
  /** The question. Default "Describe this video." */
  prompt?: string;
}

export type StopReason = "eos" | "stop" | "length" | "context" | "tool_calls";

export interface GenerateResult {
  /** The reply's text: with responseFormat, the JSON; with tools, the text beside the calls. */
  text: string;
  /**
   * eos: the model ended; stop: a stop string; length: maxTokens; context: the context is full;
   * tool_calls: the model ended with tool calls. A reply cut short is length (or context), never
   * tool_calls, so its JSON or calls may be incomplete.
   */
  stopReason: StopReason;
  /** The calls the model made (with tools), as OpenAI returns them; empty otherwise. */
  toolCalls: ToolCall[];
  /** With `logprobs`: one entry per generated token. */
  logprobs?: TokenLogprob[];
  usage: {
    promptTokens: number;
    completionTokens: number;
    totalTokens: number;
    /** Prompt tokens that came from images and video frames. */
    mediaTokens: number;
    /** Media chunks encoded: one or more per image (tiling models split it), and on Qwen-VL one per pair of video frames. */
    mediaChunks: number;
  };
  /** One entry per video in the prompt, in order: what was sampled from it. */
  videos: Array<{ info: VideoInfo; frames: number; timestamps: number[]; width: number; height: number; audio?: { samples: number; seconds: number } }>;
  timings: {
    /** Reading and decoding the images and videos in JS (in parallel). */
    imageLoadMs: number;
    /** Running the vision encoder. */
    encodeMs: number;
    /** Evaluating the whole prompt (text and media), including encodeMs. */
    promptMs: number;
    generationMs: number;
    /** From the engine starting the request to the first sampled token. */
    timeToFirstTokenMs: number;
    promptTokensPerSecond: number;
    generationTokensPerSecond: number;
    /** From the call to the result. */
    totalMs: number;
  };
  /** What the caches saved in this request (see `imageCacheBytes` and `reusePrefix`). */
  cache: {
    /** Prompt positions found in the KV cache from an earlier request and not evaluated again. */
    reusedPositions: number;
    /** Prompt tokens those positions hold (more than positions when they include an M-RoPE image). */
    reusedTokens: number;
    /** Prompt positions evaluated by this request; with reusedPositions, all of the prompt's. */
    evaluatedPositions: number;
    /** Media chunks to evaluate whose embeddings came from the image cache. */
    imageCacheHits: number;
    /** Media chunks to evaluate that the image cache did not have (0 when it is disabled). */
    imageCacheMisses: number;
    /** Media chunks run through the projector (vision encoder) in this request. */
    encodedChunks: number;
  };
}

/** Cumulative counters of one loaded model (`lm.stats`). */
export interface ModelStats {
  /** Generating requests that reached the engine. */
  requests: number;
  /** Slots (`parallel`) and how many run a request now. */
  slots: { total: number; busy: number };
  /** Generation requests waiting for a free slot. */
  queued: number;
  /** KV prefix reuse: prompt positions taken from the cache, and evaluated, over all requests. */
  prefix: { reusedPositions: number; evaluatedPositions: number };
  /** The image embedding cache. `bytes` counts the embeddings held; `capacityBytes` is the bound. */
  imageCache: { hits: number; misses: number; evictions: number; entries: number; bytes: number; capacityBytes: number };
}

export interface ImageEmbedding {
  /** Row-major `[tokens, embeddingSize]` projector output. */
  data: Float32Array;
  shape: [tokens: number, embeddingSize: number];
  /** The image's content id. */
  id: string;
  encodeMs: number;
  /** True when every chunk came from the image cache (nothing was encoded). */
  cached: boolean;
}

export interface TokenCount {
  tokens: number;
  /** Positions used; fewer than tokens for M-RoPE models (Qwen-VL), where an image is 2-D. */
  positions: number;
  textTokens: number;
  mediaTokens: number;
  /** Media chunks: one or more per image (tiling models split it), and on Qwen-VL one per pair of video frames. */
  mediaChunks: number;
}

export interface ModelInfo extends Omit<NativeModelInfo, "marker" | "vision" | "audio"> {
  /** video: frames can be sent (any vision model); with frameMerge 2 consecutive frames share a chunk. */
  capabilities: { vision: boolean; audio: boolean; video: boolean };
}

type State = "new" | "loading" | "loaded" | "disposed";

let nextRequestId = 1;

// process.exit() does not wait for native threads: stop every engine thread first.
// Weak references, so a model dropped without dispose() can still be collected.
const liveModels = new Set<WeakRef<NativeModel>>();
let exitHookInstalled = false;
function trackForExit(native: NativeModel): WeakRef<NativeModel> {
  const ref = new WeakRef(native);
  liveModels.add(ref);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const live of liveModels) live.deref()?.stopForExit();
    });
  }
  return ref;
}
const DEFAULT_PROMPT = "Describe this image.";
const DEFAULT_VIDEO_PROMPT = "Describe this video.";
const GENERATE_KEYS = ["prompt", "images", "videos", "audios", "raw", "image", "video", "audio", ...SAMPLING_KEYS, ...STRUCTURED_KEYS] as const;
const CHAT_KEYS = ["messages", "image", "video", "audio", "resolveMedia", ...SAMPLING_KEYS, ...STRUCTURED_KEYS] as const;
const DEFAULT_AUDIO_PROMPT = "Transcribe this audio.";
const DESCRIBE_KEYS = ["prompt", "image", ...SAMPLING_KEYS] as const;
const VIDEO_CALL_KEYS = VIDEO_OPTION_KEYS.filter((key) => key !== "signal");


const defaultLogger: Logger = (level, message) => {
  process.stderr.write(`[multimodal-lm] ${level}: ${message}\n`);
};







/**
 * A vision-language model: a text model plus its multimodal projector, running on
 * llama.cpp's multimodal engine. Requests run one at a time on the model's engine thread,
 * in the order they were made.
 *
 * ```ts
 * const lm = await MultimodalLM.load({ model: "model.gguf", mmproj: "mmproj.gguf" });
 * console.log(await lm.describeImage("photo.jpg"));
 * await lm.dispose();
 * ```
 */
export class MultimodalLM implements AsyncDisposable {
  private readonly options: ResolvedLoadOptions;
  private state: State = "new";
  private native: NativeModel | undefined;
  private modelInfo: NativeModelInfo | undefined;
  private exitRef: WeakRef<NativeModel> | undefined;
  private readonly events = new EventEmitter();

  /** Validates the options; call `load()` next (or use `MultimodalLM.load(options)`). */
  constructor(options: LoadOptions) {
    this.options = resolveLoadOptions(options);
  }

  /** Creates and loads a model. */
  static async load(options: LoadOptions): Promise<MultimodalLM> {
    const lm = new MultimodalLM(options);
    await lm.load();
    return lm;
  }

  /** Loads the model and projector off the main thread. Rejects with E_MODEL_LOAD, E_FILE_NOT_FOUND or E_ABORTED. */
  async load(): Promise<this> {
    if (this.state === "disposed") throw new StateError("E_DISPOSED", "This MultimodalLM has been disposed; create a new one.");
    if (this.state !== "new") {
      throw new StateError("E_BUSY", this.state === "loading" ? "load() is already running." : "The model is already loaded.");
    }
    const { native: opts, signal, logLevel } = this.options;
    this.state = "loading";
    try {
      if (signal?.aborted) throw new AbortError("Loading was aborted.", { cause: signal.reason });
      await checkGguf(opts.model, "model");
      await checkGguf(opts.mmproj, "mmproj");
      if (opts.rpc) await checkRpcServers(opts.rpc);
      const native: NativeModel = this.options.isolation === "process" ? this.supervise() : new (getBinding().NativeModel)();
      this.native = native;
      this.exitRef = trackForExit(native);
      const logger = this.options.logger ?? defaultLogger;
      const onLog = logLevel > 0 ? (level: number, line: string) => logger(LOG_LEVEL_NAMES[level] ?? "info", line) : undefined;
      const onProgress = this.options.onProgress ?? (() => {});
      this.modelInfo = await this.call(signal, (id) => native.load(id, opts, onProgress, logLevel, onLog));
    } catch (error) {
      const native = this.native;
      this.native = undefined;
      // A dispose() during load wins; otherwise load can be tried again.
      if (this.state === "loading") this.state = "new";
      if (this.exitRef) liveModels.delete(this.exitRef);
      await native?.dispose(nextRequestId++, () => {});
      throw error;
    }
    if (this.state !== "loading") throw new StateError("E_DISPOSED", "The model was disposed while loading.");
    this.state = "loaded";
    return this;
  }

  /**
   * Listens to the engine process of `isolation: "process"`: "crash" when it dies (with its signal
   * or exit code, its last log lines, the requests that failed and whether it restarts), "restart"
   * when a new one serves again. Never emitted in process (`isolation: "none"`).
   */
  on(event: "crash", listener: (crash: CrashEvent) => void): this;
  on(event: "restart", listener: (restart: RestartEvent) => void): this;
  on(event: "crash" | "restart", listener: (info: CrashEvent & RestartEvent) => void): this {
    this.events.on(event, listener);
    return this;
  }

  off(event: "crash" | "restart", listener: (info: CrashEvent & RestartEvent) => void): this {
    this.events.off(event, listener);
    return this;
  }

  /**
   * Where the engine runs and how it is: "ready", "restarting" (after a crash), "failed" (the
   * supervisor gave up) or "starting"; `pid` is the engine process's, with `isolation: "process"`.
   */
  get engine(): { isolation: "none" | "process"; state: EngineState; pid: number | undefined } {
    const native = this.native;
    if (native instanceof SupervisedEngine) return { isolation: "process", state: native.engineState, pid: native.pid };
    const state: EngineState = this.state === "loaded" ? "ready" : this.state === "disposed" ? "disposed" : "starting";
    return { isolation: "none", state, pid: undefined };
  }

  /** What was loaded. */
  get info(): ModelInfo {
    const info: Partial<NativeModelInfo> = { ...this.loaded() };
    const { vision, audio } = info as NativeModelInfo;
    delete info.marker;
    delete info.vision;
    delete info.audio;
    return { ...(info as Omit<NativeModelInfo, "marker" | "vision" | "audio">), capabilities: { vision, audio, video: vision } };
  }

  /** The model and mmproj paths this instance was created with. */
  get files(): { model: string; mmproj: string } {
    return { model: this.options.native.model, mmproj: this.options.native.mmproj };
  }

  /** The text that stands for one image in a prompt (`<__media__>`). */
  get marker(): string {
    return getBinding().mediaMarker();
  }

  /** True between a successful `load()` and `dispose()`. */
  get isLoaded(): boolean {
    return this.state === "loaded";
  }

  /** Generates a reply to one user turn with images. */
  async generate(request: GenerateRequest): Promise<GenerateResult> {
    return this.runGenerate(request, () => {});
  }

  /** Like `generate`, streaming text pieces as they are produced (and, through `events()`, tool-call deltas and logprobs). */
  generateStream(request: GenerateRequest): TextStream<GenerateResult> {
    return this.stream(request, (r, push) => this.runGenerate(r, push));
  }

  /** Generates the assistant's reply to a conversation. */
  async chat(request: ChatRequest): Promise<GenerateResult> {
    return this.runChat(request, () => {});
  }

  /** Like `chat`, streaming text pieces as they are produced (and, through `events()`, tool-call deltas and logprobs). */
  chatStream(request: ChatRequest): TextStream<GenerateResult> {
    return this.stream(request, (r, push) => this.runChat(r, push));
  }

  /** Describes one image; `options.prompt` asks something else. Resolves to the text. */
  async describeImage(image: ImageInput, options: DescribeImageOptions = {}): Promise<string> {
    if (!is.object(options)) throw invalidParameter("options", "an object", options);
    rejectUnknownKeys("describeImage()", options, DESCRIBE_KEYS);
    const { prompt = DEFAULT_PROMPT, ...rest } = options;
    if (!is.string(prompt)) throw invalidParameter("prompt", "a string", prompt);
    return (await this.generate({ ...rest, prompt, images: [image] })).text;
  }

  /**
   * Describes (by default, transcribes) one audio clip; `options.prompt` asks something else.
   * Takes the sampling options and the audio options (maxSeconds, timeoutMs, ...) in one object. Resolves to the text.
   */
  async describeAudio(audio: AudioInput, options: DescribeAudioOptions = {}): Promise<string> {
    if (!is.object(options)) throw invalidParameter("options", "an object", options);
    const audioKeys = AUDIO_OPTION_KEYS.filter((key) => key !== "signal");
    rejectUnknownKeys("describeAudio()", options, ["prompt", ...SAMPLING_KEYS, ...audioKeys]);
    const { prompt = DEFAULT_AUDIO_PROMPT } = options;
    if (!is.string(prompt)) throw invalidParameter("prompt", "a string", prompt);
    const sampling: Record<string, unknown> = {};
    const audioOptions: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(options)) {
      if ((SAMPLING_KEYS as readonly string[]).includes(key)) sampling[key] = value;
      else if (key !== "prompt") audioOptions[key] = value;
    }
    return (await this.generate({ ...sampling, prompt, audios: [audio], audio: audioOptions as CallAudioOptions })).text;
  }

  /**
   * Describes one video; `options.prompt` asks something else. Takes the sampling options and
   * the video options (fps, maxFrames, numFrames, start, end, ...) in one object. Resolves to the text.
   */
  async describeVideo(video: VideoInput, options: DescribeVideoOptions = {}): Promise<string> {
    if (!is.object(options)) throw invalidParameter("options", "an object", options);
    rejectUnknownKeys("describeVideo()", options, ["prompt", ...SAMPLING_KEYS, ...VIDEO_CALL_KEYS]);
    const { prompt = DEFAULT_VIDEO_PROMPT } = options;
    if (!is.string(prompt)) throw invalidParameter("prompt", "a string", prompt);
    const sampling: Record<string, unknown> = {};
    const videoOptions: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(options)) {
      if ((SAMPLING_KEYS as readonly string[]).includes(key)) sampling[key] = value;
      else if (key !== "prompt") videoOptions[key] = value;
    }
    return (await this.generate({ ...sampling, prompt, videos: [video], video: videoOptions as CallVideoOptions })).text;
  }

  /** The projector's output embeddings for one image, `[tokens, embeddingSize]`. */
  async embedImage(image: ImageInput, options: { signal?: AbortSignal; image?: CallImageOptions } = {}): Promise<ImageEmbedding> {
    const native = this.loadedNative();
    rejectUnknownKeys("embedImage()", options, ["signal", "image"]);
    const signal = optionalSignal("signal", options.signal);
    const [decoded] = await this.loadImages([image], options.image, signal);
    const r = await this.call(signal, (id) => native.embedImage(id, decoded!, () => {}));
    return {
      data: r.data,
      shape: [r.tokens, r.embeddingSize],
      id: decoded!.id,
      encodeMs: r.encodeMs,
      cached: r.chunks > 0 && r.imageCacheHits === r.chunks,
    };
  }

  /**
   * Tokens (and positions) a `generate()` call with this prompt and images would use, without
   * decoding or encoding the images: only their sizes are read.
   */
  async countTokens(
    prompt: string,
    images: ImageInput[] = [],
    options: {
      raw?: boolean;
      signal?: AbortSignal;
      image?: CallImageOptions;
      videos?: VideoInput[];
      video?: CallVideoOptions;
      audios?: AudioInput[];
      audio?: CallAudioOptions;
    } = {},
  ): Promise<TokenCount> {
    const native = this.loadedNative();
    rejectUnknownKeys("countTokens()", options, ["raw", "signal", "image", "videos", "video", "audios", "audio"]);
    const signal = optionalSignal("signal", options.signal);
    const raw = optionalBoolean("raw", options.raw, false);
    const videos = options.videos ?? [];
    const audios = options.audios ?? [];
    const content = this.userContent(prompt, images, videos, audios);
    this.checkMediaKinds([...images.map(() => ({ type: "image" as const })), ...videos.map(() => ({ type: "video" as const })), ...audios.map(() => ({ type: "audio" as const }))]);
    const audio = audios.length > 0 ? this.audioOptions(options.audio, signal) : undefined;
    const text = raw ? content : (await this.applyChat(native, [{ role: "user", content }], { toolChoice: "auto", parse: false })).prompt;
    const imageOptions = this.imageOptions(options.image, signal);
    const video = this.videoOptions(options.video, options.audio, signal);
    if (videos.length > 0) this.checkMediaKinds([{ type: "video" }], video.plan);
    const items: NativeMediaSizeItem[] = await Promise.all([
      ...images.map((image) => imageSize(image, imageOptions)),
      ...videos.map(async (input) => {
        const plan = await planVideo(input, video.options, video.plan);
        const frame = { width: plan.width, height: plan.height, mergeable: true };
        const segments: Array<string | { width: number; height: number; mergeable?: boolean } | { samples: number }> = this.videoSegments(
          plan.timestamps.map((timestamp) => ({ ...frame, timestamp })),
          video.layout,
        );
        if (plan.audio) segments.push({ samples: plan.audio.samples });
        return { segments };
      }),
      // Audio is decoded (its length in samples decides its tokens) but not encoded.
      ...audios.map(async (input) => ({ samples: (await loadAudio(input, this.loaded().audioSampleRate, audio)).samples })),
    ]);
    return this.call(signal, (id) => native.countTokens(id, text, items, true, () => {}));
  }

  /** Token ids of `text`. By default no BOS is added and special-token text is kept literal. */
  tokenize(text: string, options: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Uint32Array {
    const native = this.loadedNative();
    if (!is.string(text)) throw invalidParameter("text", "a string", text);
    return native.tokenize(text, optionalBoolean("addSpecial", options.addSpecial, false), optionalBoolean("parseSpecial", options.parseSpecial, false));
  }

  /** The text of token ids. */
  detokenize(tokens: Uint32Array | number[]): string {
    const native = this.loadedNative();
    const array = tokens instanceof Uint32Array ? tokens : Uint32Array.from(tokens);
    return native.detokenize(array);
  }

  /** The prompt text a `chat()` call renders, with one marker per image (and with `tools`, their descriptions). */
  formatChat(messages: ChatMessage[], options: StructuredOptions = {}): string {
    const native = this.loadedNative();
    const plan = planOutput(options, grammarChecks(native));
    return this.applyChatHere(native, parseMessages(messages, this.loaded().marker).messages, plan).prompt;
  }

  /** Cumulative cache and request counters; cheap to read, also while a request runs. */
  get stats(): ModelStats {
    const { requests, busySlots, queued, reusedPositions, evaluatedPositions, imageCache } = this.loadedNative().stats();
    return { requests, slots: { total: this.loaded().parallel, busy: busySlots }, queued, prefix: { reusedPositions, evaluatedPositions }, imageCache };
  }

  /**
   * Empties the image embedding cache and the KV cache, so the next request encodes and
   * evaluates everything. Runs in order with the other requests.
   */
  async clearCaches(): Promise<void> {
    const native = this.loadedNative();
    await this.call(undefined, (id) => native.clearCaches(id, () => {}));
  }

  /**
   * Aborts running and queued requests (they reject with E_DISPOSED) and frees the model,
   * projector and context. Later calls throw E_DISPOSED. Safe to call twice.
   */
  async dispose(): Promise<void> {
    if (this.state === "disposed") return;
    this.state = "disposed";
    const native = this.native;
    this.native = undefined;
    if (!native) return;
    if (this.exitRef) liveModels.delete(this.exitRef);
    await native.dispose(nextRequestId++, () => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  // --- internals ---------------------------------------------------------------

  /** The engine in a supervised child process; its events become this object's. */
  private supervise(): SupervisedEngine {
    const rpc = this.options.native.rpc;
    // A restart after an RPC server went away would only crash again: check the servers first.
    const engine = new SupervisedEngine(this.options.supervisor, rpc ? { beforeRestart: () => checkRpcServers(rpc) } : {});
    engine.events.on("crash", (crash: CrashEvent) => this.events.emit("crash", crash));
    engine.events.on("restart", (restart: RestartEvent) => this.events.emit("restart", restart));
    return engine;
  }

  private loaded(): NativeModelInfo {
    if (this.state === "disposed") throw new StateError("E_DISPOSED", "This MultimodalLM has been disposed; create a new one.");
    if (this.state !== "loaded" || !this.modelInfo) {
      throw new StateError("E_NOT_LOADED", "The model is not loaded yet: await lm.load() (or use MultimodalLM.load()) first.");
    }
    return this.modelInfo;
  }

  private loadedNative(): NativeModel {
    this.loaded();
    return this.native!;
  }

  /**
   * Runs one native request with `signal` wired to cancel it; maps native errors. An aborted
   * request settles at once: the engine lets go of it at the end of its current step (which may
   * be encoding another request's image), and what it reports then is dropped.
   */
  private async call<T>(signal: AbortSignal | undefined, run: (id: number) => Promise<T>): Promise<T> {
    const id = nextRequestId++;
    if (signal?.aborted) throw new AbortError("The operation was aborted.", { cause: signal.reason });
    const native = this.native!;
    const work = run(id);
    if (!signal) {
      try {
        return await work;
      } catch (error) {
        throw fromNative(error);
      }
    }
    let onAbort!: () => void;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        native.cancel(id);
        work.catch(() => {});
        reject(new AbortError("The operation was aborted.", { cause: signal.reason }));
      };
    });
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return await Promise.race([work, aborted]);
    } catch (error) {
      throw fromNative(error, signal);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  private imageOptions(call: CallImageOptions | undefined, signal: AbortSignal | undefined): ImageOptions {
    if (call !== undefined && is.object(call) && "signal" in call) throw invalidParameter("image.signal", "no signal here (pass signal to the call)", call.signal);
    validateImageOptions(call, "image");
    return { ...this.options.image, ...call, ...(signal ? { signal } : {}) };
  }

  /** The call's video options over the model's, checked together (so start/end and min/maxPixels are checked across both). */
  /**
   * A call's video options over the model's, and how videos are read: frames in pairs on models
   * that merge them; with `audio`, the sound at the projector's rate under the audio options' limits.
   */
  private videoOptions(
    call: CallVideoOptions | undefined,
    audioCall: CallAudioOptions | undefined,
    signal: AbortSignal | undefined,
  ): { options: VideoOptions; layout: VideoLayout; plan: LoadVideoPlanOptions } {
    if (call !== undefined && is.object(call) && "signal" in call) throw invalidParameter("video.signal", "no signal here (pass signal to the call)", call.signal);
    if (call !== undefined && !is.object(call)) throw invalidParameter("video", "an object", call);
    const options: VideoOptions = { ...this.options.video, ...call, ...(signal ? { signal } : {}) };
    const { prefix, timestamps, audio } = validateVideoOptions(options, "video");
    const { frameMerge, audioSampleRate } = this.loaded();
    const plan: LoadVideoPlanOptions = { pairs: frameMerge > 1 };
    if (audio) {
      const { maxSeconds, timeoutMs } = this.audioOptions(audioCall, undefined);
      Object.assign(plan, { audioSampleRate, audioOptions: { maxSeconds, timeoutMs } });
    }
    return { options, layout: { prefix, timestamps }, plan };
  }

  /**
   * A video's segments for the prompt: the prefix, then the frames, with a timestamp text before
   * a frame each time another `timestamps` seconds have passed. On models that merge frames in
   * pairs, timestamps go only before the first frame of a pair, so they never split one.
   */
  private videoSegments<F extends { timestamp: number }>(frames: F[], layout: VideoLayout): Array<string | Omit<F, "timestamp">> {
    return videoSegments(frames, layout, this.loaded().frameMerge);
  }

  private async loadMedia(
    media: MediaRef[],
    options: { image?: CallImageOptions; video?: CallVideoOptions; audio?: CallAudioOptions },
    signal: AbortSignal | undefined,
  ): Promise<{ items: NativeMediaItem[]; videos: GenerateResult["videos"] }> {
    const imageOptions = this.imageOptions(options.image, signal);
    const video = this.videoOptions(options.video, options.audio, signal);
    const audio = media.some((ref) => ref.type === "audio") ? this.audioOptions(options.audio, signal) : undefined;
    const { audioSampleRate } = this.loaded();
    this.checkMediaKinds(media, video.plan);
    const loaded = await Promise.all(
      media.map(async (ref): Promise<DecodedImage | DecodedVideo | DecodedAudio> => {
        try {
          if (ref.type === "audio") return await loadAudio(ref.input as AudioInput, audioSampleRate, audio);
          return await (ref.type === "image" ? loadImage(ref.input as ImageInput, imageOptions) : loadVideo(ref.input as VideoInput, video.options, video.plan));
        } catch (error) {
          throw ref.param.startsWith("messages[") ? atPart(error, ref.param) : error;
        }
      }),
    );
    const videos: GenerateResult["videos"] = [];
    const items = loaded.map((item): NativeMediaItem => {
      if ("pcm" in item) return { pcm: item.pcm, id: item.id };
      if (!("frames" in item)) return item;
      const first = item.frames[0]!;
      videos.push({
        info: item.info,
        frames: item.frames.length,
        timestamps: item.frames.map((f) => f.timestamp),
        width: first.width,
        height: first.height,
        ...(item.audio ? { audio: { samples: item.audio.samples, seconds: item.audio.seconds } } : {}),
      });
      const frames = item.frames.map((f) => ({ data: f.data, width: f.width, height: f.height, id: f.id, mergeable: true, timestamp: f.timestamp }));
      const segments = this.videoSegments(frames, video.layout) as Array<string | NativeMedia | NativeAudio>;
      if (item.audio) segments.push({ pcm: item.audio.pcm, id: item.audio.id });
      return { segments };
    });
    return { items, videos };
  }

  /** The media a model can take: images and videos need a vision encoder, audio (and a video's sound) an audio one. */
  private checkMediaKinds(media: Array<{ type: MediaRef["type"]; param?: string }>, video?: LoadVideoPlanOptions): void {
    const { vision, audio } = this.loaded();
    if (video?.audioSampleRate !== undefined && !audio && media.some((ref) => ref.type === "video")) {
      throw new MultimodalLMError(
        "E_INVALID_ARGUMENT",
        "This model's projector has no audio encoder, so it cannot read a video's sound (video.audio). Leave audio off, or load an omni model's projector (vision and audio).",
        { param: "video.audio" },
      );
    }
    for (const ref of media) {
      const can = ref.type === "audio" ? audio : vision;
      if (can) continue;
      const what = ref.type === "audio" ? "audio" : ref.type === "image" ? "images" : "videos";
      const has = vision ? "vision (images and video) only" : audio ? "audio only" : "no media";
      throw new MultimodalLMError("E_INVALID_ARGUMENT", `This model's projector takes ${has}, so it cannot read ${what}${ref.param ? ` (${ref.param})` : ""}. Load a projector that supports ${what}.`, {
        ...(ref.param ? { param: ref.param } : {}),
      });
    }
  }

  private audioOptions(call: CallAudioOptions | undefined, signal: AbortSignal | undefined): AudioOptions {
    if (call !== undefined && is.object(call) && "signal" in call) throw invalidParameter("audio.signal", "no signal here (pass signal to the call)", call.signal);
    validateAudioOptions(call, "audio");
    return { ...this.options.audio, ...call, ...(signal ? { signal } : {}) };
  }

  private async loadImages(images: ImageInput[], call: CallImageOptions | undefined, signal: AbortSignal | undefined): Promise<DecodedImage[]> {
    const options = this.imageOptions(call, signal);
    return Promise.all(images.map((image) => loadImage(image, options)));
  }

  /**
   * llama.cpp's chat layer on these messages and output options: the prompt, and the grammar for
   * the reply. With `isolation: "process"` the template runs in the engine process, since a
   * template can crash llama.cpp's Jinja engine with some messages (a recursion as deep as a
   * message is long, say), and then only that process dies.
   */
  private async applyChat(native: NativeModel, messages: TemplateMessage[], plan: OutputPlan): Promise<NativeChatParams> {
    const request = this.chatRequest(messages, plan);
    let params: NativeChatParams;
    try {
      params = native instanceof SupervisedEngine ? await native.applyChatInEngine(nextRequestId++, request) : native.applyChat(request);
    } catch (error) {
      throw fromNative(error);
    }
    return this.checkTools(params, plan);
  }

  /** applyChat in this process, for formatChat, which is synchronous. */
  private applyChatHere(native: NativeModel, messages: TemplateMessage[], plan: OutputPlan): NativeChatParams {
    let params: NativeChatParams;
    try {
      params = native.applyChat(this.chatRequest(messages, plan));
    } catch (error) {
      throw fromNative(error);
    }
    return this.checkTools(params, plan);
  }

  private chatRequest(messages: TemplateMessage[], plan: OutputPlan): string {
    const request: Record<string, unknown> = { messages, add_generation_prompt: true };
    if (plan.tools) {
      request.tools = plan.tools;
      request.tool_choice = plan.toolChoice;
      request.prefill_tool_call = true;
      if (plan.parallelToolCalls !== undefined) request.parallel_tool_calls = plan.parallelToolCalls;
    }
    if (plan.schema !== undefined) request.json_schema = plan.schema;
    return JSON.stringify(request);
  }

  private checkTools(params: NativeChatParams, plan: OutputPlan): NativeChatParams {
    if (plan.tools && plan.toolChoice !== "none" && !params.supportsTools) {
      throw new MultimodalLMError(
        "E_TOOLS_UNSUPPORTED",
        "This model's chat template cannot render tool calls, so tools would be ignored. Load the model with a chat template that supports tools " +
          "(the chatTemplate load option, or --chat-template-file on the command line; llama.cpp's models/templates has many), or send the request without tools.",
        { param: "tools" },
      );
    }
    return params;
  }

  /** The grammar a reply runs under: the user's, or the chat template's (schema, tools). */
  private constraintOf(plan: OutputPlan, params: NativeChatParams | undefined): NativeConstraint | undefined {
    if (plan.grammar !== undefined) return { kind: "user", grammar: plan.grammar };
    if (!params || params.grammar.length === 0) return undefined;
    return {
      kind: "template",
      grammar: params.grammar,
      lazy: params.lazy,
      triggers: params.triggers,
      preservedTokens: params.preservedTokens,
      generationPrompt: params.generationPrompt,
    };
  }

  /** One user turn's content: markers before the text when it has none (the chat template comes later). */
  private userContent(prompt: unknown, images: unknown, videos: unknown, audios: unknown = []): string {
    return userContent(this.loaded().marker, prompt, images, videos, audios);
  }

  private async runGenerate(request: GenerateRequest, push: (event: StreamEvent) => void): Promise<GenerateResult> {
    if (!is.object(request)) throw invalidParameter("request", "an object with a prompt", request);
    rejectUnknownKeys("generate()", request, GENERATE_KEYS);
    const native = this.loadedNative();
    const raw = optionalBoolean("raw", request.raw, false);
    const images = request.images ?? [];
    const videos = request.videos ?? [];
    const audios = request.audios ?? [];
    const content = this.userContent(request.prompt, images, videos, audios);
    const media: MediaRef[] = [
      ...images.map((input, i): MediaRef => ({ type: "image", input, param: `images[${i}]` })),
      ...videos.map((input, i): MediaRef => ({ type: "video", input, param: `videos[${i}]` })),
      ...(Array.isArray(audios) ? audios : []).map((input, i): MediaRef => ({ type: "audio", input, param: `audios[${i}]` })),
    ];
    const plan = planOutput(request, grammarChecks(native));
    if (!raw) return this.execute(await this.applyChat(native, [{ role: "user", content }], plan), plan, media, request, push);
    // Raw: no template, so no tools; a schema becomes a plain grammar.
    if (plan.tools && plan.toolChoice !== "none") throw invalidParameter("tools", "no tools with raw: true (tools need the chat template)", request.tools);
    const grammar = plan.schema !== undefined ? grammarChecks(native).schemaToGrammar(JSON.stringify(plan.schema)) : plan.grammar;
    return this.execute(content, { ...plan, parse: false, ...(grammar !== undefined ? { grammar } : {}) }, media, request, push);
  }

  private async runChat(request: ChatRequest, push: (event: StreamEvent) => void): Promise<GenerateResult> {
    if (!is.object(request)) throw invalidParameter("request", "an object with messages", request);
    rejectUnknownKeys("chat()", request, CHAT_KEYS);
    const native = this.loadedNative();
    const marker = this.loaded().marker;
    const parsed = parseMessages(request.messages, marker);
    const plan = planOutput(request, grammarChecks(native));
    const params = await this.applyChat(native, parsed.messages, plan);
    const markers = countOccurrences(params.prompt, marker);
    if (markers !== parsed.media.length) {
      const videos = parsed.media.filter((m) => m.type === "video").length;
      const audios = parsed.media.filter((m) => m.type === "audio").length;
      throw mismatch(markers, parsed.media.length - videos - audios, videos, marker, audios);
    }
    if (request.resolveMedia !== undefined && !is.fn(request.resolveMedia)) throw invalidParameter("resolveMedia", "a function", request.resolveMedia);
    const signal = optionalSignal("signal", request.signal);
    const media = request.resolveMedia ? await resolveMedia(parsed.media, request.resolveMedia, signal) : parsed.media;
    return this.execute(params, plan, media, request, push);
  }

  /**
   * Runs one request: `input` is the raw prompt, or what the chat layer made of the messages
   * (prompt, grammar, stops, and how to parse the reply).
   */
  private async execute(
    input: string | NativeChatParams,
    plan: OutputPlan,
    media: MediaRef[],
    options: SamplingOptions & { image?: CallImageOptions; video?: CallVideoOptions; audio?: CallAudioOptions },
    push: (event: StreamEvent) => void,
  ): Promise<GenerateResult> {
    const started = performance.now();
    const native = this.loadedNative();
    const sampling = resolveSampling(options);
    const vocabSize = this.loaded().vocabSize;
    for (const [token] of sampling.logitBias) {
      if (token >= vocabSize) throw invalidParameter(`logitBias[${token}]`, `a token id below the vocabulary size (${vocabSize})`, token);
    }
    const signal = optionalSignal("signal", options.signal);
    const params = typeof input === "string" ? undefined : input;
    const prompt = params ? params.prompt : (input as string);
    if (params) {
      sampling.stop = [...sampling.stop, ...params.additionalStops.filter((stop) => stop.length > 0)];
      // One call asked for: the reply ends where a second would start. (On templates with only a
      // per-call marker, such as Hermes' <tool_call>, llama.cpp's grammar admits more calls.)
      const marker = params.toolCallMarker.trim();
      if (params.toolsPrefilled && !params.parallelToolCalls && marker.length > 0) sampling.stop.push(marker);
    }
    const constraint = this.constraintOf(plan, params);
    // With a JSON format or tools, the reply goes through llama.cpp's parser, piece by piece.
    const parser =
      params && plan.parse
        ? new OutputParser((text, partial) => native.parseChat(text, partial, params.format, params.parser, params.generationPrompt, params.continuation), push)
        : undefined;
    const onEvent = (piece: string | undefined, token?: NativeTokenLogprob) => {
      if (piece !== undefined) {
        if (parser) parser.push(piece);
        else push({ type: "text", text: piece });
      } else if (token) {
        push({ type: "logprobs", logprobs: toTokenLogprob(token) });
      }
    };
    const { items, videos } = await this.loadMedia(media, options, signal);
    const imageLoadMs = performance.now() - started;
    let r: NativeGenerateResult;
    try {
      r = await this.call(signal, (id) => native.generate(id, { prompt, media: items, addSpecial: true, ...sampling, ...(constraint ? { constraint } : {}) }, onEvent));
    } catch (error) {
      // A user grammar that leaves no token to sample (e.g. one that must end, with ignoreEos).
      if (error instanceof MultimodalLMError && error.code === "E_INVALID_GRAMMAR" && plan.grammar !== undefined && error.param === undefined) {
        Object.defineProperty(error, "param", { value: "grammar", enumerable: true });
      }
      throw error;
    }
    const truncated = r.stopReason === "length" || r.stopReason === "context";
    const reply = parser ? parser.finish(truncated) : { content: r.text, toolCalls: [] };
    return generateResult(r, reply, { logprobs: sampling.logprobs >= 0, videos, imageLoadMs, started });
  }

  private stream<R extends { signal?: AbortSignal }>(
    request: R,
    run: (request: R, push: (event: StreamEvent) => void) => Promise<GenerateResult>,
  ): TextStream<GenerateResult> {
    const controller = new AbortController();
    if (!is.object(request)) throw invalidParameter("request", "an object", request);
    const user = optionalSignal("signal", request.signal);
    const signal = user ? AbortSignal.any([user, controller.signal]) : controller.signal;
    return new PieceQueue<GenerateResult>(
      async (push) => run({ ...request, signal }, push),
      () => controller.abort(new AbortError("The stream was stopped.")),
    );
  }
}
