// Where an image, video or audio clip comes from: one sorting of string / URL / bytes inputs into
// a local path, an http(s) URL to fetch, a decoded data: URL or bytes, with the messages the kinds
// share, and the private temp files that bytes go through when ffmpeg reads them. What is done
// with each source (reading, fetching, labels) stays with the kind.
import { rmSync, type Stats } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve as resolvePath } from "node:path";
import { fileURLToPath } from "node:url";

import { FileNotFoundError, MultimodalLMError } from "../errors.js";
import { invalidParameter, is } from "../validate.js";
import { decodeDataUrl } from "./data-url.js";
import { displayUrl, fetchBytes, type FetchLimits } from "./fetch.js";

export type MediaKind = "image" | "video" | "audio";

/** An input sorted by where its bytes are. */
export type MediaSource =
  /** A local file: an absolute path (relative ones resolved against the current directory, file: URLs converted). */
  | { type: "path"; path: string }
  /** An http: or https: URL, to be fetched with limits. */
  | { type: "url"; url: URL }
  /** A base64 data: URL, already decoded; `mediaType` is as written (lowercased), possibly "". */
  | { type: "data"; mediaType: string; bytes: Buffer }
  /** A Buffer, or a Uint8Array viewed as one (not copied). */
  | { type: "bytes"; bytes: Buffer };

export interface SourceContext {
  kind: MediaKind;
  /** The argument's name in messages: "input", "video", "audio". */
  param: string;
  /** What the argument may be, for the message on an empty string. */
  expected: string;
}

/** The schemes accepted, for the message on any other. */
export const SUPPORTED_SCHEMES = "a path or a file:, http:, https: or data: URL";

const DATA_URL = /^data:/i;
const FETCHABLE_URL = /^(https?|file):/i;
// Two or more letters before "://" so a Windows drive ("C:\\", "C://") still reads as a path.
const OTHER_URL = /^[a-z][a-z0-9+.-]+:\/\//i;

/**
 * Sorts a string, URL or bytes input; `undefined` for anything else (the caller accepts its own
 * kinds, such as raw pixels, or rejects it). Throws E_INVALID_ARGUMENT for an empty string, a URL
 * that does not parse, a scheme other than file:/http(s):/data: and a file: URL that is not local,
 * and E_INVALID_DATA_URL for a malformed data: URL.
 */
export function classifySource(input: unknown, ctx: SourceContext): MediaSource | undefined {
  if (is.string(input)) return classifyString(input, ctx);
  if (input instanceof URL) return classifyUrl(input, ctx);
  if (input instanceof Uint8Array) {
    return { type: "bytes", bytes: Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength) };
  }
  return undefined;
}

function classifyString(input: string, ctx: SourceContext): MediaSource {
  if (input.length === 0) throw invalidParameter(ctx.param, ctx.expected, input);
  if (DATA_URL.test(input)) return dataSource(input, ctx.kind);
  if (FETCHABLE_URL.test(input)) {
    if (!URL.canParse(input)) throw invalidParameter(ctx.param, "a valid URL", input);
    return classifyUrl(new URL(input), ctx);
  }
  if (OTHER_URL.test(input)) throw invalidParameter(ctx.param, SUPPORTED_SCHEMES, input);
  return { type: "path", path: resolvePath(input) };
}

function classifyUrl(url: URL, ctx: SourceContext): MediaSource {
  switch (url.protocol) {
    case "data:":
      return dataSource(url.href, ctx.kind);
    case "file:": {
      try {
        return { type: "path", path: fileURLToPath(url) };
      } catch (error) {
        throw new MultimodalLMError("E_INVALID_ARGUMENT", `Expected a local file: URL for ${ctx.param} but received ${url.href}: ${(error as Error).message}`);
      }
    }
    case "http:":
    case "https:":
      return { type: "url", url };
    default:
      throw invalidParameter(ctx.param, SUPPORTED_SCHEMES, url.href);
  }
}

function dataSource(url: string, kind: MediaKind): MediaSource {
  const { mediaType, bytes } = decodeDataUrl(url, kind);
  return { type: "data", mediaType, bytes };
}

const NOUNS: Record<MediaKind, { title: string; article: string }> = {
  image: { title: "Image", article: "an" },
  video: { title: "Video", article: "a" },
  audio: { title: "Audio", article: "an" },
};

