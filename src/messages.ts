// OpenAI-style chat messages → the native template's messages plus the images, in order.
import type { ImageInput } from "./media/image.js";
import type { NativeChatMessage } from "./native-types.js";
import { invalidParameter, is } from "./validate.js";

export type ChatRole = "system" | "user" | "assistant" | "developer" | "tool";

export type ChatContentPart =
  | { type: "text"; text: string }
  /** An image by URL: http(s), file://, data:, or a local path. */
  | { type: "image_url"; image_url: string | { url: string; detail?: string } }
  /** An image as a local path, encoded bytes, or raw pixels. */
  | { type: "image"; image: ImageInput };

export interface ChatMessage {
  role: ChatRole;
  content: string | ChatContentPart[] | null;
}

const ROLES = new Set(["system", "user", "assistant", "developer", "tool"]);

export interface ParsedChat {
  messages: NativeChatMessage[];
  images: ImageInput[];
}

export function parseMessages(messages: unknown): ParsedChat {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw invalidParameter("messages", "a non-empty array of chat messages", messages);
  }
  const images: ImageInput[] = [];
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
          images.push(url);
          return { type: "media" as const };
        }
        case "image":
          if (part.image === undefined || part.image === null) {
            throw invalidParameter(`${at}.image`, "a path, a Buffer, or raw pixels", part.image);
          }
          images.push(part.image as ImageInput);
          return { type: "media" as const };
        default:
          throw invalidParameter(`${at}.type`, '"text", "image_url" or "image"', part.type);
      }
    });
    return { role: message.role, content: parts };
  });
  return { messages: out, images };
}
