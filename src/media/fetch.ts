// Bounded http(s) download: one time limit for the whole transfer, a byte cap
// enforced while streaming, and redirects followed by hand so every hop is checked.
import type { Dispatcher } from "undici";

import { AbortError, FetchError, MultimodalLMError } from "../errors.js";
import { invalidParameter, is, optionalInteger, optionalSignal, rejectUnknownKeys } from "../validate.js";

export interface FetchLimits {
  /** Time limit for the whole download (connect, redirects and body), in ms. Default 30 000. */
  timeoutMs?: number;
  /** Largest body accepted, in bytes. Default 64 MiB. */
  maxBytes?: number;
  /** Redirects followed before giving up. Default 5; 0 refuses any redirect. */
  maxRedirects?: number;
}

export interface FetchOptions extends FetchLimits {
  /** Aborting it rejects with `AbortError` (code E_ABORTED) whose `cause` is the signal's reason. */
  signal?: AbortSignal;
  /** Extra request headers. Authorization and Cookie are dropped when a redirect leaves the origin. */
  headers?: Record<string, string>;
  /**
   * undici dispatcher (e.g. an `Agent` whose `connect.lookup` vets addresses) the requests go through.
   * When given, undici's own fetch is used. Default: the global fetch and its default dispatcher.
   */
  dispatcher?: Dispatcher;
  /**
   * Called with the first URL and with every redirect target before it is requested; throw to refuse it.
   * A `MultimodalLMError` thrown here (or by the dispatcher's lookup) is rethrown as is, not wrapped in `FetchError`.
   */
  checkUrl?: (url: URL) => void;
  /**
   * How the caller's users raise each limit, for the hints in error messages.
   * Default: the library's option names, `fetch.timeoutMs`, `fetch.maxBytes`, `fetch.maxRedirects`.
   */
  limitNames?: { timeoutMs?: string; maxBytes?: string; maxRedirects?: string };
}

export interface FetchResult {
  bytes: Buffer;
  contentType: string | undefined;
  /** The URL the body came from, after redirects. */
  finalUrl: string;
}

export const DEFAULT_FETCH_TIMEOUT_MS = 30_000;
export const DEFAULT_FETCH_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_FETCH_MAX_REDIRECTS = 5;

// setTimeout (behind AbortSignal.timeout) fires at once for delays above 2^31-1 ms.
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const MAX_REDIRECTS = 20;
const LIMIT_KEYS = ["timeoutMs", "maxBytes", "maxRedirects"] as const;
const OPTION_KEYS = [...LIMIT_KEYS, "signal", "headers", "dispatcher", "checkUrl", "limitNames"] as const;
const DEFAULT_LIMIT_NAMES = { timeoutMs: "fetch.timeoutMs", maxBytes: "fetch.maxBytes", maxRedirects: "fetch.maxRedirects" };
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
// What the fetch standard strips on a cross-origin redirect; we follow redirects by hand, so we must too.
const ORIGIN_BOUND_HEADERS = ["authorization", "cookie", "proxy-authorization"];

/** Checks `FetchLimits` and fills in the defaults. */
export function validateFetchLimits(limits: unknown, name = "fetch"): Required<FetchLimits> {
  if (limits === undefined) limits = {};
  if (!is.object(limits)) throw invalidParameter(name, "an object", limits);
  rejectUnknownKeys(name, limits, LIMIT_KEYS);
  return readLimits(limits, name);
}

function readLimits(limits: Record<string, unknown>, name: string): Required<FetchLimits> {
  return {
    timeoutMs: optionalInteger(`${name}.timeoutMs`, limits.timeoutMs, 1, MAX_TIMEOUT_MS, DEFAULT_FETCH_TIMEOUT_MS),
    maxBytes: optionalInteger(`${name}.maxBytes`, limits.maxBytes, 1, Number.MAX_SAFE_INTEGER, DEFAULT_FETCH_MAX_BYTES),
    maxRedirects: optionalInteger(`${name}.maxRedirects`, limits.maxRedirects, 0, MAX_REDIRECTS, DEFAULT_FETCH_MAX_REDIRECTS),
  };
}

type ValidatedOptions = Required<FetchLimits> &
  Pick<FetchOptions, "signal" | "headers" | "dispatcher" | "checkUrl"> & { limitNames: typeof DEFAULT_LIMIT_NAMES };

