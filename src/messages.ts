// OpenAI-style chat messages → the native template's messages plus the images and videos, in order.
import type { ImageInput } from "./media/image.js";
import type { VideoInput } from "./media/video.js";
import type { NativeChatMessage } from "./native-types.js";
import { invalidParameter, is } from "./validate.js";

export type ChatRole = "system" | "user" | "assistant" | "developer" | "tool";

export type ChatContentPart =
  | { type: "text"; text: string }
  /** An image by URL: http(s), file://, data:, or a local path. */
  | { type: "image_url"; image_url: string | { url: string; detail?: string } }
  /** An image as a local path, encoded bytes, or raw pixels. */
  | { type: "image"; image: ImageInput }
  /** A video by URL: http(s), file://, data:video/...;base64, or a local path. */
  | { type: "video_url"; video_url: string | { url: string } }
  /** A video as a local path, a URL, or the bytes of a video file. */
  | { type: "video"; video: VideoInput };

export interface ChatMessage {
  role: ChatRole;
  content: string | ChatContentPart[] | null;
}

const ROLES = new Set(["system", "user", "assistant", "developer", "tool"]);

/** One media item of a conversation, in the order of its marker. */
export type MediaRef = { type: "image"; input: ImageInput } | { type: "video"; input: VideoInput };

export interface ParsedChat {
  messages: NativeChatMessage[];
  media: MediaRef[];
}

export function parseMessages(messages: unknown): ParsedChat {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw invalidParameter("messages", "a non-empty array of chat messages", messages);
  }
  const media: MediaRef[] = [];
  const out = messages.map((message: unknown, i): NativeChatMessage => {
    const where = `messages[${i}]`;
    if (!is.object(message)) throw invalidParameter(where, "an object with role and content", message);
    if (!is.string(message.role) || !ROLES.has(message.role)) {
      throw invalidParameter(`${where}.role`, `one of ${[...ROLES].join(", ")}`, message.role);
    }
    const content = message.content;
    if (content === null || content === undefined) return { role: message.role, content: "" };
    if (is.string(content)) return { role: message.role, content };
    if (!Array.isArray(content)) throw invalidParameter(`${where}.content`, "a string or an array of content parts", content);
    const parts = content.map((part: unknown, j) => {
      const at = `${where}.content[${j}]`;
      if (!is.object(part) || !is.string(part.type)) throw invalidParameter(at, "a content part with a type", part);
      switch (part.type) {
        case "text":
          if (!is.string(part.text)) throw invalidParameter(`${at}.text`, "a string", part.text);
          return { type: "text" as const, text: part.text };
        case "image_url": {
          const value = part.image_url;
          const url = is.string(value) ? value : is.object(value) ? value.url : undefined;
          if (!is.string(url) || url.length === 0) {
            throw invalidParameter(`${at}.image_url`, "a URL string or { url }", value);
          }
          media.push({ type: "image", input: url });
          return { type: "media" as const };
        }
        case "image":
          if (part.image === undefined || part.image === null) {
            throw invalidParameter(`${at}.image`, "a path, a Buffer, or raw pixels", part.image);
          }
          media.push({ type: "image", input: part.image as ImageInput });
          return { type: "media" as const };
        case "video_url": {
          const value = part.video_url;
          const url = is.string(value) ? value : is.object(value) ? value.url : undefined;
          if (!is.string(url) || url.length === 0) {
            throw invalidParameter(`${at}.video_url`, "a URL string or { url }", value);
          }
          media.push({ type: "video", input: url });
          return { type: "media" as const };
        }
        case "video":
          if (part.video === undefined || part.video === null) {
            throw invalidParameter(`${at}.video`, "a path, a URL or a Buffer", part.video);
          }
          media.push({ type: "video", input: part.video as VideoInput });
          return { type: "media" as const };
        default:
          throw invalidParameter(`${at}.type`, '"text", "image_url", "image", "video_url" or "video"', part.type);
      }
    });
    return { role: message.role, content: parts };
  });
  return { messages: out, media };
}
