// Every image input (path, URL, data: URL, encoded bytes, raw pixels) becomes packed 8-bit RGB
// plus a content id. Decoding is sharp's (libvips on the libuv pool), so it never blocks the loop.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";

import sharp, { type Metadata, type Sharp } from "sharp";

import { AbortError, ImageError, MultimodalLMError } from "../errors.js";
import { invalidParameter, is, optionalSignal, rejectUnknownKeys } from "../validate.js";
import { displayUrl, fetchBytes, validateFetchLimits, type FetchLimits } from "./fetch.js";
import { classifySource, withLocalFile, type SourceContext } from "./source.js";

/** Raw pixels, row-major, 8 bits per channel: RGB (channels 3, the default) or RGBA (channels 4). */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels?: 3 | 4;
}

/** A local path, a `file:`/`http(s):`/`data:` URL, the bytes of an encoded file, or raw pixels. */
export type ImageInput = string | URL | Buffer | Uint8Array | RawImage;

export interface ImageOptions {
  /** Largest width × height accepted, checked from the header before decoding; `false` disables it. Default 100 000 000. */
  limitInputPixels?: number | false;
  /** Upscale (keeping aspect ratio) images with fewer pixels than this. Default: no lower bound. */
  minPixels?: number;
  /** Downscale (keeping aspect ratio) images with more pixels than this. Default: no upper bound. */
  maxPixels?: number;
  /** Limits for http(s) inputs. */
  fetch?: FetchLimits;
  /** Aborting it rejects with `AbortError` (code E_ABORTED); a decode already inside sharp finishes first and is dropped. */
  signal?: AbortSignal;
}

/** `ImageOptions` after validation, with the defaults filled in. */
export interface ResolvedImageOptions extends ImageOptions {
  limitInputPixels: number | false;
  fetch: Required<FetchLimits>;
}

export interface DecodedImage {
  /** Packed 8-bit RGB, `width * height * 3` bytes. */
  data: Uint8Array;
  width: number;
  height: number;
  /** Hex SHA-256 of the size and the RGB bytes: the same picture gets the same id whatever its source. */
  id: string;
}

export const DEFAULT_LIMIT_INPUT_PIXELS = 100_000_000;

const OPTION_KEYS = ["limitInputPixels", "minPixels", "maxPixels", "fetch", "signal"] as const;
// sharp's format names (metadata().format); "heif" is accepted for AVIF only, see checkFormat.
const SUPPORTED_FORMATS = new Set(["jpeg", "png", "webp", "gif", "heif", "tiff"]);
const SUPPORTED_LIST = "JPEG, PNG, WebP, GIF, AVIF and TIFF";
// sharp's default and its advice for untrusted input: "error" lets a JPEG with a bad Huffman
// code decode to garbage, "warning" rejects it (truncation is rejected by both).
const FAIL_ON = "warning";
const WHITE = { r: 255, g: 255, b: 255 };
const INPUT_EXPECTED = "a path, a file:/http(s):/data: URL, a Buffer, a Uint8Array or a RawImage {data, width, height}";

/** Checks image options (sharp-style messages, code E_INVALID_ARGUMENT) and fills in the defaults. */
export function validateImageOptions(options: unknown, name = "options"): ResolvedImageOptions {
  if (options === undefined) options = {};
  if (!is.object(options)) throw invalidParameter(name, "an object", options);
  rejectUnknownKeys(name, options, OPTION_KEYS);

  let limitInputPixels: number | false = DEFAULT_LIMIT_INPUT_PIXELS;
  if (options.limitInputPixels !== undefined) {
    if (options.limitInputPixels !== false && !isPositiveInteger(options.limitInputPixels)) {
      throw invalidParameter(`${name}.limitInputPixels`, "positive integer or false", options.limitInputPixels);
    }
    limitInputPixels = options.limitInputPixels;
  }
  const minPixels = optionalPositiveInteger(`${name}.minPixels`, options.minPixels);
  const maxPixels = optionalPositiveInteger(`${name}.maxPixels`, options.maxPixels);
  if (minPixels !== undefined && maxPixels !== undefined && minPixels > maxPixels) {
    throw invalidParameter(`${name}.minPixels`, `positive integer no greater than ${name}.maxPixels (${maxPixels})`, minPixels);
  }
  return {
    limitInputPixels,
    minPixels,
    maxPixels,
    fetch: validateFetchLimits(options.fetch, `${name}.fetch`),
    signal: optionalSignal(`${name}.signal`, options.signal),
  };
}

