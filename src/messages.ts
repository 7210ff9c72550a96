// The one place where OpenAI-shaped chat messages are understood: roles, every content-part type,
// assistant tool_calls and tool results. The library's chat() and the server's
// /v1/chat/completions both go through parseMessages; media are resolved through a hook (the
// server passes its media-access policy) and then decoded in order.
import { MultimodalLMError } from "./errors.js";
import type { AudioInput } from "./media/audio.js";
import type { ImageInput } from "./media/image.js";
import type { VideoInput } from "./media/video.js";
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
  | { type: "video"; video: VideoInput }
  /** OpenAI's audio part: base64 bytes of a clip and their format ("wav", "mp3", ...). */
  | { type: "input_audio"; input_audio: { data: string; format?: string } }
  /** An audio clip by URL (as vLLM): http(s), file://, data:audio/...;base64, or a local path. */
  | { type: "audio_url"; audio_url: string | { url: string } }
  /** An audio clip as a local path, a URL, or the bytes of an audio (or video) file. */
  | { type: "audio"; audio: AudioInput };

/** A call the model made, as OpenAI returns it (and as it goes back into the history). */
export interface ToolCall {
  id: string;
  type: "function";
  /** `arguments` is a JSON string, as OpenAI sends it. */
  function: { name: string; arguments: string };
}

export interface ChatMessage {
  role: ChatRole;
  /** May be null or absent on an assistant message that has tool_calls. */
  content?: string | ChatContentPart[] | null;
  /** An assistant turn's tool calls. `arguments` may also be given as an object. */
  tool_calls?: Array<{ id?: string; type?: "function"; function: { name: string; arguments: string | Record<string, unknown> } }>;
  /** On a tool message: the id of the call it answers. */
  tool_call_id?: string;
  /** The speaker's name, or on a tool message the function's name. */
  name?: string;
}

const ROLES: readonly ChatRole[] = ["system", "user", "assistant", "developer", "tool"];
const PART_TYPES = ["text", "image_url", "image", "video_url", "video", "input_audio", "audio_url", "audio"] as const;
const UNSUPPORTED_PARTS: Record<string, string> = {
  time_series_url: "time_series_url content parts are not supported: this library takes text, images, videos and audio.",
};
const AUDIO_FORMAT = /^[a-z0-9]{1,16}$/;

/** One media item of a conversation, in the order of its marker. */
export interface MediaRef {
  type: "image" | "video" | "audio";
  input: ImageInput | VideoInput | AudioInput;
  /** Where it is in the request, e.g. `messages[0].content[1].image_url`. */
  param: string;
}

/** A message as llama.cpp's chat layer reads it (OpenAI's JSON, media as marker parts). */
export interface TemplateMessage {
  role: string;
  content: string | Array<{ type: "text"; text: string } | { type: "media_marker"; text: string }>;
  tool_calls?: Array<{ id: string; type: "function"; function: { name: string; arguments: string } }>;
  tool_call_id?: string;
  name?: string;
}

export interface ParsedChat {
  messages: TemplateMessage[];
  media: MediaRef[];
}

/**
 * Resolves one media reference before it is decoded: returns what to load instead (e.g. the
 * bytes of a URL it fetched under a policy), or throws to refuse it.
 */
export type MediaResolver = (
  ref: MediaRef,
  signal: AbortSignal | undefined,
) => Promise<ImageInput | VideoInput | AudioInput> | ImageInput | VideoInput | AudioInput;

function urlOf(value: unknown, param: string): string {
  const url = is.string(value) ? value : is.object(value) ? value.url : undefined;
  if (!is.string(url) || url.length === 0) throw invalidParameter(param, "a URL string or { url }", value);
  return url;
}

function readToolCalls(value: unknown, where: string): NonNullable<TemplateMessage["tool_calls"]> {
  if (!Array.isArray(value)) throw invalidParameter(`${where}.tool_calls`, "an array of tool calls", value);
  return value.map((call: unknown, k) => {
    const at = `${where}.tool_calls[${k}]`;
    if (!is.object(call) || !is.object(call.function)) throw invalidParameter(at, "{ id, type: \"function\", function: { name, arguments } }", call);
    if (call.type !== undefined && call.type !== "function") throw invalidParameter(`${at}.type`, '"function"', call.type);
    if (call.id !== undefined && !is.string(call.id)) throw invalidParameter(`${at}.id`, "a string", call.id);
    const { name, arguments: args } = call.function;
    if (!is.string(name) || name.length === 0) throw invalidParameter(`${at}.function.name`, "a function name", name);
    let text: string;
    if (is.string(args)) {
      text = args;
      try {
        JSON.parse(text);
      } catch {
        throw invalidParameter(`${at}.function.arguments`, "the call's arguments as a JSON string (as the model returned them)", args);
      }
    } else if (is.object(args)) {
      text = JSON.stringify(args);
    } else {
      throw invalidParameter(`${at}.function.arguments`, "a JSON string or an object", args);
    }
    return { id: is.string(call.id) ? call.id : `call_${k}`, type: "function" as const, function: { name, arguments: text } };
  });
}

/**
 * Checks OpenAI-shaped messages and splits them into the template's messages (each media part a
 * `marker`) and the media, in order. Throws E_INVALID_ARGUMENT naming the field at fault.
 */
