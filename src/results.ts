// Shaping what the engine reports into what the API returns.
import type { GenerateResult, StopReason } from "./multimodal-lm.js";
import type { NativeGenerateResult, NativeTokenLogprob } from "./native-types.js";
import type { ToolCall } from "./messages.js";
import type { TokenLogprob } from "./structured.js";

/** The reply as the output parser (or the raw text) gives it. */
export interface ParsedReply {
  content: string;
  toolCalls: ToolCall[];
}

/** A token's log-probability with its text (bytes as UTF-8) and alternatives. */
export function toTokenLogprob(t: NativeTokenLogprob): TokenLogprob {
  const text = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
  return {
    token: text(t.bytes),
    bytes: [...t.bytes],
    logprob: t.logprob,
    topLogprobs: t.top.map((alt) => ({ token: text(alt.bytes), bytes: [...alt.bytes], logprob: alt.logprob })),
  };
}

/**
 * A request's result from the engine's: the reply as parsed (text beside tool calls), a stop
 * reason that says "tool_calls" only for a reply that ended with complete calls, usage, the
 * videos read, timings (from `started`, when the request began) and what the caches saved.
 */
export function generateResult(
  r: NativeGenerateResult,
  reply: ParsedReply,
  o: { logprobs: boolean; videos: GenerateResult["videos"]; imageLoadMs: number; started: number },
): GenerateResult {
  const { videos, imageLoadMs, started } = o;
  const prefillOnly = r.promptMs > 0 ? r.promptTokens / (r.promptMs / 1000) : 0;
  const truncated = r.stopReason === "length" || r.stopReason === "context";
  const stopReason: StopReason = reply.toolCalls.length > 0 && !truncated ? "tool_calls" : r.stopReason;
  return {
    text: reply.content,
    stopReason,
    toolCalls: reply.toolCalls,
    ...(o.logprobs ? { logprobs: r.logprobs.map(toTokenLogprob) } : {}),
    usage: {
      promptTokens: r.promptTokens,
      completionTokens: r.completionTokens,
      totalTokens: r.promptTokens + r.completionTokens,
      mediaTokens: r.mediaTokens,
      mediaChunks: r.mediaChunks,
    },
    videos,
    timings: {
      imageLoadMs,
      encodeMs: r.encodeMs,
      promptMs: r.promptMs,
      generationMs: r.generationMs,
      timeToFirstTokenMs: r.timeToFirstTokenMs,
      promptTokensPerSecond: prefillOnly,
      generationTokensPerSecond: r.generationMs > 0 ? r.completionTokens / (r.generationMs / 1000) : 0,
      totalMs: performance.now() - started,
    },
    cache: {
      reusedPositions: r.reusedPositions,
      reusedTokens: r.reusedTokens,
      evaluatedPositions: r.evaluatedPositions,
      imageCacheHits: r.imageCacheHits,
      imageCacheMisses: r.imageCacheMisses,
      encodedChunks: r.encodedChunks,
    },
  };
}
