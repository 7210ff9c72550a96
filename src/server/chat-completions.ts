// POST /v1/chat/completions: media through the policy, then MultimodalLM.chat, answered as one
// JSON object or as server-sent events ending in [DONE], in OpenAI's shapes.
import type { ServerResponse } from "node:http";

import { MultimodalLMError } from "../errors.js";
import { decodeDataUrl } from "../media/data-url.js";
import type { ChatContentPart, ChatMessage } from "../messages.js";
import type { GenerateResult, MultimodalLM, StopReason } from "../multimodal-lm.js";
import type { ChatCompletionRequest, RequestPart } from "./chat-request.js";
import { HttpError, statusFor, toHttpFailure } from "./http-errors.js";
import type { MediaAccess } from "./media-access.js";

export interface CompletionOutcome {
  promptTokens?: number;
  completionTokens?: number;
  timeToFirstTokenMs?: number;
}

function recordResult(outcome: CompletionOutcome, result: GenerateResult): void {
  outcome.promptTokens = result.usage.promptTokens;
  outcome.completionTokens = result.usage.completionTokens;
  outcome.timeToFirstTokenMs = result.timings.timeToFirstTokenMs;
}

const FINISH_REASON: Record<StopReason, "stop" | "length" | "tool_calls"> = { eos: "stop", stop: "stop", length: "length", context: "length", tool_calls: "tool_calls" };

function usageOf(result: GenerateResult) {
  return {
    prompt_tokens: result.usage.promptTokens,
    completion_tokens: result.usage.completionTokens,
    total_tokens: result.usage.totalTokens,
    // Prompt tokens found in the KV cache from an earlier request (prefix reuse).
    prompt_tokens_details: { cached_tokens: result.cache.reusedTokens },
  };
}

/** Resolves every media part through the policy (in parallel), keeping the parts' order. */
async function resolveMessages(request: ChatCompletionRequest, access: MediaAccess, signal: AbortSignal): Promise<ChatMessage[]> {
  const resolvePart = async (part: RequestPart): Promise<ChatContentPart> => {
    if (!("kind" in part)) return part;
    try {
      const resolved = await access.resolve(part.ref, part.kind, signal);
      // Decoded here so a bad payload is reported with the part it came from.
      const input = typeof resolved === "string" && /^data:/i.test(resolved) ? decodeDataUrl(resolved, part.kind).bytes : resolved;
      return part.kind === "image" ? { type: "image", image: input } : { type: "video", video: input };
    } catch (error) {
      if (error instanceof MultimodalLMError && !(error instanceof HttpError) && error.code !== "E_ABORTED") {
        throw new HttpError(statusFor(error.code), error.code, `${part.param}: ${error.message}`, { param: part.param, cause: error });
      }
      throw error;
    }
  };
  return Promise.all(
    request.messages.map(async ({ role, content }): Promise<ChatMessage> => ({
      role: role as ChatMessage["role"],
      content: typeof content === "string" ? content : await Promise.all(content.map(resolvePart)),
    })),
  );
}

function sse(res: ServerResponse, data: unknown): void {
  res.write(`data: ${JSON.stringify(data)}\n\n`);
}

/**
 * Runs one completion and writes the answer. Input errors found before the first token (bad
 * media, context overflow) are answered with their HTTP status even when streaming, since the
 * event stream only starts with the first piece.
 */
export async function runChatCompletion(
  lm: MultimodalLM,
  access: MediaAccess,
  request: ChatCompletionRequest,
  { id, modelName }: { id: string; modelName: string },
  res: ServerResponse,
  signal: AbortSignal,
): Promise<CompletionOutcome> {
  const created = Math.floor(Date.now() / 1000);
  const outcome: CompletionOutcome = {};
  // One controller for the media downloads and the generation: a failed download stops the others.
  const controller = new AbortController();
  const combined = AbortSignal.any([signal, controller.signal]);
  let messages: ChatMessage[];
  try {
    messages = await resolveMessages(request, access, combined);
  } finally {
    controller.abort();
  }
  const chatRequest = { messages, ...request.sampling, image: request.image, video: request.video, signal };

  if (!request.stream) {
    const result = await lm.chat(chatRequest);
    recordResult(outcome, result);
    const body = {
      id,
      object: "chat.completion",
      created,
      model: modelName,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: result.text, refusal: null },
          logprobs: null,
          finish_reason: FINISH_REASON[result.stopReason],
        },
      ],
      usage: usageOf(result),
    };
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
    return outcome;
  }

  const chunk = (delta: Record<string, unknown>, finishReason: string | null) => ({
    id,
    object: "chat.completion.chunk",
    created,
    model: modelName,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    ...(request.includeUsage ? { usage: null } : {}),
  });
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no" });
    sse(res, chunk({ role: "assistant", content: "" }, null));
  };
  const stream = lm.chatStream(chatRequest);
  try {
    for await (const piece of stream) {
      start();
      sse(res, chunk({ content: piece }, null));
    }
    const result = await stream.result;
    recordResult(outcome, result);
    start();
    sse(res, chunk({}, FINISH_REASON[result.stopReason]));
    if (request.includeUsage) sse(res, { id, object: "chat.completion.chunk", created, model: modelName, choices: [], usage: usageOf(result) });
    res.end("data: [DONE]\n\n");
  } catch (error) {
    if (!started) throw error;
    // Headers are gone: report the failure as an error event, as OpenAI does, and end the stream.
    if (!res.destroyed) {
      sse(res, toHttpFailure(error).body);
      res.end("data: [DONE]\n\n");
    }
    throw error;
  }
  return outcome;
}
