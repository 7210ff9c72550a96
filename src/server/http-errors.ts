// Errors as OpenAI-shaped HTTP answers: {error: {message, type, param, code}} with the status
// that matches the cause. Only real failures are 500s, and those never show internals.
import { MultimodalLMError, type MultimodalLMErrorCode } from "../errors.js";

/** An error the server answers with a given status. `param` names the request field at fault. */
export class HttpError extends MultimodalLMError {
  readonly status: number;
  constructor(status: number, code: MultimodalLMErrorCode, message: string, options?: { param?: string; cause?: unknown }) {
    super(code, message, options);
    this.status = status;
  }
}

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

const STATUS_BY_CODE: Partial<Record<MultimodalLMErrorCode, number>> = {
  E_INVALID_ARGUMENT: 400,
  E_INVALID_JSON: 400,
  E_FILE_NOT_FOUND: 400,
  E_IMAGE_DECODE: 400,
  E_IMAGE_TOO_LARGE: 400,
  E_INVALID_DATA_URL: 400,
  E_VIDEO_DECODE: 400,
  E_VIDEO_TOO_LARGE: 400,
  E_VIDEO_TIMEOUT: 400,
  E_AUDIO_DECODE: 400,
  E_AUDIO_TOO_LONG: 400,
  E_AUDIO_TIMEOUT: 400,
  E_FETCH: 400,
  E_MEDIA_NOT_ALLOWED: 400,
  E_MEDIA_MISMATCH: 400,
  E_CONTEXT_OVERFLOW: 400,
  E_MODEL_LOAD: 400,
  E_INVALID_SCHEMA: 400,
  E_INVALID_GRAMMAR: 400,
  E_TOOLS_UNSUPPORTED: 400,
  E_UNAUTHORIZED: 401,
  E_NOT_FOUND: 404,
  E_METHOD_NOT_ALLOWED: 405,
  E_BODY_TOO_LARGE: 413,
  E_QUEUE_FULL: 429,
  E_BUSY: 429,
  E_ABORTED: 503,
  E_UNAVAILABLE: 503,
  E_DISPOSED: 503,
  E_NOT_LOADED: 503,
  // The engine process died while running the request; it restarts by itself (Retry-After).
  E_ENGINE_CRASHED: 503,
  // The server cannot do what it was asked because of how it is set up: still a server-side error.
  E_FFMPEG_NOT_FOUND: 500,
  E_ENGINE: 500,
  E_BINDING_LOAD: 500,
  E_INTERNAL: 500,
};

/** The HTTP status for a stable error code. */
export function statusFor(code: MultimodalLMErrorCode): number {
  return STATUS_BY_CODE[code] ?? 500;
}

const TYPE_BY_STATUS: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  404: "not_found_error",
  405: "invalid_request_error",
  413: "invalid_request_error",
  429: "rate_limit_error",
  503: "service_unavailable_error",
};

export interface HttpFailure {
  status: number;
  body: OpenAIErrorBody;
  /** Set for 500s that are bugs: the original error, to be logged. */
  internal?: unknown;
}

/** The status and OpenAI error body for anything a request threw. */
export function toHttpFailure(error: unknown): HttpFailure {
  if (error instanceof MultimodalLMError) {
    const status = error instanceof HttpError ? error.status : statusFor(error.code);
    const param = error.param ?? null;
    return {
      status,
      body: { error: { message: error.message, type: TYPE_BY_STATUS[status] ?? "server_error", param, code: error.code } },
      ...(error.code === "E_ENGINE" ? { internal: error } : {}),
    };
  }
  return {
    status: 500,
    body: {
      error: {
        message: "The server failed while handling this request. The details are in the server's log.",
        type: "server_error",
        param: null,
        code: "E_INTERNAL",
      },
    },
    internal: error,
  };
}
