// The OpenAI-compatible request handler: a plain (req, res[, next]) function for node:http that
// mounts as-is in Express, Connect, or Fastify (through reply.hijack()).
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";

import type { Registry } from "prom-client";

import { MultimodalLMError } from "../errors.js";
import { safeDecode } from "../media/fetch.js";
import type { MultimodalLM } from "../multimodal-lm.js";
import { invalidParameter, is, optionalInteger, rejectUnknownKeys } from "../validate.js";
import { runChatCompletion, type CompletionOutcome } from "./chat-completions.js";
import { serveChatPage } from "./chat-page.js";
import { parseChatCompletionRequest } from "./chat-request.js";
import { HttpError, toHttpFailure } from "./http-errors.js";
import { MEDIA_ACCESS_OPTION_KEYS, MediaAccess } from "./media-access.js";
import { createServerMetrics } from "./metrics.js";
import type { OpenAIHandlerOptions, RequestLog } from "./options.js";
import { checkAudioModel, isMultipartForm, notMultipart, parseTranscriptionRequest, runTranscription } from "./transcriptions.js";

export interface HandlerStats {
  /** Requests seen, of every kind. */
  requests: number;
  /** Chat completions and transcriptions running or waiting now (reading their body, fetching media, waiting for a slot, generating). */
  active: number;
  /** Chat completions and transcriptions answered in full. */
  completed: number;
  /** Chat completions and transcriptions whose client went away, so their generation was aborted. */
  aborted: number;
  /** Requests answered with an error status (including 429s). */
  failed: number;
  /** Requests refused because the queue was full (429). */
  rejected: number;
}

export interface OpenAIHandler {
  /** Handles one request. With `next` (Express, Connect), paths it does not serve are passed on instead of answered with 404. */
  (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void): void;
  /** A snapshot of the counters. */
  readonly stats: HandlerStats;
  /** The name /v1/models reports. */
  readonly modelName: string;
  /** The prom-client registry GET /metrics answers from (undefined with `metrics: false`); merge it into your own with `Registry.merge`. */
  readonly metrics: Registry | undefined;
  /** Refuses new requests (503), aborts the running ones, waits for them, and frees the media downloader. */
  close(): Promise<void>;
}

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_QUEUE = 16;
/** Seconds a client is asked to wait (Retry-After) while a crashed engine restarts. */
export const ENGINE_RETRY_AFTER_S = 2;

const OPTION_KEYS = ["modelName", "apiKey", "maxBodyBytes", "maxQueue", "onRequest", "ui", "metrics", ...MEDIA_ACCESS_OPTION_KEYS] as const;

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

/** Reads the request's body within the limit (413 past it, as soon as it is known). */
async function readBodyBytes(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) throw tooLarge(limit);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** Reads the JSON body, or takes the one a framework already parsed (express.json(), Fastify). */
async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const parsed = (req as IncomingMessage & { body?: unknown }).body;
  if (parsed !== undefined && !Buffer.isBuffer(parsed) && typeof parsed !== "string") return parsed;
  let text: string;
  if (parsed !== undefined) {
    text = parsed.toString();
    if (Buffer.byteLength(text) > limit) throw tooLarge(limit);
  } else {
    text = (await readBodyBytes(req, limit)).toString("utf8");
  }
  if (text.trim() === "") throw new HttpError(400, "E_INVALID_JSON", "The request body is empty; send a JSON object.");
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new HttpError(400, "E_INVALID_JSON", `The request body is not valid JSON (${(error as Error).message}).`);
  }
}

/**
 * Reads a multipart body's bytes: from the stream, or the raw bytes a framework already read
 * (express.raw()). A framework's JSON parser that saw a multipart body leaves it unread (and
 * req.body an empty object), so the stream is read then; one that consumed it (a multipart
 * middleware such as multer) leaves nothing to read, which is answered with a 400 that says so.
 */
async function readMultipartBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const parsed = (req as IncomingMessage & { body?: unknown }).body;
  if (Buffer.isBuffer(parsed) || typeof parsed === "string") {
    const bytes = Buffer.isBuffer(parsed) ? parsed : Buffer.from(parsed, "latin1");
    if (bytes.length > limit) throw tooLarge(limit);
    return bytes;
  }
  if (req.readableEnded && parsed !== undefined) {
    throw new HttpError(
      400,
      "E_INVALID_ARGUMENT",
      "The multipart body was already consumed by another middleware before the handler saw it; mount the handler before any multipart parser (multer, busboy) on /v1/audio/transcriptions.",
    );
  }
  return readBodyBytes(req, limit);
}

