// POST /v1/chat/completions: the messages as sent to MultimodalLM.chat, with the media policy as
// its resolveMedia hook, answered as one JSON object or as server-sent events ending in [DONE],
// in OpenAI's shapes (content, tool_calls, logprobs).
import type { ServerResponse } from "node:http";

import { decodeDataUrl } from "../media/data-url.js";
import type { MediaResolver, ToolCall } from "../messages.js";
import type { ChatRequest, GenerateResult, MultimodalLM, StopReason } from "../multimodal-lm.js";
import type { TokenLogprob } from "../structured.js";
import { toOpenAIError, type ChatCompletionRequest } from "./chat-request.js";
import { toHttpFailure } from "./http-errors.js";
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

/** One token's entry of OpenAI's `logprobs.content`. */
function logprobEntry(entry: TokenLogprob) {
  return {
    token: entry.token,
    logprob: entry.logprob,
    bytes: entry.bytes,
    top_logprobs: entry.topLogprobs.map((top) => ({ token: top.token, logprob: top.logprob, bytes: top.bytes })),
  };
}

function logprobsOf(entries: TokenLogprob[]) {
  return { content: entries.map(logprobEntry), refusal: null };
}

function toolCallsOf(calls: ToolCall[]) {
  return calls.map((call) => ({ id: call.id, type: "function" as const, function: { name: call.function.name, arguments: call.function.arguments } }));
}

/**
 * The media policy as MultimodalLM.chat's resolveMedia hook: each reference is checked and
 * fetched (a data: URL decoded here, so a bad payload is reported with its part); the library
 * names the part in any error. One failure stops the other downloads.
 */
function mediaResolver(access: MediaAccess, controller: AbortController): MediaResolver {
  return async (ref, signal) => {
    const combined = signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
    try {
      // chat-request.ts let only strings through as media references.
      const resolved = await access.resolve(ref.input as string, ref.type, combined);
      return typeof resolved === "string" && /^data:/i.test(resolved) ? decodeDataUrl(resolved, ref.type).bytes : resolved;
    } catch (error) {
      controller.abort();
      throw error;
    }
  };
}

function sse(res: ServerResponse, data: unknown): void {
  res.write(`data: ${JSON.stringify(data)}\n\n`);
}

/**
 * Runs one completion and writes the answer. Input errors found before the first token (bad
 * options, media, context overflow) are answered with their HTTP status even when streaming,
 * since the event stream only starts with the first event.
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
  // One controller for the media downloads: a failed one stops the others.
  const downloads = new AbortController();
  const chatRequest: ChatRequest = {
    messages: request.messages,
    ...request.sampling,
    ...request.structured,
    resolveMedia: mediaResolver(access, downloads),
    image: request.image,
    video: request.video,
    signal,
  };
  try {
    if (!request.stream) {
      const result = await lm.chat(chatRequest);
      recordResult(outcome, result);
      const calls = result.toolCalls.length > 0 ? toolCallsOf(result.toolCalls) : undefined;
      const body = {
        id,
        object: "chat.completion",
        created,
        model: modelName,
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: calls && result.text === "" ? null : result.text, ...(calls ? { tool_calls: calls } : {}), refusal: null },
            logprobs: result.logprobs ? logprobsOf(result.logprobs) : null,
            finish_reason: FINISH_REASON[result.stopReason],
          },
        ],
        usage: usageOf(result),
      };
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
      return outcome;
    }
    return await streamCompletion(lm, chatRequest, request, { id, created, modelName }, res, outcome);
  } catch (error) {
    throw toOpenAIError(error, request.paramNames);
  } finally {
    downloads.abort();
  }
}

async function streamCompletion(
  lm: MultimodalLM,
  chatRequest: ChatRequest,
  request: ChatCompletionRequest,
  { id, created, modelName }: { id: string; created: number; modelName: string },
  res: ServerResponse,
  outcome: CompletionOutcome,
): Promise<CompletionOutcome> {
  // Token logprobs come before the text they make (which a JSON or tool-call parse may hold
  // back): they ride on the next chunk, as OpenAI's do.
  let pending: TokenLogprob[] = [];
  const chunk = (delta: Record<string, unknown>, finishReason: string | null) => {
    const logprobs = pending.length > 0 ? logprobsOf(pending) : null;
    pending = [];
    return {
      id,
      object: "chat.completion.chunk",
      created,
      model: modelName,
      choices: [{ index: 0, delta, logprobs, finish_reason: finishReason }],
      ...(request.includeUsage ? { usage: null } : {}),
    };
  };
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no" });
    sse(res, chunk({ role: "assistant", content: "" }, null));
  };
  const stream = lm.chatStream(chatRequest);
  try {
    for await (const event of stream.events()) {
      start();
      if (event.type === "logprobs") {
        pending.push(event.logprobs);
      } else if (event.type === "text") {
        sse(res, chunk({ content: event.text }, null));
      } else if (event.name !== undefined) {
        // A call's first event: its id and name, and the arguments so far.
        const call = { index: event.index, id: event.id, type: "function", function: { name: event.name, arguments: event.arguments } };
        sse(res, chunk({ tool_calls: [call] }, null));
      } else {
        sse(res, chunk({ tool_calls: [{ index: event.index, function: { arguments: event.arguments } }] }, null));
      }
    }
    const result = await stream.result;
    recordResult(outcome, result);
    start();
    if (pending.length > 0) sse(res, chunk({}, null));
    sse(res, chunk({}, FINISH_REASON[result.stopReason]));
    if (request.includeUsage) sse(res, { id, object: "chat.completion.chunk", created, model: modelName, choices: [], usage: usageOf(result) });
    res.end("data: [DONE]\n\n");
  } catch (error) {
    if (!started) throw error;
    // Headers are gone: report the failure as an error event, as OpenAI does, and end the stream.
    if (!res.destroyed) {
      sse(res, toHttpFailure(toOpenAIError(error, request.paramNames)).body);
      res.end("data: [DONE]\n\n");
    }
    throw error;
  }
  return outcome;
}