function isPositiveInteger(value: unknown): value is number {
  return is.integer(value) && value >= 1 && value <= Number.MAX_SAFE_INTEGER;
}

function optionalPositiveInteger(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (!isPositiveInteger(value)) throw invalidParameter(name, "positive integer", value);
  return value;
}

/**
 * The size an image of `width × height` is resized to so that its pixel count lies within
 * [minPixels, maxPixels], keeping the aspect ratio; unchanged when it already does.
 */
export function fitPixelBudget(width: number, height: number, minPixels?: number, maxPixels?: number): { width: number; height: number } {
  const pixels = width * height;
  const shrink = maxPixels !== undefined && pixels > maxPixels;
  const grow = !shrink && minPixels !== undefined && pixels < minPixels;
  if (!shrink && !grow) return { width, height };
  const limit = (shrink ? maxPixels : minPixels) as number;
  // Each side is scaled by s = sqrt(limit / pixels) and rounded to the nearest integer; if that
  // lands outside the budget (both sides rounded the wrong way) they are rounded toward it
  // instead: down when shrinking, up when growing. Sides stay >= 1, so an extreme aspect ratio
  // (10000×1 with maxPixels 100) can still end above maxPixels, and growing to a minPixels
  // within a rounding step of maxPixels can pass maxPixels.
  const s = Math.sqrt(limit / pixels);
  const side = (x: number, round: (x: number) => number) => Math.max(1, round(x * s));
  let w = side(width, Math.round);
  let h = side(height, Math.round);
  if (shrink ? w * h > limit : w * h < limit) {
    const toward = shrink ? Math.floor : Math.ceil;
    [w, h] = [side(width, toward), side(height, toward)];
  }
  return { width: w, height: h };
}

/** Decodes any `ImageInput` to packed 8-bit RGB: EXIF orientation applied, alpha flattened on white, pixel budget applied. */
export async function loadImage(input: ImageInput, options?: ImageOptions): Promise<DecodedImage> {
  const opts = validateImageOptions(options);
  const source = await readSource(input, opts);
  throwIfAborted(opts.signal);
  const { data, width, height } = source.kind === "raw" ? await decodeRaw(source.raw, opts) : await decodeEncoded(source, opts);
  throwIfAborted(opts.signal);
  return { data, width, height, id: contentId(data, width, height) };
}

/**
 * The size `loadImage` would return (after orientation and pixel budget), read from the header
 * without decoding the pixels. A header can be intact while the pixel data is not, so a
 * successful `imageSize` does not promise a successful `loadImage`.
 */
export async function imageSize(input: ImageInput, options?: ImageOptions): Promise<{ width: number; height: number }> {
  const opts = validateImageOptions(options);
  const source = await readSource(input, opts);
  throwIfAborted(opts.signal);
  if (source.kind === "raw") {
    checkPixelLimit(source.raw.width, source.raw.height, opts.limitInputPixels, "input.data");
    return fitPixelBudget(source.raw.width, source.raw.height, opts.minPixels, opts.maxPixels);
  }
  const oriented = await readHeader(source, opts);
  return fitPixelBudget(oriented.width, oriented.height, opts.minPixels, opts.maxPixels);
}

