/** Stable machine-readable error codes. Never renamed once published. */
export type MultimodalLMErrorCode =
  /** The native addon could not be loaded. */
  | "E_BINDING_LOAD"
  /** An argument or option failed validation; the message names it and what was expected. */
  | "E_INVALID_ARGUMENT"
  /** A file (model, mmproj, image) does not exist, or is a directory. */
  | "E_FILE_NOT_FOUND"
  /** The model or mmproj could not be loaded: not GGUF, swapped, mismatched or corrupt. */
  | "E_MODEL_LOAD"
  /** The bytes are not a decodable image (unknown format, truncated, corrupt). */
  | "E_IMAGE_DECODE"
  /** The image has more pixels than `limitInputPixels` allows. */
  | "E_IMAGE_TOO_LARGE"
  /** A `data:` URL is empty, malformed, or not valid base64. */
  | "E_INVALID_DATA_URL"
  /** No ffmpeg (or ffprobe) binary was found; the message lists the four ways to provide one. */
  | "E_FFMPEG_NOT_FOUND"
  /** The bytes are not a readable video: no video stream, no frames, truncated, or a refused container (playlist, concat list). */
  | "E_VIDEO_DECODE"
  /** The sampled frames would need more memory than `maxTotalBytes` allows, or a frame is over `limitInputPixels`. */
  | "E_VIDEO_TOO_LARGE"
  /** ffmpeg or ffprobe ran past the video's `timeoutMs`. */
  | "E_VIDEO_TIMEOUT"
  /** The bytes are not readable audio: no audio stream, no samples decoded, empty, truncated or corrupt, or a refused container (playlist, concat list). */
  | "E_AUDIO_DECODE"
  /** The audio lasts longer than `maxSeconds` allows; it is refused, never cut. */
  | "E_AUDIO_TOO_LONG"
  /** ffmpeg ran past the audio's `timeoutMs`. */
  | "E_AUDIO_TIMEOUT"
  /** An http(s) download failed: network error, HTTP status, timeout, byte cap or redirect limit. */
  | "E_FETCH"
  /** The server's media policy refused a URL or path: local files outside the allowed directory, domains not allowed, private addresses. */
  | "E_MEDIA_NOT_ALLOWED"
  /** The prompt's media markers and the media given do not match in number. */
  | "E_MEDIA_MISMATCH"
  /** The prompt (text plus media tokens) does not fit in the context window. */
  | "E_CONTEXT_OVERFLOW"
  /** The operation was aborted through its AbortSignal (or load was cancelled). */
  | "E_ABORTED"
  /** The instance is not loaded yet, or already disposed. */
  | "E_NOT_LOADED"
  | "E_DISPOSED"
  /** A call that cannot overlap with another one was made while it was running. */
  | "E_BUSY"
  /** llama.cpp or mtmd failed while evaluating (an internal error, not bad input). */
  | "E_ENGINE"
  /**
   * The engine process (`isolation: "process"`) died while running this request: a native abort,
   * a segfault, an out-of-memory kill or an exit. Also every call after the supervisor gave up.
   */
  | "E_ENGINE_CRASHED"
  /** A JSON schema (responseFormat or a tool's parameters) is not valid, or llama.cpp cannot turn it into a grammar. */
  | "E_INVALID_SCHEMA"
  /** A GBNF grammar does not parse, or admits no output; the message carries llama.cpp's. */
  | "E_INVALID_GRAMMAR"
  /** Tools were given, but the model's chat template cannot render tool calls; load with a chatTemplate that can. */
  | "E_TOOLS_UNSUPPORTED"
  /** Server: the request body is not valid JSON. */
  | "E_INVALID_JSON"
  /** Server: no or wrong API key. */
  | "E_UNAUTHORIZED"
  /** Server: no such endpoint, or a model name the server does not serve. */
  | "E_NOT_FOUND"
  /** Server: the endpoint exists but not for this HTTP method. */
  | "E_METHOD_NOT_ALLOWED"
  /** Server: the request body is larger than the server's limit. */
  | "E_BODY_TOO_LARGE"
  /** Server: the request queue is full; retry later. */
  | "E_QUEUE_FULL"
  /** Server: the model is not available (shutting down). */
  | "E_UNAVAILABLE"
  /** Server: an unexpected failure (a bug); the message is generic and the details are logged. */
  | "E_INTERNAL";

/** Base class of every error multimodal-lm throws on purpose. */
export class MultimodalLMError extends Error {
  readonly code: MultimodalLMErrorCode;
  /** The request field at fault, where one is (e.g. `messages[0].content[1]`, `tools[2].function.parameters`). */
  readonly param: string | undefined;

  constructor(code: MultimodalLMErrorCode, message: string, options?: { cause?: unknown; param?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.param = options?.param;
  }
}

/** A file the caller named does not exist, or is not a regular file. */
export class FileNotFoundError extends MultimodalLMError {
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super("E_FILE_NOT_FOUND", message, options);
    this.path = path;
  }
}

/** The model or mmproj could not be loaded. */
export class ModelLoadError extends MultimodalLMError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_MODEL_LOAD", message, options);
  }
}