function validateOptions(options: unknown): ValidatedOptions {
  if (options === undefined) options = {};
  if (!is.object(options)) throw invalidParameter("options", "an object", options);
  rejectUnknownKeys("fetchBytes", options, OPTION_KEYS);
  const signal = optionalSignal("options.signal", options.signal);
  const headers = options.headers;
  if (headers !== undefined) {
    if (!is.object(headers)) throw invalidParameter("options.headers", "an object of strings", headers);
    for (const [key, value] of Object.entries(headers)) {
      if (!is.string(value)) throw invalidParameter(`options.headers.${key}`, "a string", value);
    }
  }
  const { dispatcher, checkUrl } = options;
  if (dispatcher !== undefined && !(is.object(dispatcher) && is.fn(dispatcher.dispatch))) {
    throw invalidParameter("options.dispatcher", "an undici Dispatcher (such as an Agent)", dispatcher);
  }
  if (checkUrl !== undefined && !is.fn(checkUrl)) throw invalidParameter("options.checkUrl", "a function", checkUrl);
  const names = options.limitNames ?? {};
  if (!is.object(names) || Object.values(names).some((name) => !is.string(name))) {
    throw invalidParameter("options.limitNames", "an object of strings", options.limitNames);
  }
  return {
    limitNames: { ...DEFAULT_LIMIT_NAMES, ...(names as Record<string, string>) },
    ...readLimits(options, "options"),
    signal,
    headers: headers as Record<string, string> | undefined,
    dispatcher: dispatcher as Dispatcher | undefined,
    checkUrl: checkUrl as FetchOptions["checkUrl"],
  };
}

/** The part of a fetch Response we read; both the global and undici's Response have it. */
interface FetchedResponse {
  readonly status: number;
  readonly statusText: string;
  readonly headers: { get(name: string): string | null };
  readonly body: ReadableStream<Uint8Array> | null;
}

type Requester = (url: URL, init: { signal: AbortSignal; headers: Headers }) => Promise<FetchedResponse>;

async function requester(dispatcher: Dispatcher | undefined): Promise<Requester> {
  if (!dispatcher) return (url, init) => fetch(url, { ...init, redirect: "manual" });
  // Node 20's global fetch bundles its own undici and need not accept an Agent from undici@7, so use
  // that package's fetch; loaded lazily so plain downloads do not pay for it.
  const { fetch: undiciFetch } = await import("undici");
  return (url, init) => undiciFetch(url, { ...init, headers: [...init.headers], redirect: "manual", dispatcher });
}

/** The first `MultimodalLMError` in an error's `cause` chain: a policy refusal from `checkUrl` or the lookup. */
function ownError(error: unknown): MultimodalLMError | undefined {
  const seen = new Set<unknown>();
  for (let e: unknown = error; e instanceof Error && !seen.has(e); e = e.cause) {
    if (e instanceof MultimodalLMError) return e;
    seen.add(e);
  }
  return undefined;
}

function parseHttpUrl(url: unknown): URL {
  let parsed: URL;
  if (url instanceof URL) parsed = new URL(url.href);
  else if (is.string(url) && URL.canParse(url)) parsed = new URL(url);
  else throw invalidParameter("url", "an http(s) URL", url);
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw invalidParameter("url", "an http(s) URL", url instanceof URL ? url.href : url);
  return parsed;
}

/** The URL for messages, without credentials. */
export function displayUrl(url: URL | string): string {
  const parsed = typeof url === "string" ? (URL.canParse(url) ? new URL(url) : undefined) : new URL(url.href);
  if (!parsed) return url as string;
  if (parsed.username || parsed.password) {
    parsed.username = "***";
    parsed.password = "";
  }
  return parsed.href;
}

/**
 * Downloads an http(s) URL into memory. Redirects are followed by hand (up to `maxRedirects`),
 * each one re-checked to be http(s); the body is counted as it streams and the transfer is
 * cancelled as soon as it passes `maxBytes`.
 */
