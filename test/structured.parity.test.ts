// Structured output, tool calls and logprobs of MultimodalLM against llama-server built from the
// same llama.cpp tree (build/bin/llama-server, from `npm run build:reference`): the same request
// under greedy sampling must give the same JSON, the same call and the same log-probabilities.
// Both sides run with flash attention off and the same context size.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM, type ChatMessage, type FunctionTool } from "../src/index.js";
import { encodePng, ensureTestModel, testPattern, type TestModelFiles } from "../src/test-models/index.js";
import { llamaServerPath, startLlamaServer, type LlamaServer } from "./helpers/llama-server.js";
import { WEATHER_TOOL } from "./helpers/tools.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const NEMO_TEMPLATE_FILE = path.join(root, "vendor/llama.cpp/models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja");
const CONTEXT = 4096;
const SEED = 42;

const haveServer = fs.existsSync(llamaServerPath());
if (!haveServer) {
  console.warn(`structured.parity.test.ts: skipped, ${llamaServerPath()} is missing (npm run build:reference builds it).`);
}

const SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 12 },
    count: { type: "integer", minimum: 0, maximum: 99 },
    kind: { $ref: "#/$defs/kind" },
    tags: { type: "array", items: { type: "string", enum: ["a", "b", "c"] }, minItems: 1, maxItems: 3 },
  },
  required: ["name", "count", "kind", "tags"],
  additionalProperties: false,
  $defs: { kind: { anyOf: [{ type: "string", enum: ["cat", "dog"] }, { type: "null" }] } },
};

const TOOLS: FunctionTool[] = [
  WEATHER_TOOL,
  {
    type: "function",
    function: {
      name: "count_objects",
      description: "Count the objects in the image",
      parameters: { type: "object", properties: { n: { type: "integer", minimum: 0, maximum: 9 } }, required: ["n"], additionalProperties: false },
    },
  },
];

const dataUrl = `data:image/png;base64,${encodePng(84, 84, testPattern(84, 84, 1)).toString("base64")}`;
const imageMessages = (text: string): ChatMessage[] => [
  { role: "user", content: [{ type: "image_url", image_url: { url: dataUrl } }, { type: "text", text }] },
];

interface ServerChoice {
  finish_reason: string;
  message: { content: string | null; tool_calls?: Array<{ function: { name: string; arguments: string } }> };
  logprobs?: { content: Array<{ token: string; logprob: number; top_logprobs: Array<{ token: string; logprob: number }> }> };
}

/** The first choice of a /v1/chat/completions answer; fails the test on an error answer. */
async function complete(server: LlamaServer, body: Record<string, unknown>): Promise<ServerChoice> {
  const { status, json } = await server.post("/v1/chat/completions", { seed: SEED, temperature: 0, ...body });
  expect(status, JSON.stringify(json).slice(0, 2000)).toBe(200);
  return (json as { choices: ServerChoice[] }).choices[0]!;
}

const serverArgs = (files: TestModelFiles, extra: string[] = []) => [
  "-m",
  files.model,
  "--mmproj",
  files.mmproj,
  "-c",
  String(CONTEXT),
  "-np",
  "1",
  "--jinja",
  "--no-webui",
  "-fa",
  "off",
  ...extra,
];

