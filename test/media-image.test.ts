import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { AbortError, FetchError, FileNotFoundError, ImageError } from "../src/errors.js";
import { fetchBytes } from "../src/media/fetch.js";
import { decodeDataUrl } from "../src/media/data-url.js";
import { fitPixelBudget, imageSize, loadImage, validateImageOptions, type ImageInput } from "../src/media/image.js";
import { emptyDataUrl, malformedBase64DataUrl, nonImageBytes, pngBomb, samplePng, sampleRgb, truncatedJpeg } from "./helpers/bad-images.js";
import { rejection as caught } from "./helpers/rejection.js";

const W = 48;
const H = 32;
const rgb = sampleRgb(W, H);
const png = samplePng(W, H);

let tmp: string;
let pngPath: string;
let server: http.Server;
let otherServer: http.Server;
let base: string;
/** Same routes on another port: a different origin. */
let otherBase: string;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-media-"));
  pngPath = path.join(tmp, "sample.png");
  fs.writeFileSync(pngPath, png);
  [server, base] = await listen();
  [otherServer, otherBase] = await listen();
});

afterAll(async () => {
  for (const s of [server, otherServer]) {
    s.closeAllConnections();
    await new Promise((resolve) => s.close(resolve));
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function listen(): Promise<[http.Server, string]> {
  const s = http.createServer(route);
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  return [s, `http://127.0.0.1:${(s.address() as AddressInfo).port}`];
}

function route(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://localhost");
  const hops = /^\/r\/(\d+)$/.exec(url.pathname);
  if (hops) {
    const n = Number(hops[1]);
    // Relative Location headers, so the client has to resolve them.
    res.writeHead(302, { location: n > 0 ? `/r/${n - 1}` : "../img.png" }).end();
  } else if (url.pathname === "/img.png") {
    res.writeHead(200, { "content-type": "image/png", "content-length": png.length }).end(png);
  } else if (url.pathname === "/page.html") {
    res.writeHead(200, { "content-type": "text/html" }).end("<html>not an image</html>");
  } else if (url.pathname === "/whoami") {
    res.writeHead(200).end(req.headers.authorization ?? "");
  } else if (url.pathname === "/headers") {
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(req.headers));
  } else if (url.pathname === "/redirect-to") {
    res.writeHead(307, { location: url.searchParams.get("to") ?? "/" }).end();
  } else if (url.pathname === "/to-ftp") {
    res.writeHead(301, { location: "ftp://127.0.0.1/img.png" }).end();
  } else if (url.pathname === "/endless") {
    // Chunked, no Content-Length, never ends: only a client that cancels gets past it.
    res.writeHead(200, { "content-type": "application/octet-stream" });
    const timer = setInterval(() => res.write(Buffer.alloc(16 * 1024, 1)), 2);
    res.on("close", () => clearInterval(timer));
  } else if (url.pathname === "/declared-big") {
    res.writeHead(200, { "content-length": 1_000_000 });
    res.write(Buffer.alloc(10));
  } else if (url.pathname === "/hang") {
    // Never answers; closeAllConnections in afterAll ends it.
  } else {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
  }
}

/** A plain Uint8Array (not a Buffer) holding `bytes` at a non-zero byteOffset of its ArrayBuffer. */
function withOffset(bytes: Uint8Array, offset: number): Uint8Array {
  const backing = new Uint8Array(offset + bytes.length);
  backing.set(bytes, offset);
  return backing.subarray(offset);
}

function rgba(data: Uint8Array, alpha: (i: number) => number): Uint8Array {
  const out = new Uint8Array((data.length / 3) * 4);
  for (let i = 0; i < data.length / 3; i++) {
    out.set(data.subarray(i * 3, i * 3 + 3), i * 4);
    out[i * 4 + 3] = alpha(i);
  }
  return out;
}

describe("image sources", () => {
  const sources: [string, () => ImageInput][] = [
    ["absolute path", () => pngPath],
    ["relative path", () => path.relative(process.cwd(), pngPath)],
    ["file:// string", () => pathToFileURL(pngPath).href],
    ["file: URL object", () => pathToFileURL(pngPath)],
    ["data: URL (standard base64)", () => `data:image/png;base64,${png.toString("base64")}`],
    ["data: URL (url-safe, unpadded)", () => `data:image/png;base64,${png.toString("base64url")}`],
    ["data: URL object", () => new URL(`data:image/png;base64,${png.toString("base64")}`)],
    ["Buffer", () => png],
    ["Uint8Array view at an offset", () => withOffset(png, 4)],
    ["raw RGB", () => ({ data: rgb, width: W, height: H })],
    ["raw RGBA, opaque", () => ({ data: rgba(rgb, () => 255), width: W, height: H, channels: 4 as const })],
    ["http URL string", () => `${base}/img.png`],
    ["http URL object", () => new URL(`${base}/img.png`)],
  ];
  let reference: string;

  beforeAll(async () => {
    reference = (await loadImage(png)).id;
  });

  it.each(sources)("%s decodes to the same RGB and id", async (_name, input) => {
    const image = await loadImage(input());
    expect(image.width).toBe(W);
    expect(image.height).toBe(H);
    expect(Buffer.from(image.data).equals(Buffer.from(rgb))).toBe(true);
    expect(image.id).toBe(reference);
    expect(image.id).toMatch(/^[0-9a-f]{64}$/);
    expect(await imageSize(input())).toEqual({ width: W, height: H });
  });

  it("passes raw RGB through byte-identical, as a copy", async () => {
    const data = new Uint8Array(rgb);
    const image = await loadImage({ data, width: W, height: H });
    expect(image.data).toEqual(data);
    expect(image.data).not.toBe(data);
    data[0] = (data[0]! + 1) & 255;
    expect(image.data[0]).toBe(rgb[0]);
  });

  it("gives different ids to different pictures and to the same bytes at another size", async () => {
    const a = await loadImage({ data: rgb, width: W, height: H });
    const b = await loadImage({ data: rgb, width: H, height: W });
    const c = await loadImage({ data: sampleRgb(H, W), width: H, height: W });
    expect(new Set([a.id, b.id, c.id]).size).toBe(3);
  });
});

describe("image formats", () => {
  const raw = { raw: { width: W, height: H, channels: 3 as const } };
  const formats: [string, () => Promise<Buffer>][] = [
    ["JPEG", () => sharp(rgb, raw).jpeg().toBuffer()],
    ["WebP", () => sharp(rgb, raw).webp().toBuffer()],
    ["GIF", () => sharp(rgb, raw).gif().toBuffer()],
    ["AVIF", () => sharp(rgb, raw).avif().toBuffer()],
    ["TIFF", () => sharp(rgb, raw).tiff().toBuffer()],
    ["16-bit PNG", () => sharp(rgb, raw).toColourspace("rgb16").png().toBuffer()],
    ["greyscale PNG", () => sharp(rgb, raw).toColourspace("b-w").png().toBuffer()],
  ];

  it.each(formats)("%s decodes to packed RGB at its size", async (_name, make) => {
    const bytes = await make();
    const image = await loadImage(bytes);
    expect([image.width, image.height, image.data.length]).toEqual([W, H, W * H * 3]);
    expect(await imageSize(bytes)).toEqual({ width: W, height: H });
  });

  // sharp's TIFF default is JPEG compression, hence LZW here.
  it("keeps lossless WebP and TIFF exact", async () => {
    for (const bytes of [await sharp(rgb, raw).webp({ lossless: true }).toBuffer(), await sharp(rgb, raw).tiff({ compression: "lzw" }).toBuffer()]) {
      expect(Buffer.from((await loadImage(bytes)).data).equals(Buffer.from(rgb))).toBe(true);
    }
  });

  it("takes the first frame of an animated GIF", async () => {
    const frame = (colour: string) => sharp({ create: { width: W, height: H, channels: 3, background: colour } }).png().toBuffer();
    const gif = await sharp([await frame("#ff0000"), await frame("#0000ff")], { join: { animated: true } })
      .gif()
      .toBuffer();
    expect((await sharp(gif).metadata()).pages).toBe(2);
    const image = await loadImage(gif);
    expect([image.width, image.height]).toEqual([W, H]);
    expect([...image.data.subarray(0, 3)]).toEqual([255, 0, 0]);
  });

  it("applies EXIF orientation", async () => {
    const jpeg = await sharp(rgb, raw).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    expect((await sharp(jpeg).metadata()).orientation).toBe(6);
    const image = await loadImage(jpeg);
    expect([image.width, image.height]).toEqual([H, W]);
    expect(await imageSize(jpeg)).toEqual({ width: H, height: W });
    // With a budget the target size is taken after rotation.
    const budget = { maxPixels: (W * H) / 4 };
    const small = await loadImage(jpeg, budget);
    expect([small.width, small.height]).toEqual([H / 2, W / 2]);
    expect(await imageSize(jpeg, budget)).toEqual({ width: H / 2, height: W / 2 });
  });

  it("flattens alpha on white, the same for PNG and raw RGBA", async () => {
    const alphas = [0, 64, 128, 255];
    const data = rgba(new Uint8Array([200, 100, 0, 200, 100, 0, 200, 100, 0, 200, 100, 0]), (i) => alphas[i]!);
    const fromRaw = await loadImage({ data, width: 4, height: 1, channels: 4 });
    const fromPng = await loadImage(await sharp(data, { raw: { width: 4, height: 1, channels: 4 } }).png().toBuffer());
    expect([...fromRaw.data.subarray(0, 3)]).toEqual([255, 255, 255]);
    expect([...fromRaw.data.subarray(9, 12)]).toEqual([200, 100, 0]);
    // Half-transparent orange over white lies between the two.
    expect(fromRaw.data[7]).toBeGreaterThan(100);
    expect(fromRaw.data[7]).toBeLessThan(255);
    expect(fromPng.data).toEqual(fromRaw.data);
    expect(fromPng.id).toBe(fromRaw.id);
  });
});

describe("pixel budget", () => {
  it("shrinks to maxPixels and grows to minPixels keeping the aspect ratio", async () => {
    const big = samplePng(200, 100);
    const shrunk = await loadImage(big, { maxPixels: 5000 });
    expect([shrunk.width, shrunk.height, shrunk.data.length]).toEqual([100, 50, 100 * 50 * 3]);
    expect(await imageSize(big, { maxPixels: 5000 })).toEqual({ width: 100, height: 50 });

    const small = samplePng(10, 5);
    const grown = await loadImage(small, { minPixels: 200 });
    expect([grown.width, grown.height]).toEqual([20, 10]);
    expect(await imageSize(small, { minPixels: 200 })).toEqual({ width: 20, height: 10 });
  });

  it("leaves an image within [minPixels, maxPixels] untouched", async () => {
    const image = await loadImage({ data: rgb, width: W, height: H }, { minPixels: W * H, maxPixels: W * H });
    expect(Buffer.from(image.data).equals(Buffer.from(rgb))).toBe(true);
  });

  it("resizes raw RGB and RGBA input too", async () => {
    const fromRgb = await loadImage({ data: rgb, width: W, height: H }, { maxPixels: (W * H) / 4 });
    const fromRgba = await loadImage({ data: rgba(rgb, () => 255), width: W, height: H, channels: 4 }, { maxPixels: (W * H) / 4 });
    const fromPng = await loadImage(png, { maxPixels: (W * H) / 4 });
    expect([fromRgb.width, fromRgb.height]).toEqual([W / 2, H / 2]);
    expect(fromRgba.id).toBe(fromRgb.id);
    expect(fromPng.id).toBe(fromRgb.id);
  });

  it("rounds to the nearest size, or toward the budget when rounding overshoots", () => {
    expect(fitPixelBudget(15, 10, undefined, 100)).toEqual({ width: 12, height: 8 });
    // 10×10 → 7.55×7.55: rounding gives 8×8 = 64 > 57, so both sides round down.
    expect(fitPixelBudget(10, 10, undefined, 57)).toEqual({ width: 7, height: 7 });
    // 10×10 → 12.25×12.25: rounding gives 12×12 = 144 < 150, so both sides round up.
    expect(fitPixelBudget(10, 10, 150)).toEqual({ width: 13, height: 13 });
    expect(fitPixelBudget(10, 10, 150, 150)).toEqual({ width: 13, height: 13 });
    expect(fitPixelBudget(1000, 1, undefined, 10)).toEqual({ width: 100, height: 1 });
    expect(fitPixelBudget(30, 20, 100, 1000)).toEqual({ width: 30, height: 20 });
  });
});

describe("bad images", () => {
  it("missing file → FileNotFoundError naming the path", async () => {
    const missing = path.join(tmp, "nope.png");
    const error = await caught(loadImage(missing));
    expect(error).toBeInstanceOf(FileNotFoundError);
    expect(error.code).toBe("E_FILE_NOT_FOUND");
    expect(error.message).toBe(`Image file ${missing} does not exist. Check the path (relative paths resolve against the current directory).`);
    expect((error as FileNotFoundError).path).toBe(missing);
    expect((await caught(imageSize(pathToFileURL(missing)))).code).toBe("E_FILE_NOT_FOUND");
  });

  it("directory → FileNotFoundError saying it is a directory", async () => {
    const error = await caught(loadImage(tmp));
    expect(error).toBeInstanceOf(FileNotFoundError);
    expect(error.code).toBe("E_FILE_NOT_FOUND");
    expect(error.message).toBe(`Image file ${tmp} is a directory, not an image file. Pass the path of the image itself.`);
  });

  it("truncated JPEG → E_IMAGE_DECODE with sharp's message as cause, naming the path", async () => {
    const file = path.join(tmp, "truncated.jpg");
    fs.writeFileSync(file, await truncatedJpeg());
    const error = await caught(loadImage(file));
    expect(error).toBeInstanceOf(ImageError);
    expect(error.code).toBe("E_IMAGE_DECODE");
    expect(error.message).toContain(`file ${file}`);
    expect(error.message).toContain("premature end of JPEG image");
    expect(error.cause).toBeInstanceOf(Error);
    expect((await caught(loadImage(await truncatedJpeg()))).code).toBe("E_IMAGE_DECODE");
  });

  it("non-image bytes → E_IMAGE_DECODE", async () => {
    for (const run of [() => loadImage(nonImageBytes()), () => imageSize(nonImageBytes()), () => loadImage(Buffer.alloc(0))]) {
      const error = await caught(run());
      expect(error).toBeInstanceOf(ImageError);
      expect(error.code).toBe("E_IMAGE_DECODE");
    }
    const error = await caught(loadImage(nonImageBytes()));
    expect(error.message).toMatch(/^Could not decode the image in buffer of 272 bytes: .*unsupported image format/);
  });

  it("SVG → E_IMAGE_DECODE (not a supported format)", async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>');
    const error = await caught(loadImage(svg));
    expect(error.code).toBe("E_IMAGE_DECODE");
    expect(error.message).toBe("Unsupported image format svg in buffer of 64 bytes. Supported formats: JPEG, PNG, WebP, GIF, AVIF and TIFF.");
  });

  it("30000×30000 PNG bomb → E_IMAGE_TOO_LARGE without decoding", async () => {
    const bomb = pngBomb();
    expect(bomb.length).toBeLessThan(2048);
    const started = performance.now();
    for (const run of [() => loadImage(bomb), () => imageSize(bomb)]) {
      const error = await caught(run());
      expect(error).toBeInstanceOf(ImageError);
      expect(error.code).toBe("E_IMAGE_TOO_LARGE");
      expect(error.message).toBe(
        `The image in buffer of ${bomb.length} bytes is 30000×30000 = 900000000 pixels, over the limitInputPixels limit of 100000000. ` +
          "Pass a larger limitInputPixels (or false to turn the check off) if you trust the source.",
      );
    }
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("honours a custom limitInputPixels, for raw input too", async () => {
    expect((await caught(loadImage(png, { limitInputPixels: W * H - 1 }))).code).toBe("E_IMAGE_TOO_LARGE");
    const raw = await caught(loadImage({ data: rgb, width: W, height: H }, { limitInputPixels: 100 }));
    expect(raw.code).toBe("E_IMAGE_TOO_LARGE");
    expect(raw.message).toMatch(/^The image in input\.data is 48×32 = 1536 pixels, over the limitInputPixels limit of 100\. /);
    const file = await caught(imageSize(pngPath, { limitInputPixels: 100 }));
    expect(file.message).toMatch(/^The image in file .*sample\.png is 48×32 = 1536 pixels/);
    expect((await loadImage(png, { limitInputPixels: W * H })).width).toBe(W);
    expect((await loadImage(png, { limitInputPixels: false })).width).toBe(W);
  });

  it("empty data: URL → E_INVALID_DATA_URL", async () => {
    const error = await caught(loadImage(emptyDataUrl()));
    expect(error).toBeInstanceOf(ImageError);
    expect(error.code).toBe("E_INVALID_DATA_URL");
    expect(error.message).toBe("Invalid data: URL (the payload is empty). Expected data:image/<type>;base64,<base64 payload>.");
  });

  it("malformed base64 → E_INVALID_DATA_URL", async () => {
    const error = await caught(loadImage(malformedBase64DataUrl()));
    expect(error).toBeInstanceOf(ImageError);
    expect(error.code).toBe("E_INVALID_DATA_URL");
    expect(error.message).toBe(
      'Invalid data: URL (the payload is not valid base64: character "!" at offset 11). Expected data:image/<type>;base64,<base64 payload>.',
    );
  });

  it.each([
    ["no comma", "data:image/png;base64"],
    ["not base64", "data:image/png,hello"],
    ["no media type and no ;base64", "data:base64,AA=="],
    ["whitespace", "data:image/png;base64,iVBO Rw0K"],
    ["one leftover character", "data:image/png;base64,iVBOR"],
    ["padding in the middle", "data:image/png;base64,iV==BORw"],
    ["padding that does not complete a group", "data:image/png;base64,iVBORw="],
    ["mixed alphabets", "data:image/png;base64,ab+_"],
  ])("data: URL with %s → E_INVALID_DATA_URL", (_name, url) => {
    expect(() => decodeDataUrl(url)).toThrow(ImageError);
    expect(() => decodeDataUrl(url)).toThrow(expect.objectContaining({ code: "E_INVALID_DATA_URL" }));
  });

  it("accepts padded, unpadded and url-safe base64", () => {
    const bytes = Buffer.from([0xfb, 0xff, 0xfe, 0x01]);
    for (const payload of ["+//+AQ==", "+//+AQ", "-__-AQ", "-__-AQ=="]) {
      expect(decodeDataUrl(`data:application/octet-stream;base64,${payload}`).bytes.equals(bytes)).toBe(true);
    }
    expect(decodeDataUrl("data:IMAGE/PNG;name=a.png;base64,AA==")).toEqual({ mediaType: "image/png", bytes: Buffer.from([0]) });
    expect(decodeDataUrl("data:;base64,AA==").mediaType).toBe("");
  });
});

describe("argument validation", () => {
  it.each([
    [{ limitInputPixels: -1 }, "Expected positive integer or false for options.limitInputPixels but received -1 of type number"],
    [{ limitInputPixels: true }, "Expected positive integer or false for options.limitInputPixels but received true of type boolean"],
    [{ minPixels: 1.5 }, "Expected positive integer for options.minPixels but received 1.5 of type number"],
    [{ maxPixels: 0 }, "Expected positive integer for options.maxPixels but received 0 of type number"],
    [{ maxPixels: "1000" }, 'Expected positive integer for options.maxPixels but received "1000" of type string'],
    [{ minPixels: 100, maxPixels: 10 }, "Expected positive integer no greater than options.maxPixels (10) for options.minPixels but received 100 of type number"],
    [{ fetch: { timeoutMs: 0 } }, "Expected an integer between 1 and 2147483647 for options.fetch.timeoutMs but received 0 of type number"],
    [{ fetch: { maxRedirects: 21 } }, "Expected an integer between 0 and 20 for options.fetch.maxRedirects but received 21 of type number"],
    [{ fetch: "fast" }, 'Expected an object for options.fetch but received "fast" of type string'],
    [{ fetch: { retries: 2 } }, "Unknown option retries for options.fetch. Known options: timeoutMs, maxBytes, maxRedirects"],
    [{ signal: "stop" }, 'Expected an AbortSignal for options.signal but received "stop" of type string'],
    [{ maxPixel: 10 }, "Unknown option maxPixel for options. Known options: limitInputPixels, minPixels, maxPixels, fetch, signal"],
    [42, "Expected an object for options but received 42 of type number"],
  ])("rejects options %j", async (options, message) => {
    expect(() => validateImageOptions(options)).toThrow(message);
    const error = await caught(loadImage(png, options as never));
    expect(error.code).toBe("E_INVALID_ARGUMENT");
    expect(error.message).toBe(message);
  });

  it("fills in the defaults", () => {
    expect(validateImageOptions(undefined)).toEqual({
      limitInputPixels: 100_000_000,
      minPixels: undefined,
      maxPixels: undefined,
      fetch: { timeoutMs: 30_000, maxBytes: 64 * 1024 * 1024, maxRedirects: 5 },
      signal: undefined,
    });
    expect(() => validateImageOptions({ maxPixels: -1 }, "image")).toThrow("Expected positive integer for image.maxPixels but received -1 of type number");
  });

  it.each([
    [42, "Expected a path, a file:/http(s):/data: URL, a Buffer, a Uint8Array or a RawImage {data, width, height} for input but received 42 of type number"],
    ["", 'Expected a path, a file:/http(s):/data: URL, a Buffer, a Uint8Array or a RawImage {data, width, height} for input but received "" of type string'],
    ["ftp://example.com/a.png", 'Expected a path or a file:, http:, https: or data: URL for input but received "ftp://example.com/a.png" of type string'],
    [{ data: [1, 2, 3], width: 1, height: 1 }, "Expected a Uint8Array of raw RGB or RGBA pixels for input.data but received an array"],
    [{ data: new Uint8Array(3), width: 0, height: 1 }, "Expected positive integer for input.width but received 0 of type number"],
    [{ data: new Uint8Array(2), width: 1, height: 1, channels: 2 }, "Expected 3 (RGB) or 4 (RGBA) for input.channels but received 2 of type number"],
    [{ data: new Uint8Array(10), width: 2, height: 2 }, "Expected 12 bytes (width 2 × height 2 × channels 3) for input.data but received 10 bytes"],
  ])("rejects input %j", async (input, message) => {
    const error = await caught(loadImage(input as never));
    expect(error.code).toBe("E_INVALID_ARGUMENT");
    expect(error.message).toBe(message);
  });

  it("rejects bad fetchBytes arguments", async () => {
    expect((await caught(fetchBytes("ftp://127.0.0.1/x"))).message).toBe(
      'Expected an http(s) URL for url but received "ftp://127.0.0.1/x" of type string',
    );
    expect((await caught(fetchBytes(`${base}/img.png`, { maxBytes: 0 }))).message).toBe(
      "Expected an integer between 1 and 9007199254740991 for options.maxBytes but received 0 of type number",
    );
    expect((await caught(fetchBytes(`${base}/img.png`, { headers: { a: 1 as never } }))).message).toBe(
      "Expected a string for options.headers.a but received 1 of type number",
    );
    expect((await caught(fetchBytes(`${base}/img.png`, { headers: { "bad header": "x" } }))).message).toBe(
      "Expected valid HTTP header names and values for options.headers but received an object",
    );
  });

  it("an already-aborted signal → AbortError before any work", async () => {
    const reason = new Error("user cancelled");
    const error = await caught(loadImage(png, { signal: AbortSignal.abort(reason) }));
    expect(error).toBeInstanceOf(AbortError);
    expect(error.code).toBe("E_ABORTED");
    expect(error.cause).toBe(reason);
  });
});

describe("http(s) inputs", () => {
  it("returns the bytes, content type and final URL", async () => {
    const result = await fetchBytes(`${base}/img.png`);
    expect(result.bytes.equals(png)).toBe(true);
    expect(result.contentType).toBe("image/png");
    expect(result.finalUrl).toBe(`${base}/img.png`);
  });

  it("follows relative redirects up to maxRedirects", async () => {
    const result = await fetchBytes(`${base}/r/4`);
    expect(result.finalUrl).toBe(`${base}/img.png`);
    expect(result.bytes.equals(png)).toBe(true);
    expect((await loadImage(`${base}/r/2`, { fetch: { maxRedirects: 3 } })).id).toBe((await loadImage(png)).id);
  });

  it("fails beyond maxRedirects", async () => {
    const error = await caught(fetchBytes(`${base}/r/5`));
    expect(error).toBeInstanceOf(FetchError);
    expect(error.code).toBe("E_FETCH");
    expect(error.message).toBe(
      `Fetching ${base}/r/5 was redirected more than 5 times (last to ${base}/r/0). Raise fetch.maxRedirects if the chain is expected.`,
    );
    expect((await caught(fetchBytes(`${base}/r/0`, { maxRedirects: 0 }))).code).toBe("E_FETCH");
    expect((await caught(loadImage(`${base}/r/1`, { fetch: { maxRedirects: 1 } }))).code).toBe("E_FETCH");
  });

  it("refuses a redirect to a non-http(s) scheme", async () => {
    const error = await caught(fetchBytes(`${base}/to-ftp`));
    expect(error).toBeInstanceOf(FetchError);
    expect(error.message).toBe(`${base}/to-ftp redirected to "ftp://127.0.0.1/img.png", which is not an http(s) URL.`);
  });

  it("404 → FetchError with status", async () => {
    const error = await caught(loadImage(`${base}/missing.png`));
    expect(error).toBeInstanceOf(FetchError);
    expect(error.code).toBe("E_FETCH");
    expect((error as FetchError).status).toBe(404);
    expect((error as FetchError).url).toBe(`${base}/missing.png`);
    expect(error.message).toBe(`Fetching ${base}/missing.png failed with HTTP 404 Not Found`);
  });

  it("stops reading a chunked body as soon as it passes maxBytes", async () => {
    const error = await caught(fetchBytes(`${base}/endless`, { maxBytes: 100_000 }));
    expect(error).toBeInstanceOf(FetchError);
    expect(error.message).toBe(
      `${base}/endless is larger than the 100000-byte limit (more than 100000 bytes received). Raise the limit with fetch.maxBytes if the file is expected.`,
    );
  });

  it("rejects a declared Content-Length over maxBytes before reading the body", async () => {
    const error = await caught(loadImage(`${base}/declared-big`, { fetch: { maxBytes: 1000 } }));
    expect(error).toBeInstanceOf(FetchError);
    expect(error.message).toContain("(Content-Length: 1000000)");
  });

  it("times out a server that never answers", async () => {
    const started = performance.now();
    const error = await caught(fetchBytes(`${base}/hang`, { timeoutMs: 150 }));
    expect(error).toBeInstanceOf(FetchError);
    expect(error.code).toBe("E_FETCH");
    expect(error.message).toBe(
      `Fetching ${base}/hang timed out after 150 ms (while connecting). Raise the limit with fetch.timeoutMs if the server is slow.`,
    );
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("times out a body that never ends", async () => {
    const error = await caught(fetchBytes(`${base}/endless`, { timeoutMs: 150, maxBytes: 1e12 }));
    expect(error).toBeInstanceOf(FetchError);
    expect(error.message).toContain("timed out after 150 ms (while reading the body)");
  });

  it("aborting → AbortError with the signal's reason", async () => {
    const controller = new AbortController();
    const reason = new Error("stop");
    setTimeout(() => controller.abort(reason), 50);
    const error = await caught(loadImage(`${base}/hang`, { signal: controller.signal }));
    expect(error).toBeInstanceOf(AbortError);
    expect(error.code).toBe("E_ABORTED");
    expect(error.cause).toBe(reason);

    const during = new AbortController();
    setTimeout(() => during.abort(reason), 50);
    const bodyError = await caught(fetchBytes(`${base}/endless`, { signal: during.signal, maxBytes: 1e12 }));
    expect(bodyError).toBeInstanceOf(AbortError);
    expect(bodyError.cause).toBe(reason);
  });

  it("network error → FetchError with the cause", async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const error = await caught(fetchBytes(`http://127.0.0.1:${port}/x.png`));
    expect(error).toBeInstanceOf(FetchError);
    expect(error.message).toMatch(new RegExp(`^Fetching http://127\\.0\\.0\\.1:${port}/x\\.png failed \\(while connecting\\): fetch failed: .*ECONNREFUSED`));
    expect(error.cause).toBeInstanceOf(Error);
  });

  it("names the URL and content type when the body is not an image", async () => {
    const error = await caught(loadImage(`${base}/page.html`));
    expect(error.code).toBe("E_IMAGE_DECODE");
    expect(error.message).toContain(`Could not decode the image in ${base}/page.html (content-type text/html): `);
  });

  it("sends URL credentials as Basic auth and keeps them out of messages", async () => {
    const url = `${base.replace("http://", "http://user:s%40cret@")}/whoami`;
    const result = await fetchBytes(url);
    expect(result.bytes.toString()).toBe(`Basic ${Buffer.from("user:s@cret").toString("base64")}`);
    expect(result.finalUrl).toBe(`${base}/whoami`);
    const error = await caught(fetchBytes(url.replace("/whoami", "/missing.png")));
    expect(error.message).toBe(`Fetching ${base}/missing.png failed with HTTP 404 Not Found`);
  });

  it("drops Authorization and Cookie on a redirect to another origin", async () => {
    const headers = { authorization: "Bearer token", cookie: "a=1", "x-kept": "yes" };
    const sameOrigin = await fetchBytes(`${base}/redirect-to?to=${encodeURIComponent(`${base}/headers`)}`, { headers });
    expect(JSON.parse(sameOrigin.bytes.toString())).toMatchObject(headers);
    const crossOrigin = await fetchBytes(`${base}/redirect-to?to=${encodeURIComponent(`${otherBase}/headers`)}`, { headers });
    const seen = JSON.parse(crossOrigin.bytes.toString()) as Record<string, string>;
    expect(seen["x-kept"]).toBe("yes");
    expect(seen.authorization).toBeUndefined();
    expect(seen.cookie).toBeUndefined();
  });
});
