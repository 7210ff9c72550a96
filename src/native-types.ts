// The whole native surface, as exported by native/addon.cpp. Keep in sync.

export interface NativeDevice {
  /** ggml device name, e.g. "CPU", "Vulkan0", "CUDA0". */
  name: string;
  description: string;
  type: "cpu" | "gpu" | "igpu" | "accel" | "unknown";
  /** ggml backend that owns the device, e.g. "CPU", "Vulkan". */
  backend: string;
  memoryFree: number;
  memoryTotal: number;
}

export interface NativeCpuVariantCandidate {
  /** llama.cpp's variant name: "x64", "haswell", "zen4", "sapphirerapids", ... */
  name: string;
  /** ggml's score for this CPU: 0 when the CPU lacks an instruction set the variant needs. */
  score: number;
  usable: boolean;
  /** Why it is not usable. */
  note?: string;
}

export interface NativeCpuVariant {
  /** The variant loaded, or null when none could be (then no model loads). */
  name: string | null;
  /** Why this one: the best usable score, or MULTIMODAL_LM_CPU_VARIANT, and faster ones refused. */
  reason: string;
  /** The folder the variants were loaded from (the addon's). */
  dir: string;
  candidates: NativeCpuVariantCandidate[];
}

export interface NativeSystemInfo {
  /** The llama.cpp commit the addon was compiled from. */
  llamaCppCommit: string;
  /** The backend selected at build time: "cpu", "metal", "cuda" or "vulkan". */
  backend: "cpu" | "metal" | "cuda" | "vulkan";
  /** ggml backends compiled in, e.g. ["CPU"] or ["Vulkan", "CPU"]. */
  backends: string[];
  devices: NativeDevice[];
  /** CPU instruction sets the CPU backend was compiled to use, e.g. ["SSE3", "AVX2", "FMA"]. */
  cpuFeatures: string[];
  /**
   * The CPU backend variant loaded at run time and why (Linux x86-64 CPU builds); null where the
   * CPU backend is linked in (macOS, Windows, GPU builds).
   */
  cpuVariant: NativeCpuVariant | null;
  /** The text marker that stands for one image/audio/video item in a prompt. */
  mediaMarker: string;
  /** llama.cpp's own one-line summary (llama_print_system_info). */
  llamaSystemInfo: string;
}

export interface NativeDeviceCheck {
  device: string;
  backend: string;
  ok: boolean;
  /** Largest error of the Q8_0 matmul relative to a float64 reference. */
  maxError: number;
  milliseconds: number;
  error?: string;
}

export interface NativeBinding {
  systemInfo(): NativeSystemInfo;
  mediaMarker(): string;
  checkDevices(): Promise<NativeDeviceCheck[]>;
  NativeModel: new () => NativeModel;
  /** Registers RPC servers' devices in this process (ggml ends the process if one cannot be reached); returns the RPC devices. */
  addRpcServers(endpoints: string[]): string[];
  /** Serves this machine's CPU to RPC clients on "host:port", on a thread of its own, for the life of the process. */
  startRpcServer(endpoint: string, cacheDir: string, threads: number): void;
}

/** Load options as native code reads them; validated and defaulted in src/options.ts. */
export interface NativeLoadOptions {
  model: string;
  mmproj: string;
  chatTemplate?: string;
  contextSize: number;
  /** Slots (sequences decoded together). */
  parallel: number;
  threads: number;
  batchSize: number;
  gpuLayers: number;
  mmprojOnGpu: boolean;
  /** -1 auto, 0 off, 1 on. */
  flashAttention: number;
  imageMinTokens: number;
  imageMaxTokens: number;
  warmup: boolean;
  /** Bound of the image embedding cache in bytes; 0 disables it. */
  imageCacheBytes: number;
  reusePrefix: boolean;
  /** Only the vocabulary and chat templates (the parent side of an isolated engine). */
  vocabOnly?: boolean;
  /** RPC servers ("host:port") whose devices take layers like local GPUs. */
  rpc?: string[];
}

export interface NativeModelInfo {
  contextSize: number;
  trainContextSize: number;
  embeddingSize: number;
  vocabSize: number;
  layers: number;
  architecture: string;
  projector: string;
  description: string;
  marker: string;
  hasChatTemplate: boolean;
  vision: boolean;
  audio: boolean;
  /** The sample rate the audio encoder takes (Hz); 0 without audio. */
  audioSampleRate: number;
  mrope: boolean;
  /** 2 when consecutive video frames are merged in pairs into one chunk (Qwen-VL); otherwise 1. */
  frameMerge: number;
  /** Slots: sequences decoded together. */
  parallel: number;
  /** Tokens one batch (and one sequence's prompt step) holds: llama_n_batch. */
  batchSize: number;
  /** Micro-batch size (llama_n_ubatch): raised for projectors that decode an image in one micro-batch. */
  ubatchSize: number;
  loadMs: number;
}

/** Decoded RGB pixels and their content id. */
export interface NativeMedia {
  data: Uint8Array;
  width: number;
  height: number;
  id: string;
  /** A video frame that may share a temporal chunk with its neighbour. */
  mergeable?: boolean;
}

/** An audio clip: mono float PCM at the projector's sample rate, and its content id. */
export interface NativeAudio {
  pcm: Float32Array;
  id: string;
}

/** What one media marker stands for: an image, an audio clip, or a video's text segments, frames and (with its sound) audio in order. */
export type NativeMediaItem = NativeMedia | NativeAudio | { segments: Array<string | NativeMedia | NativeAudio> };