function tooLarge(limit: number): HttpError {
  return new HttpError(
    413,
    "E_BODY_TOO_LARGE",
    `The request body is larger than the server's ${limit}-byte limit. Send media by URL or path instead of base64, or raise the limit (--max-body-mb).`,
  );
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

/**
 * Creates the handler for an already loaded model. It serves `POST /v1/chat/completions`
 * (JSON or SSE), `POST /v1/audio/transcriptions` (multipart, on models that take audio),
 * `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`, `GET /metrics` (Prometheus) and the
 * chat page at `GET /`.
 *
 * ```ts
 * const lm = await MultimodalLM.load({ model, mmproj });
 * http.createServer(createOpenAIHandler(lm, { allowedLocalMediaPath: "./media" })).listen(8000, "127.0.0.1");
 * ```
 */
interface ResolvedHandlerOptions {
  modelName: string | undefined;
  apiKey: string | undefined;
  onRequest: ((log: RequestLog) => void) | undefined;
  maxBodyBytes: number;
  maxQueue: number;
  ui: boolean;
  metrics: boolean;
  access: MediaAccess;
}

function resolveHandlerOptions(options: unknown): ResolvedHandlerOptions {
  if (!is.object(options)) throw invalidParameter("options", "an object", options);
  rejectUnknownKeys("createOpenAIHandler()", options, OPTION_KEYS);
  const { modelName, apiKey, onRequest, maxBodyBytes, maxQueue, ui, metrics, ...mediaOptions } = options;
  if (modelName !== undefined && (!is.string(modelName) || modelName.length === 0)) throw invalidParameter("modelName", "a non-empty string", modelName);
  if (apiKey !== undefined && (!is.string(apiKey) || apiKey.length === 0)) throw invalidParameter("apiKey", "a non-empty string", apiKey);
  if (onRequest !== undefined && !is.fn(onRequest)) throw invalidParameter("onRequest", "a function (log) => void", onRequest);
  if (ui !== undefined && !is.bool(ui)) throw invalidParameter("ui", "a boolean", ui);
  if (metrics !== undefined && !is.bool(metrics)) throw invalidParameter("metrics", "a boolean", metrics);
  return {
    modelName: modelName as string | undefined,
    apiKey: apiKey as string | undefined,
    onRequest: onRequest as ((log: RequestLog) => void) | undefined,
    maxBodyBytes: optionalInteger("maxBodyBytes", maxBodyBytes, 1, Number.MAX_SAFE_INTEGER, DEFAULT_MAX_BODY_BYTES),
    maxQueue: optionalInteger("maxQueue", maxQueue, 0, 1_000_000, DEFAULT_MAX_QUEUE),
    ui: ui ?? true,
    metrics: metrics ?? true,
    access: new MediaAccess(mediaOptions),
  };
}

/** Checks handler options without a model (so a CLI can report a bad flag before loading). Throws what createOpenAIHandler would. */
export async function checkHandlerOptions(options: OpenAIHandlerOptions): Promise<void> {
  await resolveHandlerOptions(options).access.close();
}

export function createOpenAIHandler(lm: MultimodalLM, options: OpenAIHandlerOptions = {}): OpenAIHandler {
  const { modelName: givenName, apiKey, onRequest, maxBodyBytes, maxQueue, ui, metrics: metricsOn, access } = resolveHandlerOptions(options);
  const modelName = givenName ?? path.basename(lm.files.model).replace(/\.gguf$/i, "");
  const created = Math.floor(Date.now() / 1000);
  const keyDigest = apiKey === undefined ? undefined : digest(apiKey);
  const stats: HandlerStats = { requests: 0, active: 0, completed: 0, aborted: 0, failed: 0, rejected: 0 };
  const running = new Set<{ controller: AbortController; done: Promise<void> }>();
  let closed = false;
  const metrics = metricsOn ? createServerMetrics(lm, () => ({ active: stats.active })) : undefined;
  /** Requests decoded together; until the engine reports its slots, one. */
  const slotCount = (): number => {
    try {
      return lm.stats.slots?.total ?? 1;
    } catch {
      return 1;
    }
  };

  // OpenAI's fields, then what the chat page (and any client) needs to know about the model.
  const info = lm.info;
  const modelObject = {
    id: modelName,
    object: "model",
    created,
    owned_by: "multimodal-lm",
    capabilities: info.capabilities,
    meta: { context_size: info.contextSize, train_context_size: info.trainContextSize, architecture: info.architecture, projector: info.projector },
  };

  const authorized = (req: IncomingMessage): boolean => {
    if (!keyDigest) return true;
    const header = req.headers.authorization ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(header.trim());
    // Digests have equal length, so the comparison takes the same time whatever the key's length.
    return match !== null && timingSafeEqual(digest(match[1]!), keyDigest);
  };

  /** The request's model field: absent, the served name, or "default"; anything else is a 404. */
  const checkModelField = (model: string | undefined): void => {
    if (model !== undefined && model !== modelName && model !== "default") {
      throw new HttpError(404, "E_NOT_FOUND", `The model ${JSON.stringify(model)} does not exist here. This server serves "${modelName}" (also reachable as "default").`, {
        param: "model",
      });
    }
  };

  const chatCompletion = async (req: IncomingMessage, res: ServerResponse, signal: AbortSignal, log: RequestLog): Promise<CompletionOutcome> => {
    const body = await readJsonBody(req, maxBodyBytes);
    const request = parseChatCompletionRequest(body);
    log.stream = request.stream;
    checkModelField(request.model);
    log.id = `chatcmpl-${randomBytes(12).toString("hex")}`;
    return runChatCompletion(lm, access, request, { id: log.id, modelName }, res, signal);
  };

  const transcription = async (req: IncomingMessage, res: ServerResponse, signal: AbortSignal, log: RequestLog): Promise<CompletionOutcome> => {
    log.stream = false;
    const contentType = req.headers["content-type"];
    if (!isMultipartForm(contentType)) throw notMultipart(contentType);
    const body = await readMultipartBody(req, maxBodyBytes);
    const request = await parseTranscriptionRequest(body, contentType!);
    checkModelField(request.model);
    checkAudioModel(lm, modelName);
    return runTranscription(lm, request, res, signal);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void): Promise<void> => {
    const started = performance.now();
    // The path as sent, without the query (not through URL: "//host/..." would lose its first segment).
    const route = (req.url ?? "/").split("?")[0]!.replace(/\/+$/, "") || "/";
    const isV1 = route === "/v1" || route.startsWith("/v1/");
    const page = ui && route === "/";
    const metricsRoute = metrics !== undefined && route === "/metrics";
    const work = route === "/v1/chat/completions" ? chatCompletion : route === "/v1/audio/transcriptions" ? transcription : undefined;
    const known = page || metricsRoute || work !== undefined || route === "/health" || route === "/v1/models" || route.startsWith("/v1/models/");
    if (!known && next) {
      next();
      return;
    }
    stats.requests++;
    const log: RequestLog = { id: `req-${stats.requests}`, method: req.method ?? "GET", path: route, status: 0, durationMs: 0, aborted: false };
    const finish = () => {
      log.status = res.statusCode;
      log.durationMs = performance.now() - started;
      if (log.status >= 400) stats.failed++;
      if (work && metrics) {
        // Tokens and latencies only of completions and transcriptions answered in full.
        const full = log.code === undefined && log.promptTokens !== undefined;
        const { status, code, durationMs, promptTokens, completionTokens, timeToFirstTokenMs } = log;
        metrics.record(full ? { status, durationMs, promptTokens, completionTokens, timeToFirstTokenMs } : { status, code, durationMs });
      }
      onRequest?.(log);
    };
    const fail = (error: unknown) => {
      const failure = toHttpFailure(error);
      log.code = failure.body.error.code;
      if (failure.internal !== undefined) log.error = failure.internal;
      const headers: Record<string, string> = {};
      if (failure.status === 429) headers["retry-after"] = "1";
      // The engine is restarting (or gave up: then retrying is still the client's only move).
      if (failure.body.error.code === "E_ENGINE_CRASHED") headers["retry-after"] = String(ENGINE_RETRY_AFTER_S);
      if (failure.status === 413) headers.connection = "close";
      if (failure.status === 405) headers.allow = work ? "POST" : "GET";
      sendJson(res, failure.status, failure.body, headers);
      // Don't read the rest of an oversized upload.
      if (failure.status === 413) res.once("finish", () => req.destroy());
    };

    // The log is complete only when both the response has closed and the request has settled
    // (an aborted generation is known as such after the close).
    const closedResponse = new Promise<void>((resolve) => res.once("close", resolve));
    try {
      if ((isV1 || metricsRoute) && !authorized(req)) {
        throw new HttpError(401, "E_UNAUTHORIZED", "Missing or wrong API key. Send it as the header Authorization: Bearer <key> (the server's --api-key).");
      }
      if (!known) {
        const endpoints = ["POST /v1/chat/completions", "GET /v1/models", "GET /health"];
        // Transcriptions are listed only where the model can hear (elsewhere they answer 400).
        if (info.capabilities.audio) endpoints.splice(1, 0, "POST /v1/audio/transcriptions");
        if (metrics) endpoints.push("GET /metrics");
        if (ui) endpoints.push("the chat page at GET /");
        const list = `${endpoints.slice(0, -1).join(", ")} and ${endpoints.at(-1)!}`;
        throw new HttpError(404, "E_NOT_FOUND", `No endpoint ${req.method} ${route}. This server serves ${list}.`);
      }
      const method = work ? "POST" : "GET";
      if (req.method !== method && !(method === "GET" && req.method === "HEAD")) {
        throw new HttpError(405, "E_METHOD_NOT_ALLOWED", `${route} takes ${method}, not ${req.method}.`);
      }
      if (page) {
        await serveChatPage(req, res, { maxBodyBytes, apiKeyRequired: keyDigest !== undefined });
        return;
      }
      if (route === "/health") {
        const up = !closed && lm.isLoaded;
        // With isolation: "restarting" while a crashed engine comes back, "failed" once the supervisor gave up.
        const engine = up ? lm.engine.state : "disposed";
        const status = !up ? "unavailable" : engine === "ready" ? "ok" : engine;
        sendJson(res, status === "ok" ? 200 : 503, { status, model: modelName }, status === "restarting" ? { "retry-after": String(ENGINE_RETRY_AFTER_S) } : {});
        return;
      }
      if (metricsRoute && metrics) {
        // Also while shutting down: the last scrape sees the requests being drained.
        const { contentType, body } = await metrics.scrape();
        if (!res.headersSent && !res.destroyed) {
          res.writeHead(200, { "content-type": contentType, "cache-control": "no-store" });
          res.end(body);
        }
        return;
      }
      if (closed || !lm.isLoaded) throw new HttpError(503, "E_UNAVAILABLE", "The server is shutting down and takes no new requests.");
      if (route === "/v1/models") {
        sendJson(res, 200, { object: "list", data: [modelObject] });
        return;
      }
      if (route.startsWith("/v1/models/")) {
        const id = safeDecode(route.slice("/v1/models/".length));
        if (id !== modelName && id !== "default") throw new HttpError(404, "E_NOT_FOUND", `The model ${JSON.stringify(id)} does not exist here; this server serves "${modelName}".`);
        sendJson(res, 200, modelObject);
        return;
      }
      // maxQueue counts the requests waiting for a slot, beyond the ones the slots run.
      const slots = slotCount();
      if (stats.active >= slots + maxQueue) {
        stats.rejected++;
        throw new HttpError(
          429,
          "E_QUEUE_FULL",
          `The server is busy: ${stats.active} requests are running or waiting (${slots} ${slots === 1 ? "slot" : "slots"}, and a queue of ${maxQueue}). Retry shortly.`,
        );
      }
      await track(log, req, res, work!);
    } catch (error) {
      if (!res.headersSent) fail(error);
      else if (error instanceof MultimodalLMError) log.code = error.code;
    } finally {
      await closedResponse;
      finish();
    }
  };

  /** One chat completion or transcription, counted and aborted when its client goes away or the handler closes. */
  const track = async (
    log: RequestLog,
    req: IncomingMessage,
    res: ServerResponse,
    work: (req: IncomingMessage, res: ServerResponse, signal: AbortSignal, log: RequestLog) => Promise<CompletionOutcome>,
  ): Promise<void> => {
    const controller = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) {
        log.aborted = true;
        controller.abort(new MultimodalLMError("E_ABORTED", "The client closed the connection."));
      }
    };
    res.once("close", onClose);
    stats.active++;
    let settle!: () => void;
    const entry = { controller, done: new Promise<void>((resolve) => (settle = resolve)) };
    running.add(entry);
    try {
      const outcome = await work(req, res, controller.signal, log);
      log.promptTokens = outcome.promptTokens;
      log.completionTokens = outcome.completionTokens;
      if (outcome.timeToFirstTokenMs !== undefined) log.timeToFirstTokenMs = outcome.timeToFirstTokenMs;
      stats.completed++;
    } catch (error) {
      if (controller.signal.aborted && log.aborted) {
        stats.aborted++;
        log.code = "E_ABORTED";
        return;
      }
      throw error;
    } finally {
      stats.active--;
      running.delete(entry);
      settle();
      res.off("close", onClose);
    }
  };

  const handler = ((req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => {
    handle(req, res, next).catch((error: unknown) => {
      // handle() answers its own errors; this is the last guard so a bug never crashes the process.
      if (!res.headersSent) sendJson(res, 500, toHttpFailure(error).body);
      else res.destroy();
    });
  }) as OpenAIHandler;
  Object.defineProperty(handler, "stats", { get: () => ({ ...stats }) });
  Object.defineProperty(handler, "modelName", { value: modelName });
  Object.defineProperty(handler, "metrics", { value: metrics?.registry });
  handler.close = async () => {
    closed = true;
    for (const entry of running) entry.controller.abort(new MultimodalLMError("E_UNAVAILABLE", "The server is shutting down."));
    await Promise.all([...running].map((entry) => entry.done));
    await access.close();
  };
  return handler;
}
