// Options of the OpenAI-compatible handler and server, validated once when they are created.
import type { MediaAccessOptions } from "./media-access-types.js";

/** One finished HTTP request, for access logs and monitoring. */
export interface RequestLog {
  /** The response's `id` for completions (chatcmpl-...), else a request counter. */
  id: string;
  method: string;
  path: string;
  status: number;
  durationMs: number;
  /** Set when the request failed: the error's stable code (E_...). */
  code?: string;
  /** True when the client went away before the answer was complete, and its generation was aborted. */
  aborted: boolean;
  stream?: boolean;
  promptTokens?: number;
  completionTokens?: number;
  /** For a completed chat completion: from the engine starting it to its first sampled token. */
  timeToFirstTokenMs?: number;
  /** The original error for 500s (E_INTERNAL), so it can be logged; clients only see a generic message. */
  error?: unknown;
}

export interface OpenAIHandlerOptions extends MediaAccessOptions {
  /** The model name /v1/models reports and requests may use ("default" is always accepted). Default: the model file's name without .gguf. */
  modelName?: string;
  /** Require `Authorization: Bearer <apiKey>` on /v1 endpoints (compared in constant time). Default: none. */
  apiKey?: string;
  /** Largest request body, in bytes; larger ones get 413. Default 64 MiB. */
  maxBodyBytes?: number;
  /** Requests that may wait for a free slot (beyond the model's `parallel` slots, which run); more get 429. Default 16. */
  maxQueue?: number;
  /** Called after each request with its outcome. */
  onRequest?: (log: RequestLog) => void;
  /** Serve the web chat page at `/` (of the mount path). Default true. */
  ui?: boolean;
  /** Serve Prometheus metrics at `/metrics` (behind `apiKey` when one is set). Default true. */
  metrics?: boolean;
}

export interface ServeOptions extends OpenAIHandlerOptions {
  /** Interface to listen on. Default 127.0.0.1 (this machine only). */
  host?: string;
  /** Port. Default 8000; 0 picks a free one. */
  port?: number;
}