/**
 * Checks that `path` is a regular file, then runs `use` on its stats. A missing path, a directory,
 * a FIFO or device (which would never end) and any fs error, from `stat` or from `use`, reject with
 * FileNotFoundError ("Image file /x does not exist. ..."); a MultimodalLMError from `use` passes through.
 */
export async function withLocalFile<T>(path: string, kind: MediaKind, use: (info: Stats) => Promise<T> | T): Promise<T> {
  const { title, article } = NOUNS[kind];
  const missing = (why: string, cause?: unknown) => new FileNotFoundError(path, `${title} file ${path} ${why}`, { cause });
  try {
    const info = await stat(path);
    if (info.isDirectory()) throw missing(`is a directory, not ${article} ${kind} file. Pass the path of the ${kind} itself.`);
    if (!info.isFile()) throw missing("is not a regular file.");
    return await use(info);
  } catch (error) {
    if (error instanceof MultimodalLMError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw missing("does not exist. Check the path (relative paths resolve against the current directory).", error);
    throw missing(`could not be read: ${(error as Error).message}`, error);
  }
}

// ---- temp files --------------------------------------------------------------------------------

/** A private copy of some bytes on disk, for a tool (ffmpeg) that reads files. */
export interface TempFile {
  file: string;
  /** Removes the copy and its directory. */
  cleanup: () => Promise<void>;
}

// Temp dirs not yet removed; removed at exit too, so an abort at any point leaves nothing.
const tempDirs = new Set<string>();
let tempExitHook = false;

/**
 * Writes `bytes` to a file only this user can read, in a fresh directory named after `kind`
 * (multimodal-lm-video-XXXXXX). The caller must call `cleanup` when done (in a `finally`).
 */
export async function toTempFile(bytes: Uint8Array, kind: MediaKind): Promise<TempFile> {
  if (!tempExitHook) {
    tempExitHook = true;
    process.once("exit", () => {
      for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
    });
  }
  const dir = await mkdtemp(join(tmpdir(), `multimodal-lm-${kind}-`));
  tempDirs.add(dir);
  const cleanup = async () => {
    await rm(dir, { recursive: true, force: true });
    tempDirs.delete(dir);
  };
  try {
    const file = join(dir, "input");
    await writeFile(file, bytes, { mode: 0o600 });
    return { file, cleanup };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/** Temp directories created for media bytes (any kind) and not yet removed (for tests). */
export function liveTempDirs(): number {
  return tempDirs.size;
}

/** A file ffmpeg reads: a local path, or a private temp copy of bytes given or downloaded. */
export interface FileSource {
  file: string;
  /** Names the input in messages ("Audio file x.wav", "The video at https://..."). */
  label: string;
  /** Removes the temp copy, if one was made. */
  cleanup: () => Promise<void>;
}

/**
 * Where ffmpeg reads a video or an audio clip from. A URL is downloaded here, with `fetch`'s
 * limits: ffmpeg never sees one. `empty` is the error for an input of 0 bytes, given its label.
 */
export async function ffmpegSource(
  input: unknown,
  kind: "video" | "audio",
  fetch: Required<FetchLimits> & { signal?: AbortSignal | undefined },
  empty: (label: string) => MultimodalLMError,
): Promise<FileSource> {
  const expected = `a path, a file:/http(s):/data:${kind} URL, a Buffer or a Uint8Array`;
  const bytesSource = async (bytes: Uint8Array, label: string): Promise<FileSource> => {
    if (bytes.length === 0) throw empty(label);
    return { ...(await toTempFile(bytes, kind)), label };
  };
  const source = classifySource(input, { kind, param: kind, expected });
  switch (source?.type) {
    case "path": {
      const label = `${kind === "video" ? "Video" : "Audio"} file ${source.path}`;
      return withLocalFile(source.path, kind, (info) => {
        if (info.size === 0) throw empty(label);
        return { file: source.path, label, cleanup: async () => {} };
      });
    }
    case "url": {
      const { bytes, finalUrl } = await fetchBytes(source.url, fetch);
      return bytesSource(bytes, `The ${kind} at ${displayUrl(finalUrl)}`);
    }
    case "data":
      return bytesSource(source.bytes, `The data: URL ${kind}${source.mediaType ? ` (${source.mediaType})` : ""}`);
    case "bytes":
      return bytesSource(source.bytes, `The ${kind} buffer (${source.bytes.length} bytes)`);
  }
  throw invalidParameter(kind, expected, input);
}