describe.skipIf(!haveServer).each(["qwen2vl-tiny", "gemma3-tiny"] as const)("structured output parity with llama-server: %s", (recipe) => {
  let files: TestModelFiles;
  let server: LlamaServer;
  let lm: MultimodalLM;
  beforeAll(async () => {
    files = await ensureTestModel(recipe);
    [server, lm] = await Promise.all([
      startLlamaServer(serverArgs(files)),
      MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: CONTEXT, flashAttention: false }),
    ]);
  });
  afterAll(async () => {
    await lm?.dispose();
    await server?.stop();
  });

  it.each([300, 10])("json_schema with an image, max_tokens %i: the same content", async (maxTokens) => {
    const messages = imageMessages("Describe this image as JSON.");
    const ref = await complete(server, {
      messages,
      max_tokens: maxTokens,
      response_format: { type: "json_schema", json_schema: { name: "item", schema: SCHEMA, strict: true } },
    });
    const ours = await lm.chat({ messages, temperature: 0, seed: SEED, maxTokens, responseFormat: { type: "json_schema", schema: SCHEMA } });
    expect(ours.text).toBe(ref.message.content);
    expect(ours.stopReason).toBe(ref.finish_reason === "stop" ? "eos" : ref.finish_reason);
    if (maxTokens === 300) {
      expect(ours.stopReason).toBe("eos");
      expect(() => JSON.parse(ours.text) as unknown).not.toThrow();
    } else {
      expect(ours.stopReason).toBe("length");
    }
  });

  it("a raw GBNF grammar: the same content", async () => {
    const messages = imageMessages("Give a code.");
    const grammar = 'root ::= [a-z]{2,6} "-" [0-9]{1,4} (" " [a-z]+){0,3}';
    const ref = await complete(server, { messages, max_tokens: 64, grammar });
    const ours = await lm.chat({ messages, temperature: 0, seed: SEED, maxTokens: 64, grammar });
    expect(ours.text).toBe(ref.message.content);
    expect(ours.text).toMatch(/^[a-z]{2,6}-[0-9]{1,4}( [a-z]+){0,3}$/);
  });

  // Compared by token position over the tokens both report; gemma3-tiny's greedy tokens can be
  // incomplete UTF-8, for which llama-server leaves logprobs out, so only qwen2vl-tiny.
  it.runIf(recipe === "qwen2vl-tiny")("logprobs and top_logprobs 5 of a text prompt agree within 1e-3", async () => {
    const messages: ChatMessage[] = [{ role: "user", content: "Tell me a story" }];
    const n = 16;
    const ref = await complete(server, { messages, max_tokens: n, logprobs: true, top_logprobs: 5 });
    const ours = await lm.chat({ messages, temperature: 0, seed: SEED, maxTokens: n, logprobs: true, topLogprobs: 5 });
    expect(ours.text).toBe(ref.message.content);
    const theirs = ref.logprobs!.content;
    const mine = ours.logprobs!;
    const common = Math.min(theirs.length, mine.length);
    expect(common).toBeGreaterThanOrEqual(n - 1);
    for (let i = 0; i < common; i++) {
      const [a, b] = [mine[i]!, theirs[i]!];
      expect(a.token, `token ${i}`).toBe(b.token);
      expect(Math.abs(a.logprob - b.logprob), `token ${i} (${JSON.stringify(a.token)}): ${a.logprob} vs ${b.logprob}`).toBeLessThan(1e-3);
      expect(a.topLogprobs).toHaveLength(5);
      expect(b.top_logprobs).toHaveLength(5);
      for (let k = 0; k < 5; k++) {
        const [x, y] = [a.topLogprobs[k]!, b.top_logprobs[k]!];
        expect(Math.abs(x.logprob - y.logprob), `token ${i}, alternative ${k}: ${x.logprob} vs ${y.logprob}`).toBeLessThan(1e-3);
        // Near-ties may come in another order; apart from those the alternatives are the same tokens.
        const tied = (k > 0 && Math.abs(a.topLogprobs[k - 1]!.logprob - x.logprob) < 1e-3) || (k < 4 && Math.abs(a.topLogprobs[k + 1]!.logprob - x.logprob) < 1e-3);
        if (!tied) expect(x.token, `token ${i}, alternative ${k}`).toBe(y.token);
      }
    }
  });
});

describe.skipIf(!haveServer).each(["qwen2vl-tiny", "gemma3-tiny"] as const)("forced tool call parity with llama-server: %s (Mistral-Nemo template)", (recipe) => {
  let server: LlamaServer;
  let lm: MultimodalLM;
  beforeAll(async () => {
    const files = await ensureTestModel(recipe);
    [server, lm] = await Promise.all([
      startLlamaServer(serverArgs(files, ["--chat-template-file", NEMO_TEMPLATE_FILE])),
      MultimodalLM.load({
        model: files.model,
        mmproj: files.mmproj,
        contextSize: CONTEXT,
        flashAttention: false,
        chatTemplate: fs.readFileSync(NEMO_TEMPLATE_FILE, "utf8"),
      }),
    ]);
  });
  afterAll(async () => {
    await lm?.dispose();
    await server?.stop();
  });

  it('toolChoice "required" = llama-server continuing an assistant "[TOOL_CALLS]" prefill: the same name and arguments', async () => {
    const messages = imageMessages("What is the weather?");
    // llama-server continues a final assistant message: what our prefill of the marker does.
    const ref = await complete(server, {
      messages: [...messages, { role: "assistant", content: "[TOOL_CALLS]" }],
      tools: TOOLS,
      tool_choice: "required",
      parallel_tool_calls: false,
      max_tokens: 300,
    });
    const ours = await lm.chat({ messages, tools: TOOLS, toolChoice: "required", parallelToolCalls: false, temperature: 0, seed: SEED, maxTokens: 300 });
    expect(ref.finish_reason).toBe("tool_calls");
    expect(ours.stopReason).toBe("tool_calls");
    expect(ref.message.tool_calls).toHaveLength(1);
    expect(ours.toolCalls.map((c) => c.function)).toEqual(ref.message.tool_calls!.map((c) => ({ name: c.function.name, arguments: c.function.arguments })));
    expect(ours.text).toBe(ref.message.content ?? "");
  });
});