/** sha256 over an 8-byte header (width, height as little-endian u32) and the packed RGB bytes. */
export function contentId(rgb: Uint8Array, width: number, height: number): string {
  const header = Buffer.alloc(8);
  header.writeUInt32LE(width, 0);
  header.writeUInt32LE(height, 4);
  return createHash("sha256").update(header).update(rgb).digest("hex");
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError("Loading the image was aborted.", { cause: signal.reason });
}

// ---- sources ---------------------------------------------------------------------------------

interface EncodedSource {
  kind: "encoded";
  bytes: Buffer;
  /** Where the bytes came from, for messages: "file /x.png", "https://… (content-type text/html)". */
  label: string;
}
type Source = EncodedSource | { kind: "raw"; raw: Required<RawImage> };

const SOURCE: SourceContext = { kind: "image", param: "input", expected: INPUT_EXPECTED };

async function readSource(input: ImageInput, opts: ResolvedImageOptions): Promise<Source> {
  throwIfAborted(opts.signal);
  const source = classifySource(input, SOURCE);
  switch (source?.type) {
    case "path":
      return readLocalFile(source.path);
    case "url": {
      const { bytes, contentType, finalUrl } = await fetchBytes(source.url, { ...opts.fetch, signal: opts.signal });
      const label = `${displayUrl(finalUrl)}${contentType ? ` (content-type ${contentType})` : ""}`;
      return { kind: "encoded", bytes, label };
    }
    case "data":
      return { kind: "encoded", bytes: source.bytes, label: `data: URL${source.mediaType ? ` (${source.mediaType})` : ""}` };
    case "bytes":
      return { kind: "encoded", bytes: source.bytes, label: `buffer of ${source.bytes.length} bytes` };
  }
  if (is.object(input) && "data" in input) return { kind: "raw", raw: validateRawImage(input) };
  throw invalidParameter("input", INPUT_EXPECTED, input);
}

function readLocalFile(path: string): Promise<EncodedSource> {
  return withLocalFile(path, "image", async () => ({ kind: "encoded", bytes: await readFile(path), label: `file ${path}` }));
}

function validateRawImage(raw: Record<string, unknown>): Required<RawImage> {
  const { data, width, height } = raw;
  const channels = raw.channels ?? 3;
  if (!(data instanceof Uint8Array)) throw invalidParameter("input.data", "a Uint8Array of raw RGB or RGBA pixels", data);
  if (!isPositiveInteger(width)) throw invalidParameter("input.width", "positive integer", width);
  if (!isPositiveInteger(height)) throw invalidParameter("input.height", "positive integer", height);
  if (channels !== 3 && channels !== 4) throw invalidParameter("input.channels", "3 (RGB) or 4 (RGBA)", channels);
  const expected = width * height * channels;
  if (data.length !== expected) {
    throw new MultimodalLMError(
      "E_INVALID_ARGUMENT",
      `Expected ${expected} bytes (width ${width} × height ${height} × channels ${channels}) for input.data but received ${data.length} bytes`,
    );
  }
  return { data, width, height, channels };
}

// ---- decoding --------------------------------------------------------------------------------

interface Pixels {
  data: Uint8Array;
  width: number;
  height: number;
}

async function decodeRaw(raw: Required<RawImage>, opts: ResolvedImageOptions): Promise<Pixels> {
  const { width, height, channels } = raw;
  checkPixelLimit(width, height, opts.limitInputPixels, "input.data");
  const target = fitPixelBudget(width, height, opts.minPixels, opts.maxPixels);
  const resize = target.width !== width || target.height !== height;
  // Copied, not shared: the id must keep describing the data even if the caller reuses its buffer.
  if (channels === 3 && !resize) return { data: Uint8Array.from(raw.data), width, height };
  try {
    let image = sharp(raw.data, { raw: { width, height, channels } }).flatten({ background: WHITE });
    if (resize) image = image.resize(target.width, target.height, { fit: "fill" });
    return await toRgb(image);
  } catch (error) {
    throw new ImageError("E_IMAGE_DECODE", `Could not convert the raw image: ${(error as Error).message}`, { cause: error });
  }
}

