import { writeFile } from "node:fs/promises";
import { crc32, deflateSync } from "node:zlib";
import { MultimodalLMError } from "../errors.js";
import { Rng } from "./random.js";

/** Encode 8-bit RGB pixels (row-major, 3 bytes per pixel) as a PNG. */
export function encodePng(width: number, height: number, rgb: Uint8Array): Buffer {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new MultimodalLMError("E_INVALID_ARGUMENT", `Expected positive integer width and height but received ${width}x${height}`);
  }
  if (rgb.length !== width * height * 3) {
    throw new MultimodalLMError("E_INVALID_ARGUMENT", `Expected ${width * height * 3} RGB bytes for ${width}x${height} but received ${rgb.length}`);
  }
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    // Filter type 0 (none) per row.
    raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (width * 3 + 1) + 1);
  }
  return pngFile(width, height, deflateSync(raw));
}

/**
 * An 8-bit RGB PNG with the given IHDR size and compressed pixel data, as is: a header may
 * claim more pixels than the data holds (decompression-bomb tests).
 */
export function pngFile(width: number, height: number, idat: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: truecolour
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", idat),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "ascii");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(data, crc32(head.subarray(4))) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A deterministic test picture: a colour gradient with a few seeded rectangles, so different
 * seeds give different image embeddings.
 */
export function testPattern(width: number, height: number, seed = 0): Uint8Array {
  const px = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      px[i] = Math.round((255 * x) / Math.max(1, width - 1));
      px[i + 1] = Math.round((255 * y) / Math.max(1, height - 1));
      px[i + 2] = 128;
    }
  }
  const rng = new Rng(seed, "test-pattern");
  for (let n = 0; n < 4; n++) {
    const x0 = rng.nextU32() % width;
    const y0 = rng.nextU32() % height;
    const w = 1 + (rng.nextU32() % Math.max(1, width >> 1));
    const h = 1 + (rng.nextU32() % Math.max(1, height >> 1));
    const colour = [rng.nextU32() & 255, rng.nextU32() & 255, rng.nextU32() & 255];
    for (let y = y0; y < Math.min(height, y0 + h); y++) {
      for (let x = x0; x < Math.min(width, x0 + w); x++) px.set(colour, (y * width + x) * 3);
    }
  }
  return px;
}

/** Write `testPattern(width, height, seed)` as a PNG file. */
export async function writeTestImage(path: string, options: { width?: number; height?: number; seed?: number } = {}): Promise<string> {
  const { width = 64, height = 64, seed = 0 } = options;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new MultimodalLMError("E_INVALID_ARGUMENT", `Expected an integer 0..4294967295 for seed but received ${String(seed)}`);
  }
  await writeFile(path, encodePng(width, height, testPattern(width, height, seed)));
  return path;
}