/** For counting: sizes only, the pixels are never read. */
export type NativeMediaSizeItem =
  | { width: number; height: number }
  /** An audio clip of this many samples. */
  | { samples: number }
  | { segments: Array<string | { width: number; height: number; mergeable?: boolean } | { samples: number }> };

export interface NativeGenerateRequest {
  prompt: string;
  media: NativeMediaItem[];
  addSpecial: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  repeatLastN: number;
  presencePenalty: number;
  frequencyPenalty: number;
  seed: number;
  maxTokens: number;
  stop: string[];
  ignoreEos: boolean;
  /** A grammar on the output: a user's GBNF, or the chat template's (JSON schema, tools). */
  constraint?: NativeConstraint;
  /** -1: none; else per token the sampled token's logprob and this many alternatives. */
  logprobs: number;
  /** [token id, bias] pairs added to the logits. */
  logitBias: Array<[number, number]>;
}

export interface NativeConstraint {
  kind: "user" | "template";
  grammar: string;
  lazy?: boolean;
  triggers?: Array<{ type: number; value: string }>;
  preservedTokens?: string[];
  generationPrompt?: string;
}

export interface NativeTokenLogprob {
  token: number;
  bytes: Uint8Array;
  logprob: number;
  top: Array<{ token: number; bytes: Uint8Array; logprob: number }>;
}

/** What llama.cpp's chat layer makes of one chat request. */
export interface NativeChatParams {
  prompt: string;
  grammar: string;
  lazy: boolean;
  triggers: Array<{ type: number; value: string }>;
  preservedTokens: string[];
  additionalStops: string[];
  generationPrompt: string;
  /** common_chat_format, for parseChat. */
  format: number;
  /** The serialized output parser, for parseChat. */
  parser: string;
  continuation: boolean;
  /** A required tool call's marker was put at the start of the reply. */
  toolsPrefilled: boolean;
  /** That marker (the template's tool-call start). */
  toolCallMarker: string;
  /** Whether more than one call may be made (as asked, or what the template supports). */
  parallelToolCalls: boolean;
  /** The template renders tool calls. */
  supportsTools: boolean;
}

export interface NativeParsedChat {
  content: string;
  reasoning: string;
  toolCalls: Array<{ id: string; name: string; arguments: string }>;
  /** Set when a final parse failed; content is then the raw text. */
  error?: string;
}

export interface NativeGenerateResult {
  text: string;
  stopReason: "eos" | "stop" | "length" | "context";
  promptTokens: number;
  promptPositions: number;
  mediaTokens: number;
  mediaChunks: number;
  completionTokens: number;
  encodeMs: number;
  promptMs: number;
  generationMs: number;
  timeToFirstTokenMs: number;
  totalMs: number;
  reusedPositions: number;
  reusedTokens: number;
  evaluatedPositions: number;
  imageCacheHits: number;
  imageCacheMisses: number;
  encodedChunks: number;
  logprobs: NativeTokenLogprob[];
}

export interface NativeEmbedResult {
  data: Float32Array;
  tokens: number;
  embeddingSize: number;
  chunks: number;
  imageCacheHits: number;
  encodeMs: number;
}

export interface NativeStats {
  requests: number;
  /** Slots running a request now. */
  busySlots: number;
  /** Generation requests waiting for a free slot. */
  queued: number;
  reusedPositions: number;
  evaluatedPositions: number;
  imageCache: { hits: number; misses: number; evictions: number; entries: number; bytes: number; capacityBytes: number };
}

export interface NativeTokenCount {
  tokens: number;
  positions: number;
  textTokens: number;
  mediaTokens: number;
  mediaChunks: number;
}

/**
 * One model on its own engine thread. Async methods take a request id (for cancel)
 * and reject with an Error whose `code` is a MultimodalLMErrorCode.
 */
export interface NativeModel {
  load(
    id: number,
    options: NativeLoadOptions,
    onProgress: (fraction: number) => void,
    logLevel: number,
    onLog: ((level: number, line: string) => void) | undefined,
  ): Promise<NativeModelInfo>;
  /** onEvent gets each text piece, or (undefined, logprobs) for each token when logprobs are asked for. */
  generate(id: number, request: NativeGenerateRequest, onEvent: (piece: string | undefined, logprobs?: NativeTokenLogprob) => void): Promise<NativeGenerateResult>;
  embedImage(id: number, media: NativeMedia, unused: () => void): Promise<NativeEmbedResult>;
  countTokens(id: number, prompt: string, media: NativeMediaSizeItem[], addSpecial: boolean, unused: () => void): Promise<NativeTokenCount>;
  /** Empties the image cache and the KV cache (queued like a request). */
  clearCaches(id: number, unused: () => void): Promise<void>;
  /** Synchronous; safe while a request runs. */
  stats(): NativeStats;
  cancel(id: number): void;
  /** Synchronous: common_chat_templates_apply on a JSON request ({messages, tools, tool_choice, json_schema, ...}). */
  applyChat(requestJson: string): NativeChatParams;
  /** Synchronous: common_chat_parse of generated text. */
  parseChat(text: string, partial: boolean, format: number, parser: string, generationPrompt: string, continuation: boolean): NativeParsedChat;
  /** Synchronous: llama.cpp's GBNF for a JSON schema; throws E_INVALID_SCHEMA. */
  schemaToGrammar(schemaJson: string): string;
  /** Synchronous: throws E_INVALID_GRAMMAR when the GBNF does not parse. */
  checkGrammar(grammar: string): void;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Uint32Array;
  detokenize(tokens: Uint32Array): string;
  dispose(id: number, unused: () => void): Promise<void>;
  /** Synchronously aborts everything and joins the engine thread (for process exit). */
  stopForExit(): void;
}
