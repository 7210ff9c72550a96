// Strict base64 data: URL decoding. Buffer.from(s, "base64") skips characters it does not know,
// so junk would decode to a shorter, silently wrong file; here it is an error instead.
import { AudioError, ImageError, VideoError } from "../errors.js";

// One alphabet per payload, no whitespace, optional padding.
const BASE64_STANDARD = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64_URL_SAFE = /^[A-Za-z0-9_-]*={0,2}$/;

/**
 * Decodes `data:[<mediatype>][;params];base64,<payload>`. The media type is returned, not
 * checked: callers sniff the bytes. Throws E_INVALID_DATA_URL (`ImageError`, `VideoError` or `AudioError` after `kind`).
 */
export function decodeDataUrl(url: string, kind: "image" | "video" | "audio" = "image"): { mediaType: string; bytes: Buffer } {
  const invalid = (why: string) => {
    const message = `Invalid data: URL (${why}). Expected data:${kind}/<type>;base64,<base64 payload>.`;
    if (kind === "audio") return new AudioError("E_INVALID_DATA_URL", message);
    return kind === "image" ? new ImageError("E_INVALID_DATA_URL", message) : new VideoError("E_INVALID_DATA_URL", message);
  };
  const comma = url.indexOf(",");
  if (!/^data:/i.test(url) || comma < 0) throw invalid("no comma separating the header from the payload");
  const params = url.slice(5, comma).split(";");
  if (params.length < 2 || params[params.length - 1]?.trim().toLowerCase() !== "base64") throw invalid("the payload is not marked ;base64");
  const payload = url.slice(comma + 1);
  if (payload.length === 0) throw invalid("the payload is empty");
  if (!BASE64_STANDARD.test(payload) && !BASE64_URL_SAFE.test(payload)) {
    const at = payload.search(/[^A-Za-z0-9+/_=-]/);
    const why =
      at >= 0
        ? `the payload is not valid base64: character ${JSON.stringify(payload[at])} at offset ${at}`
        : "the payload is not valid base64: padding inside the data or mixed standard and url-safe alphabets";
    throw invalid(why);
  }
  const body = payload.replace(/=+$/, "");
  const padded = body.length !== payload.length;
  // A final group of one character cannot encode a byte; padding must complete a group of four.
  if (body.length % 4 === 1 || (padded && payload.length % 4 !== 0)) {
    throw invalid(`the payload is not valid base64: ${payload.length} characters is not a valid base64 length`);
  }
  return { mediaType: params[0]!.trim().toLowerCase(), bytes: Buffer.from(body, "base64") };
}