async function decodeEncoded(source: EncodedSource, opts: ResolvedImageOptions): Promise<Pixels> {
  const oriented = await readHeader(source, opts);
  const target = fitPixelBudget(oriented.width, oriented.height, opts.minPixels, opts.maxPixels);
  try {
    // limitInputPixels again in sharp itself, in case a decoder sees a larger size than metadata().
    let image = sharp(source.bytes, { failOn: FAIL_ON, limitInputPixels: opts.limitInputPixels, autoOrient: true })
      .flatten({ background: WHITE })
      .toColourspace("srgb");
    if (target.width !== oriented.width || target.height !== oriented.height) {
      image = image.resize(target.width, target.height, { fit: "fill" });
    }
    return await toRgb(image);
  } catch (error) {
    throw decodeError(error, source, opts.limitInputPixels);
  }
}

async function toRgb(image: Sharp): Promise<Pixels> {
  const { data, info } = await image.removeAlpha().raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
    throw new Error(`sharp returned ${info.channels} channels and ${data.length} bytes for ${info.width}x${info.height}, expected 3 channels of 8 bits`);
  }
  return { data, width: info.width, height: info.height };
}

/** Header-only read: checks the format and the pixel limit, returns the size after EXIF orientation. */
async function readHeader(source: EncodedSource, opts: ResolvedImageOptions): Promise<{ width: number; height: number }> {
  let meta: Metadata;
  try {
    // No limit here so the size can go into the E_IMAGE_TOO_LARGE message; the header is all that is read.
    meta = await sharp(source.bytes, { failOn: FAIL_ON, limitInputPixels: false }).metadata();
  } catch (error) {
    throw decodeError(error, source, opts.limitInputPixels);
  }
  checkFormat(meta, source);
  checkPixelLimit(meta.width, meta.height, opts.limitInputPixels, source.label);
  return meta.autoOrient ?? { width: meta.width, height: meta.height };
}

function checkFormat(meta: Metadata, source: EncodedSource): void {
  // SVG, PDF and friends are renderings, not pictures: refuse what the docs do not promise.
  const heifNotAvif = meta.format === "heif" && meta.compression !== "av1";
  if (!SUPPORTED_FORMATS.has(meta.format) || heifNotAvif) {
    const name = meta.format === "heif" ? `HEIF (${meta.compression ?? "unknown compression"})` : meta.format;
    throw new ImageError("E_IMAGE_DECODE", `Unsupported image format ${name} in ${source.label}. Supported formats: ${SUPPORTED_LIST}.`);
  }
}

function checkPixelLimit(width: number, height: number, limit: number | false, label: string): void {
  if (limit !== false && width * height > limit) {
    throw new ImageError(
      "E_IMAGE_TOO_LARGE",
      `The image in ${label} is ${width}×${height} = ${width * height} pixels, over the limitInputPixels limit of ${limit}. ` +
        "Pass a larger limitInputPixels (or false to turn the check off) if you trust the source.",
    );
  }
}

function decodeError(error: unknown, source: EncodedSource, limit: number | false): ImageError {
  if (error instanceof ImageError) return error;
  // libvips messages can end in a newline or a full stop; the sentence below adds its own.
  const message = (error instanceof Error ? error.message : String(error)).trim().replace(/\.$/, "");
  if (/exceeds pixel limit/i.test(message)) {
    return new ImageError(
      "E_IMAGE_TOO_LARGE",
      `The image in ${source.label} is over the limitInputPixels limit of ${String(limit)}. Pass a larger limitInputPixels if you trust the source.`,
      { cause: error },
    );
  }
  return new ImageError(
    "E_IMAGE_DECODE",
    `Could not decode the image in ${source.label}: ${message}. Supported formats: ${SUPPORTED_LIST}; check that the data is a complete, uncorrupted image.`,
    { cause: error },
  );
}