export function parseMessages(messages: unknown, marker: string): ParsedChat {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw invalidParameter("messages", "a non-empty array of chat messages", messages);
  }
  const media: MediaRef[] = [];
  const out = messages.map((message: unknown, i): TemplateMessage => {
    const where = `messages[${i}]`;
    if (!is.object(message)) throw invalidParameter(where, "an object with role and content", message);
    const role = message.role;
    if (!is.string(role) || !ROLES.includes(role as ChatRole)) throw invalidParameter(`${where}.role`, `one of ${ROLES.join(", ")}`, role);
    const parsed: TemplateMessage = { role, content: "" };
    if (message.name !== undefined && message.name !== null) {
      if (!is.string(message.name)) throw invalidParameter(`${where}.name`, "a string", message.name);
      parsed.name = message.name;
    }
    if (message.tool_calls !== undefined && message.tool_calls !== null) {
      if (role !== "assistant") throw invalidParameter(`${where}.tool_calls`, "tool_calls only on an assistant message", message.tool_calls);
      const calls = readToolCalls(message.tool_calls, where);
      if (calls.length > 0) parsed.tool_calls = calls;
    }
    if (message.tool_call_id !== undefined && message.tool_call_id !== null) {
      if (role !== "tool") throw invalidParameter(`${where}.tool_call_id`, "tool_call_id only on a tool message", message.tool_call_id);
      if (!is.string(message.tool_call_id)) throw invalidParameter(`${where}.tool_call_id`, "a string", message.tool_call_id);
      parsed.tool_call_id = message.tool_call_id;
    }
    const content = message.content;
    if (content === null || content === undefined) return parsed;
    if (is.string(content)) return { ...parsed, content };
    if (!Array.isArray(content)) throw invalidParameter(`${where}.content`, "a string or an array of content parts", content);
    parsed.content = content.map((part: unknown, j) => {
      const at = `${where}.content[${j}]`;
      if (!is.object(part) || !is.string(part.type)) throw invalidParameter(at, "a content part with a type", part);
      const mediaPart = (type: MediaRef["type"], input: MediaRef["input"], param: string) => {
        media.push({ type, input, param });
        return { type: "media_marker" as const, text: marker };
      };
      switch (part.type) {
        case "text":
          if (!is.string(part.text)) throw invalidParameter(`${at}.text`, "a string", part.text);
          return { type: "text" as const, text: part.text };
        case "image_url":
          return mediaPart("image", urlOf(part.image_url, `${at}.image_url`), `${at}.image_url`);
        case "video_url":
          return mediaPart("video", urlOf(part.video_url, `${at}.video_url`), `${at}.video_url`);
        case "image":
          if (part.image === undefined || part.image === null || part.image === "") {
            throw invalidParameter(`${at}.image`, "a path, a URL, a Buffer, or raw pixels", part.image);
          }
          return mediaPart("image", part.image as ImageInput, `${at}.image`);
        case "video":
          if (part.video === undefined || part.video === null || part.video === "") {
            throw invalidParameter(`${at}.video`, "a path, a URL or a Buffer", part.video);
          }
          return mediaPart("video", part.video as VideoInput, `${at}.video`);
        case "audio_url":
          return mediaPart("audio", urlOf(part.audio_url, `${at}.audio_url`), `${at}.audio_url`);
        case "audio":
          if (part.audio === undefined || part.audio === null || part.audio === "") {
            throw invalidParameter(`${at}.audio`, "a path, a URL or a Buffer", part.audio);
          }
          return mediaPart("audio", part.audio as AudioInput, `${at}.audio`);
        case "input_audio": {
          // OpenAI's shape: base64 bytes and their format; read as a data: URL (checked strictly there).
          const value = part.input_audio;
          if (!is.object(value) || !is.string(value.data) || value.data.length === 0) {
            throw invalidParameter(`${at}.input_audio`, '{ data: "<base64>", format: "wav" | "mp3" | ... }', value);
          }
          const format = value.format === undefined || value.format === null ? "wav" : value.format;
          if (!is.string(format) || !AUDIO_FORMAT.test(format)) throw invalidParameter(`${at}.input_audio.format`, 'an audio format such as "wav" or "mp3"', format);
          return mediaPart("audio", `data:audio/${format};base64,${value.data}`, `${at}.input_audio`);
        }
        default: {
          const refusal = UNSUPPORTED_PARTS[part.type];
          if (refusal) throw new MultimodalLMError("E_INVALID_ARGUMENT", refusal, { param: `${at}.type` });
          throw invalidParameter(`${at}.type`, PART_TYPES.map((t) => `"${t}"`).join(", "), part.type);
        }
      }
    });
    return parsed;
  });
  return { messages: out, media };
}

/**
 * Runs `resolve` on every media reference (in parallel), keeping their order. A refusal or
 * failure is re-thrown with the part it came from in its message and `param`.
 */
export async function resolveMedia(media: MediaRef[], resolve: MediaResolver, signal: AbortSignal | undefined): Promise<MediaRef[]> {
  return Promise.all(
    media.map(async (ref): Promise<MediaRef> => {
      try {
        return { ...ref, input: await resolve(ref, signal) };
      } catch (error) {
        throw atPart(error, ref.param);
      }
    }),
  );
}

/** `error`, when it is a MultimodalLMError not yet tied to a message part, with `param` and its message naming the part. */
export function atPart(error: unknown, param: string): unknown {
  if (error instanceof MultimodalLMError && error.code !== "E_ABORTED" && !error.param?.startsWith("messages[")) {
    // Same class and code; the message and param now name the part.
    error.message = `${param}: ${error.message}`;
    Object.defineProperty(error, "param", { value: param, enumerable: true });
  }
  return error;
}
