// The messages between a MultimodalLM in the parent and its engine process (src/engine/child.ts),
// over Node's IPC channel with the "advanced" (structured clone) serialization. Large media
// (image and frame pixels, audio samples) do not go through the IPC channel: the parent writes
// them to a separate pipe as [u32 length][bytes] frames, each read straight into its own buffer in
// the child, and the IPC message names them by their order on that pipe (see payloads.ts).
import type { NativeLoadOptions, NativeStats, NativeTokenLogprob } from "../native-types.js";

/** The NativeModel methods the child runs (the rest run in the parent; see SupervisedEngine). */
export type RemoteMethod = "generate" | "embedImage" | "countTokens" | "clearCaches" | "applyChat";

export type ToChild =
  | { t: "load"; id: number; options: NativeLoadOptions; logLevel: number }
  | { t: "call"; id: number; method: RemoteMethod; args: unknown[] }
  | { t: "cancel"; id: number };

export type FromChild =
  | { t: "progress"; id: number; value: number }
  | { t: "event"; id: number; piece: string | undefined; logprobs?: NativeTokenLogprob; stats?: NativeStats }
  | { t: "done"; id: number; value: unknown; stats: NativeStats | undefined }
  | { t: "fail"; id: number; code: string; message: string; stats: NativeStats | undefined }
  | { t: "log"; level: number; line: string };

/** A typed array sent on the payload pipe: the IPC message holds this in its place. */
export interface PayloadRef {
  __payload: number;
  kind: "u8" | "f32";
}

export function isPayloadRef(value: unknown): value is PayloadRef {
  return typeof value === "object" && value !== null && typeof (value as PayloadRef).__payload === "number";
}
