// Image fixtures, good and bad, generated at test time so no binary file is committed.
// Shared by the media tests and the model-level tests.
import { deflateSync } from "node:zlib";

import sharp from "sharp";

import { encodePng, pngFile, testPattern } from "../../src/test-models/image.js";

/** A deterministic RGB test picture (gradient plus seeded rectangles), `width * height * 3` bytes. */
export function sampleRgb(width: number, height: number): Uint8Array {
  return testPattern(width, height, 1);
}

/** `sampleRgb(width, height)` encoded losslessly as a PNG. */
export function samplePng(width: number, height: number): Buffer {
  return encodePng(width, height, sampleRgb(width, height));
}

/** A real 64×48 JPEG cut in half: the header is intact, the scan data ends early. */
export async function truncatedJpeg(): Promise<Buffer> {
  const jpeg = await sharp(sampleRgb(64, 48), { raw: { width: 64, height: 48, channels: 3 } })
    .jpeg()
    .toBuffer();
  return Buffer.from(jpeg.subarray(0, jpeg.length >> 1));
}

/** Bytes that no image decoder recognises. */
export function nonImageBytes(): Buffer {
  return Buffer.from("This is plain text, not an image.\n".repeat(8));
}

/**
 * A ~430-byte PNG whose IHDR claims 30000×30000 RGB (2.7 GB decoded). Built by hand so that
 * nothing that large is ever allocated; the pixel data is a few rows of zeros.
 */
export function pngBomb(width = 30_000, height = 30_000): Buffer {
  return pngFile(width, height, deflateSync(Buffer.alloc(4 * (width * 3 + 1))));
}

/** A data: URL whose payload has characters outside the base64 alphabets. */
export function malformedBase64DataUrl(): string {
  return "data:image/png;base64,iVBORw0KGgo!!not*base64@@";
}

/** A data: URL with nothing after the comma. */
export function emptyDataUrl(): string {
  return "data:image/png;base64,";
}