export async function fetchBytes(url: string | URL, options?: FetchOptions): Promise<FetchResult> {
  const { timeoutMs, maxBytes, maxRedirects, signal, headers: given, dispatcher, checkUrl, limitNames } = validateOptions(options);
  let headers: Headers;
  try {
    headers = new Headers(given);
  } catch {
    throw invalidParameter("options.headers", "valid HTTP header names and values", given);
  }
  const first = parseHttpUrl(url);
  let current = moveCredentials(first, headers);
  if (signal?.aborted) throw new AbortError("The download was aborted before it started.", { cause: signal.reason });
  checkUrl?.(first);
  const request = await requester(dispatcher);

  const timeout = AbortSignal.timeout(timeoutMs);
  const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
  // Turns whatever fetch or the body stream threw into our error, giving aborts precedence:
  // undici reports both as a generic AbortError/TimeoutError or "terminated". Our own errors
  // (a refusal from the dispatcher's lookup) arrive inside TypeError("fetch failed") and come out as they are.
  const failure = (error: unknown, during: string): Error => {
    if (signal?.aborted) return new AbortError(`The download of ${displayUrl(current)} was aborted.`, { cause: signal.reason });
    const own = ownError(error);
    if (own) return own;
    if (timeout.aborted) {
      return new FetchError(
        displayUrl(current),
        `Fetching ${displayUrl(current)} timed out after ${timeoutMs} ms (${during}). Raise the limit with ${limitNames.timeoutMs} if the server is slow.`,
        { cause: error },
      );
    }
    return new FetchError(displayUrl(current), `Fetching ${displayUrl(current)} failed (${during}): ${describeNetworkError(error)}`, { cause: error });
  };

  let response: FetchedResponse;
  for (let redirects = 0; ; redirects++) {
    try {
      response = await request(current, { signal: combined, headers });
    } catch (error) {
      throw failure(error, "while connecting");
    }
    const location = response.headers.get("location");
    if (!REDIRECT_STATUSES.has(response.status) || location === null) break;
    await discard(response);
    if (redirects >= maxRedirects) {
      throw new FetchError(
        displayUrl(current),
        `Fetching ${displayUrl(url)} was redirected more than ${maxRedirects} times (last to ${displayUrl(current)}). ` +
          `Raise ${limitNames.maxRedirects} if the chain is expected.`,
        { status: response.status },
      );
    }
    const next = URL.canParse(location, current.href) ? new URL(location, current) : undefined;
    if (!next || (next.protocol !== "http:" && next.protocol !== "https:")) {
      throw new FetchError(displayUrl(current), `${displayUrl(current)} redirected to ${JSON.stringify(location)}, which is not an http(s) URL.`, {
        status: response.status,
      });
    }
    checkUrl?.(next);
    if (next.origin !== current.origin) for (const name of ORIGIN_BOUND_HEADERS) headers.delete(name);
    current = moveCredentials(next, headers);
  }

  if (response.status < 200 || response.status > 299) {
    await discard(response);
    throw new FetchError(displayUrl(current), `Fetching ${displayUrl(current)} failed with HTTP ${response.status} ${response.statusText}`.trimEnd(), {
      status: response.status,
    });
  }
  const tooLarge = (size: string): FetchError =>
    new FetchError(
      displayUrl(current),
      `${displayUrl(current)} is larger than the ${maxBytes}-byte limit (${size}). Raise the limit with ${limitNames.maxBytes} if the file is expected.`,
    );
  const declared = Number(response.headers.get("content-length") ?? Number.NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await discard(response);
    throw tooLarge(`Content-Length: ${declared}`);
  }

  const chunks: Uint8Array[] = [];
  let total = 0;
  if (response.body) {
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > maxBytes) {
          await reader.cancel().catch(() => undefined);
          throw tooLarge(`more than ${maxBytes} bytes received`);
        }
        chunks.push(value);
      }
    } catch (error) {
      throw failure(error, "while reading the body");
    }
  }
  return {
    bytes: Buffer.concat(chunks, total),
    contentType: response.headers.get("content-type") ?? undefined,
    finalUrl: current.href,
  };
}

/**
 * fetch refuses URLs with user:password; send them as Basic auth instead (as curl does),
 * unless the caller set Authorization itself.
 */
function moveCredentials(url: URL, headers: Headers): URL {
  if (!url.username && !url.password) return url;
  if (!headers.has("authorization")) {
    const credentials = `${safeDecode(url.username)}:${safeDecode(url.password)}`;
    headers.set("authorization", `Basic ${Buffer.from(credentials).toString("base64")}`);
  }
  const bare = new URL(url.href);
  bare.username = "";
  bare.password = "";
  return bare;
}

/** decodeURIComponent, leaving a malformed escape sequence as it is. */
export function safeDecode(component: string): string {
  try {
    return decodeURIComponent(component);
  } catch {
    return component;
  }
}

/** Releases the connection of a response whose body is not wanted. */
async function discard(response: FetchedResponse): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
}

// undici throws TypeError("fetch failed") with the useful part (ECONNREFUSED, ENOTFOUND…) in `cause`.
function describeNetworkError(error: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = error; e instanceof Error && parts.length < 4; e = e.cause) parts.push(e.message);
  return parts.length ? parts.join(": ") : String(error);
}