/** An image input could not be read, fetched or decoded. */
export class ImageError extends MultimodalLMError {
  constructor(code: "E_IMAGE_DECODE" | "E_IMAGE_TOO_LARGE" | "E_INVALID_DATA_URL", message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** A video input could not be read, probed or decoded, or ffmpeg is missing. */
export class VideoError extends MultimodalLMError {
  constructor(
    code: "E_FFMPEG_NOT_FOUND" | "E_VIDEO_DECODE" | "E_VIDEO_TOO_LARGE" | "E_VIDEO_TIMEOUT" | "E_INVALID_DATA_URL",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** An audio input could not be read or decoded, is too long, or ffmpeg is missing. */
export class AudioError extends MultimodalLMError {
  constructor(
    code: "E_FFMPEG_NOT_FOUND" | "E_AUDIO_DECODE" | "E_AUDIO_TOO_LONG" | "E_AUDIO_TIMEOUT" | "E_INVALID_DATA_URL",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** An http(s) download failed. `status` is set when the server answered with an error status. */
export class FetchError extends MultimodalLMError {
  readonly url: string;
  readonly status: number | undefined;
  constructor(url: string, message: string, options?: { cause?: unknown; status?: number }) {
    super("E_FETCH", message, options);
    this.url = url;
    this.status = options?.status;
  }
}

/** The server's media policy refused a media URL or path. The message names the option that would allow it. */
export class MediaNotAllowedError extends MultimodalLMError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_MEDIA_NOT_ALLOWED", message, options);
  }
}

/** Media markers in the prompt and media given do not match. */
export class MediaMismatchError extends MultimodalLMError {
  constructor(message: string) {
    super("E_MEDIA_MISMATCH", message);
  }
}

/** The prompt does not fit in the context window. */
export class ContextOverflowError extends MultimodalLMError {
  constructor(message: string) {
    super("E_CONTEXT_OVERFLOW", message);
  }
}

/** The operation was aborted. `cause` is the AbortSignal's reason. */
export class AbortError extends MultimodalLMError {
  constructor(message = "The operation was aborted.", options?: { cause?: unknown }) {
    super("E_ABORTED", message, options);
  }
}

/** The instance is in the wrong state for the call (not loaded, disposed, busy). */
export class StateError extends MultimodalLMError {
  constructor(code: "E_NOT_LOADED" | "E_DISPOSED" | "E_BUSY", message: string) {
    super(code, message);
  }
}

/** llama.cpp or mtmd failed internally. The message names the failing call. */
/** How the engine process ended. */
export interface EngineExit {
  /** The signal that killed it (SIGABRT for a llama.cpp assert, SIGSEGV, SIGKILL for the OOM killer), or null. */
  signal: NodeJS.Signals | null;
  /** Its exit code when it exited on its own, or null. */
  exitCode: number | null;
  /** The last lines llama.cpp and the engine wrote before it ended (its log and stderr). */
  logTail: string[];
}

/** A request the engine process was running when it died, or a call after the supervisor gave up (E_ENGINE_CRASHED). */
export class EngineCrashedError extends MultimodalLMError {
  readonly signal: NodeJS.Signals | null;
  readonly exitCode: number | null;
  readonly logTail: string[];
  constructor(message: string, exit: EngineExit, options?: { cause?: unknown }) {
    super("E_ENGINE_CRASHED", message, options);
    this.name = "EngineCrashedError";
    this.signal = exit.signal;
    this.exitCode = exit.exitCode;
    this.logTail = exit.logTail;
  }
}

export class EngineError extends MultimodalLMError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_ENGINE", message, options);
  }
}

/** One place the loader looked for the native addon, and why it was not used. */
export interface BindingLoadAttempt {
  path: string;
  source: BindingSource;
  reason: string;
}

export type BindingSource = "MULTIMODAL_LM_BINARY" | "prebuild" | "local build" | "explicit";

/** The native addon could not be loaded from any candidate path. */
export class BindingLoadError extends MultimodalLMError {
  readonly attempts: readonly BindingLoadAttempt[];

  constructor(attempts: readonly BindingLoadAttempt[]) {
    const tried = attempts.length
      ? attempts.map((a) => `  - ${a.path} (${a.source}): ${a.reason}`).join("\n")
      : "  (no candidate paths)";
    const named = attempts.some((a) => a.source === "MULTIMODAL_LM_BINARY");
    super(
      "E_BINDING_LOAD",
      `multimodal-lm could not load its native addon. Tried:\n${tried}\n` +
        (named
          ? "MULTIMODAL_LM_BINARY names the only file tried: point it at a working multimodal_lm.node, or unset it to use the package's prebuilt or local build."
          : "To fix it: run `npm rebuild multimodal-lm` (in a git checkout: `npm run build:native`) to compile the addon; " +
            "that needs cmake 3.19+ and a C++17 compiler. If npm did not run this package's install script (npm 12 blocks " +
            "dependencies' install scripts that package.json's allowScripts does not cover; npm 11 warns about them), run " +
            "`npm install-scripts approve multimodal-lm` (or add \"allowScripts\": { \"multimodal-lm\": true } to package.json) " +
            "and then `npm rebuild multimodal-lm`. To use a specific file, set MULTIMODAL_LM_BINARY=/path/to/multimodal_lm.node."),
    );
    this.attempts = attempts;
  }
}
