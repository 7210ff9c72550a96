// Structured output, tools and logprobs (issue 18) on the tiny models, with real model runs:
// JSON schemas and json_object replies validated with ajv, raw GBNF grammars, forced and named
// tool calls (through a Mistral-Nemo chat template, as the tiny models' own templates have no
// tools), streamed tool-call deltas, logprobs and logit bias, every kind of bad input, and
// grammars that could hurt llama.cpp.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { Ajv } from "ajv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM, type ChatMessage, type FunctionTool, type GenerateRequest, type GenerateResult, type StreamEvent } from "../src/index.js";
import { encodePng, ensureTestModel, testPattern, type TestModelFiles } from "../src/test-models/index.js";
import { ISOLATIONS, loader } from "./helpers/isolation.js";
import { rejection } from "./helpers/rejection.js";
import { WEATHER_TOOL } from "./helpers/tools.js";

const root = fileURLToPath(new URL("..", import.meta.url));
/** A template with tool calls ([TOOL_CALLS] marker); the tiny models' own templates have none. */
const NEMO_TEMPLATE = fs.readFileSync(path.join(root, "vendor/llama.cpp/models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja"), "utf8");

const greedy = { temperature: 0, seed: 42 } as const;
// Flash attention off, as in the parity tests: the same greedy output on every run.
const exact = { flashAttention: false } as const;
const ajv = new Ajv({ strict: true });
/** Enough for any reply the schemas below allow (bounded strings, bounded whitespace); they end much sooner. */
const JSON_BUDGET = 600;

const ITEM_SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 12 },
    count: { type: "integer", minimum: 0, maximum: 99 },
    tags: { type: "array", items: { type: "string", enum: ["a", "b", "c"] }, minItems: 1, maxItems: 3 },
  },
  required: ["name", "count", "tags"],
  additionalProperties: false,
};

/**
 * $defs/$ref, anyOf, const, a pattern, integer ranges and a boolean. No `type: "number"`:
 * llama.cpp's grammar ignores minimum/maximum on numbers and lets the exponent run to 16 digits
 * (58E472111111111111 parses as Infinity), so random weights write numbers no validator takes.
 */
const RICH_SCHEMA = {
  type: "object",
  properties: {
    id: { type: "string", pattern: "^[a-z]{2,4}-[0-9]{1,3}$" },
    kind: { $ref: "#/$defs/kind" },
    size: { anyOf: [{ type: "integer", minimum: 1, maximum: 5 }, { type: "null" }] },
    level: { type: "integer", minimum: -3, maximum: 120 },
    ok: { type: "boolean" },
    version: { const: 2 },
  },
  required: ["id", "kind", "size", "level", "ok", "version"],
  additionalProperties: false,
  $defs: { kind: { type: "string", enum: ["cat", "dog", "bird"] } },
};

const TOOLS: FunctionTool[] = [
  WEATHER_TOOL,
  {
    type: "function",
    function: {
      name: "count_objects",
      description: "Count the objects in the image",
      parameters: {
        type: "object",
        properties: { n: { type: "integer", minimum: 0, maximum: 9 }, what: { type: "string", enum: ["circles", "squares"] } },
        required: ["n", "what"],
        additionalProperties: false,
      },
    },
  },
];
const toolCalls = { ...greedy, maxTokens: 300, tools: TOOLS, parallelToolCalls: false } as const;

let tmp: string;
let image: string;
let png: Buffer;
let dataUrl: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-structured-"));
  png = encodePng(84, 84, testPattern(84, 84, 1));
  image = path.join(tmp, "image.png");
  fs.writeFileSync(image, png);
  dataUrl = `data:image/png;base64,${png.toString("base64")}`;
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function expectValid(schema: object, value: unknown): void {
  const validate = ajv.compile(schema);
  expect(validate(value), `${JSON.stringify(value)}: ${ajv.errorsText(validate.errors)}`).toBe(true);
}

/** Every event of a stream, and its result. */
async function collect(stream: { events(): AsyncIterable<StreamEvent>; result: Promise<GenerateResult> }): Promise<{ events: StreamEvent[]; result: GenerateResult }> {
  const events: StreamEvent[] = [];
  for await (const event of stream.events()) events.push(event);
  return { events, result: await stream.result };
}

const textOf = (events: StreamEvent[]) =>
  events
    .filter((e) => e.type === "text")
    .map((e) => e.text)
    .join("");

describe.each(ISOLATIONS)("isolation: %s", (isolation) => {
  const load = loader(isolation);

  describe.each(["qwen2vl-tiny", "gemma3-tiny"] as const)("JSON output and grammars on %s", (recipe) => {
    let lm: MultimodalLM;
    beforeAll(async () => {
      const files = await ensureTestModel(recipe);
      lm = await load({ model: files.model, mmproj: files.mmproj, ...exact });
    });
    afterAll(() => lm?.dispose());

    it.each([
      ["a flat schema", ITEM_SCHEMA],
      ["$ref, anyOf, const and a pattern", RICH_SCHEMA],
    ])("json_schema with %s: the reply parses and validates, with an image in the prompt", async (_, schema) => {
      const r = await lm.generate({ prompt: "Describe this image as JSON.", images: [image], ...greedy, maxTokens: JSON_BUDGET, responseFormat: { type: "json_schema", schema } });
      expect(r.stopReason).toBe("eos");
      expect(r.toolCalls).toEqual([]);
      expect(r.usage.mediaChunks).toBe(1);
      expectValid(schema, JSON.parse(r.text));
    });

    it("the OpenAI json_schema wrapper through chat() with a data: URL gives the same JSON as generate()", async () => {
      const plain = await lm.generate({ prompt: "Describe this image as JSON.", images: [image], ...greedy, maxTokens: JSON_BUDGET, responseFormat: { type: "json_schema", schema: ITEM_SCHEMA } });
      const chat = await lm.chat({
        messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: dataUrl } }, { type: "text", text: "Describe this image as JSON." }] }],
        ...greedy,
        maxTokens: JSON_BUDGET,
        responseFormat: { type: "json_schema", json_schema: { name: "item", schema: ITEM_SCHEMA, strict: true } },
      });
      expect(chat.text).toBe(plain.text);
      expect(chat.stopReason).toBe("eos");
      expectValid(ITEM_SCHEMA, JSON.parse(chat.text));
    });

    it("json_object with a schema validates; json_object alone is a JSON object", async () => {
      const withSchema = await lm.generate({ prompt: "Describe this image.", images: [image], ...greedy, maxTokens: JSON_BUDGET, responseFormat: { type: "json_object", schema: ITEM_SCHEMA } });
      expect(withSchema.stopReason).toBe("eos");
      expectValid(ITEM_SCHEMA, JSON.parse(withSchema.text));

      // Any object: random weights can write one long key forever, so try prompts until a reply
      // ends (one of these does on each tiny model); every reply that ended must be an object.
      let ended: GenerateResult | undefined;
      for (const prompt of ["Give JSON", "Summarize", "Data", "What is it?"]) {
        const r = await lm.generate({ prompt, images: [image], ...greedy, maxTokens: 200, responseFormat: { type: "json_object" } });
        expect(r.stopReason === "eos" || r.stopReason === "length").toBe(true);
        expect(r.text.startsWith("{"), r.text).toBe(true);
        if (r.stopReason === "eos") {
          ended = r;
          break;
        }
      }
      expect(ended, "no json_object reply ended within 200 tokens").toBeDefined();
      const value: unknown = JSON.parse(ended!.text);
      expectValid({ type: "object" }, value);
    });

    it("a reply cut short by maxTokens is 'length' (never eos or tool_calls), and a prefix of the whole reply", async () => {
      const request: GenerateRequest = { prompt: "Describe this image as JSON.", images: [image], ...greedy, responseFormat: { type: "json_schema", schema: ITEM_SCHEMA } };
      const whole = await lm.generate({ ...request, maxTokens: JSON_BUDGET });
      for (const maxTokens of [1, 5, 12]) {
        const { events, result } = await collect(lm.generateStream({ ...request, maxTokens }));
        expect(result.stopReason, `maxTokens ${maxTokens}`).toBe("length");
        expect(result.usage.completionTokens).toBe(maxTokens);
        expect(result.toolCalls).toEqual([]);
        expect(whole.text.startsWith(result.text), `${JSON.stringify(result.text)} is not a prefix of ${JSON.stringify(whole.text)}`).toBe(true);
        expect(textOf(events)).toBe(result.text);
      }
    });

    it("the streamed JSON text adds up to the result", async () => {
      const request: GenerateRequest = { prompt: "Describe this image as JSON.", images: [image], ...greedy, maxTokens: JSON_BUDGET, responseFormat: { type: "json_schema", schema: RICH_SCHEMA } };
      const { events, result } = await collect(lm.generateStream(request));
      expect(events.length).toBeGreaterThan(3);
      expect(textOf(events)).toBe(result.text);
      expect(result.text).toBe((await lm.generate(request)).text);
    });

    it("a raw GBNF grammar constrains the reply", async () => {
      const yesNo = await lm.generate({ prompt: "Is there a circle?", images: [image], ...greedy, maxTokens: 20, grammar: 'root ::= ("yes" | "no")' });
      expect(["yes", "no"]).toContain(yesNo.text);
      expect(yesNo.stopReason).toBe("eos");

      const grammar = 'root ::= [a-z]{2,4} "-" [0-9]{3} ("," " "? [a-z]+){0,2}';
      const { events, result } = await collect(lm.generateStream({ prompt: "Give a code.", ...greedy, maxTokens: 64, grammar }));
      expect(result.text).toMatch(/^[a-z]{2,4}-[0-9]{3}(, ?[a-z]+){0,2}$/);
      expect(textOf(events)).toBe(result.text);
    });

    it("raw: true with a responseFormat: the schema becomes a plain grammar", async () => {
      const r = await lm.generate({ prompt: "JSON:", raw: true, ...greedy, maxTokens: JSON_BUDGET, responseFormat: { type: "json_schema", schema: ITEM_SCHEMA } });
      expect(r.stopReason).toBe("eos");
      expectValid(ITEM_SCHEMA, JSON.parse(r.text));
      const grammar = await lm.generate({ prompt: "Answer:", raw: true, ...greedy, maxTokens: 10, grammar: 'root ::= "yes" | "no"' });
      expect(["yes", "no"]).toContain(grammar.text);
    });
  });

  describe.each(["qwen2vl-tiny", "gemma3-tiny"] as const)("tool calls on %s with the Mistral-Nemo template", (recipe) => {
    let lm: MultimodalLM;
    beforeAll(async () => {
      const files = await ensureTestModel(recipe);
      lm = await load({ model: files.model, mmproj: files.mmproj, ...exact, chatTemplate: NEMO_TEMPLATE });
    });
    afterAll(() => lm?.dispose());

    const paramsOf = (name: string) => TOOLS.find((t) => t.function.name === name)!.function.parameters as object;

    it('toolChoice "required" gives one call whose arguments validate, and stopReason "tool_calls"', async () => {
      const r = await lm.generate({ prompt: "What is the weather?", images: [image], ...toolCalls, toolChoice: "required" });
      expect(r.stopReason).toBe("tool_calls");
      expect(r.toolCalls).toHaveLength(1);
      const [call] = r.toolCalls;
      expect(call!.type).toBe("function");
      expect(call!.id).toMatch(/\S/);
      expect(TOOLS.map((t) => t.function.name)).toContain(call!.function.name);
      expectValid(paramsOf(call!.function.name), JSON.parse(call!.function.arguments));
      expect(r.text).toBe("");
    });

    it.each(["get_weather", "count_objects"])("a named tool (%s) is the one called", async (name) => {
      const r = await lm.generate({ prompt: "What is the weather?", images: [image], ...toolCalls, toolChoice: { type: "function", function: { name } } });
      expect(r.stopReason).toBe("tool_calls");
      expect(r.toolCalls.map((c) => c.function.name)).toEqual([name]);
      expectValid(paramsOf(name), JSON.parse(r.toolCalls[0]!.function.arguments));
    });

    it("streamed tool-call deltas add up to the final arguments, with the same id", async () => {
      const request: GenerateRequest = { prompt: "What is the weather?", images: [image], ...toolCalls, toolChoice: "required" };
      const { events, result } = await collect(lm.generateStream(request));
      const deltas = events.filter((e): e is Extract<StreamEvent, { type: "tool_call" }> => e.type === "tool_call");
      expect(deltas.length).toBeGreaterThan(1);
      expect(deltas.every((d) => d.index === 0)).toBe(true);
      // The first delta names the call; later ones only grow its arguments.
      expect(deltas[0]!.id).toBe(result.toolCalls[0]!.id);
      expect(deltas[0]!.name).toBe(result.toolCalls[0]!.function.name);
      expect(deltas.slice(1).every((d) => d.id === undefined && d.name === undefined)).toBe(true);
      expect(deltas.map((d) => d.arguments).join("")).toBe(result.toolCalls[0]!.function.arguments);
      expect(textOf(events)).toBe(result.text);
      expect(result.stopReason).toBe("tool_calls");
      // The same call as the non-streamed request (ids are new each time).
      const again = await lm.generate(request);
      expect(again.toolCalls.map((c) => c.function)).toEqual(result.toolCalls.map((c) => c.function));
    });

    it("a conversation with an image, an assistant tool_calls message and a tool result generates", async () => {
      // The Nemo template wants 9-character alphanumeric call ids.
      const messages: ChatMessage[] = [
        { role: "user", content: [{ type: "image_url", image_url: { url: dataUrl } }, { type: "text", text: "What is the weather where this was taken?" }] },
        { role: "assistant", content: null, tool_calls: [{ id: "call00001", type: "function", function: { name: "get_weather", arguments: { city: "Paris", unit: "c" } } }] },
        { role: "tool", tool_call_id: "call00001", content: '{"temperature": 21}' },
      ];
      const prompt = lm.formatChat(messages, { tools: TOOLS });
      expect(prompt).toContain(lm.marker);
      expect(prompt).toContain('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}, "id": "call00001"}]');
      expect(prompt).toContain('[TOOL_RESULTS]{"content": {"temperature": 21}, "call_id": "call00001"}[/TOOL_RESULTS]');

      const reply = await lm.chat({ messages, ...greedy, maxTokens: 16, tools: TOOLS });
      expect(reply.usage.completionTokens).toBeGreaterThan(0);
      expect(reply.usage.mediaChunks).toBe(1);
      expect(["eos", "length", "tool_calls"]).toContain(reply.stopReason);

      // And another call in the same conversation, streamed through chatStream.
      const { events, result } = await collect(lm.chatStream({ messages, ...toolCalls, toolChoice: "required" }));
      expect(result.stopReason).toBe("tool_calls");
      expect(result.toolCalls).toHaveLength(1);
      expectValid(paramsOf(result.toolCalls[0]!.function.name), JSON.parse(result.toolCalls[0]!.function.arguments));
      const deltas = events.filter((e) => e.type === "tool_call");
      expect(deltas.map((d) => d.arguments).join("")).toBe(result.toolCalls[0]!.function.arguments);
    });

    it('toolChoice "none" gives no calls', async () => {
      const r = await lm.generate({ prompt: "What is the weather?", images: [image], ...toolCalls, maxTokens: 24, toolChoice: "none" });
      expect(r.toolCalls).toEqual([]);
      expect(r.stopReason).not.toBe("tool_calls");
      expect(r.text.length).toBeGreaterThan(0);
    });

    it("a tool call cut short by maxTokens is 'length', never 'tool_calls'", async () => {
      for (const maxTokens of [1, 4, 10]) {
        const r = await lm.generate({ prompt: "What is the weather?", images: [image], ...toolCalls, maxTokens, toolChoice: "required" });
        expect(r.stopReason, `maxTokens ${maxTokens}`).toBe("length");
        expect(r.usage.completionTokens).toBe(maxTokens);
      }
    });
  });

  describe("one call on a template with only a per-call marker (Qwen2.5's <tool_call>)", () => {
    // llama.cpp's grammar for such templates admits any number of <tool_call> blocks, whatever
    // parallel_tool_calls says; with parallelToolCalls false the reply ends where a second would start.
    const QWEN25_TEMPLATE = fs.readFileSync(path.join(root, "vendor/llama.cpp/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja"), "utf8");
    let lm: MultimodalLM;
    beforeAll(async () => {
      const files = await ensureTestModel("qwen2vl-tiny");
      lm = await load({ model: files.model, mmproj: files.mmproj, ...exact, chatTemplate: QWEN25_TEMPLATE });
    });
    afterAll(() => lm?.dispose());

    it("parallelToolCalls false: exactly one call, stopReason tool_calls; allowed, the same weights make several", async () => {
      const ask = { prompt: "What is the weather?", images: [image], tools: [WEATHER_TOOL], toolChoice: "required" as const, ...greedy, maxTokens: 400 };
      const one = await lm.generate({ ...ask, parallelToolCalls: false });
      expect(one.stopReason).toBe("tool_calls");
      expect(one.toolCalls).toHaveLength(1);
      expectValid(WEATHER_TOOL.function.parameters as object, JSON.parse(one.toolCalls[0]!.function.arguments));
      const several = await lm.generate({ ...ask, parallelToolCalls: true });
      expect(several.toolCalls.length).toBeGreaterThan(1);
      expect(several.toolCalls[0]!.function).toEqual(one.toolCalls[0]!.function);
    });
  });

  describe("logprobs and logitBias on qwen2vl-tiny", () => {
    let lm: MultimodalLM;
    beforeAll(async () => {
      const files = await ensureTestModel("qwen2vl-tiny");
      lm = await load({ model: files.model, mmproj: files.mmproj, ...exact });
    });
    afterAll(() => lm?.dispose());

    const base = { prompt: "Tell me a story", images: [] as string[], ...greedy, maxTokens: 16 };

    it.each([1, 5, 20])("greedy: each token's logprob is the largest of its %i topLogprobs", async (n) => {
      const r = await lm.generate({ ...base, images: [image], logprobs: true, topLogprobs: n });
      expect(r.logprobs).toHaveLength(r.usage.completionTokens);
      for (const [i, t] of r.logprobs!.entries()) {
        expect(t.topLogprobs, `token ${i}`).toHaveLength(n);
        const best = Math.max(...t.topLogprobs.map((a) => a.logprob));
        expect(t.logprob, `token ${i} (${JSON.stringify(t.token)})`).toBeCloseTo(best, 6);
        expect(t.logprob).toBeLessThan(0);
        // Most likely first.
        for (let k = 1; k < n; k++) expect(t.topLogprobs[k]!.logprob).toBeLessThanOrEqual(t.topLogprobs[k - 1]!.logprob);
        expect(Buffer.from(t.token).equals(Buffer.from(t.bytes))).toBe(true);
      }
      // The tokens' bytes are the text.
      expect(Buffer.from(r.logprobs!.flatMap((t) => t.bytes)).toString("utf8")).toBe(r.text);
    });

    it("logprobs without topLogprobs has no alternatives; without logprobs there are none", async () => {
      const bare = await lm.generate({ ...base, logprobs: true });
      expect(bare.logprobs).toHaveLength(bare.usage.completionTokens);
      expect(bare.logprobs!.every((t) => t.topLogprobs.length === 0)).toBe(true);
      const none = await lm.generate(base);
      expect(none.logprobs).toBeUndefined();
      expect(none.text).toBe(bare.text);
    });

    it("the stream's logprobs events are the result's logprobs, one before each token's text", async () => {
      const { events, result } = await collect(lm.generateStream({ ...base, logprobs: true, topLogprobs: 3 }));
      const logprobs = events.filter((e) => e.type === "logprobs").map((e) => e.logprobs);
      expect(logprobs).toEqual(result.logprobs);
      expect(logprobs).toHaveLength(result.usage.completionTokens);
      expect(textOf(events)).toBe(result.text);
    });

    it("a +100 bias makes greedy output start with that token; -100 on the greedy first token changes it", async () => {
      const plain = await lm.generate({ ...base, logprobs: true, topLogprobs: 5 });
      const first = plain.logprobs![0]!;
      const idOf = (token: string) => {
        const ids = lm.tokenize(token);
        expect(ids, `"${token}" is one token`).toHaveLength(1);
        return ids[0]!;
      };
      // Banned: greedy takes the runner-up.
      const banned = await lm.generate({ ...base, logprobs: true, logitBias: { [idOf(first.token)]: -100 } });
      expect(banned.logprobs![0]!.token).not.toBe(first.token);
      expect(banned.logprobs![0]!.token).toBe(first.topLogprobs[1]!.token);
      // Forced: a token far down the list, or one that is not in it at all.
      for (const token of [first.topLogprobs[4]!.token, "d"]) {
        const forced = await lm.generate({ ...base, maxTokens: 4, logprobs: true, logitBias: { [idOf(token)]: 100 } });
        expect(forced.text.startsWith(token), JSON.stringify(forced.text)).toBe(true);
        expect(forced.logprobs![0]!.token).toBe(token);
      }
    });
  });

  describe("bad structured-output requests on qwen2vl-tiny", () => {
    let files: TestModelFiles;
    let lm: MultimodalLM;
    let withTools: MultimodalLM;
    beforeAll(async () => {
      files = await ensureTestModel("qwen2vl-tiny");
      lm = await load({ model: files.model, mmproj: files.mmproj, ...exact });
      withTools = await load({ model: files.model, mmproj: files.mmproj, ...exact, chatTemplate: NEMO_TEMPLATE });
    });
    afterAll(async () => {
      await lm?.dispose();
      await withTools?.dispose();
    });

    const probe: GenerateRequest = { prompt: "Describe this image.", images: [], ...greedy, maxTokens: 12 };
    const tool = (name: string, parameters: unknown = { type: "object", properties: {} }) => ({ type: "function", function: { name, parameters } }) as FunctionTool;

    /** [what, request, code, param, the model with the tool template] */
    type BadCase = [string, Record<string, unknown>, string, string | RegExp, boolean?];
    const cyclic: Record<string, unknown> = { type: "object", properties: {} };
    (cyclic.properties as Record<string, unknown>).self = cyclic;
    const schema = (s: unknown) => ({ responseFormat: { type: "json_schema", schema: s } });
    /** `vocabSize`: the first token id past the vocabulary. */
    const badCases = (vocabSize: number): BadCase[] => [
      ['type "strin"', schema({ type: "strin" }), "E_INVALID_SCHEMA", "responseFormat.schema.type"],
      ["a nested bad type, OpenAI wrapper", { responseFormat: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", properties: { a: { type: "strin" } } } } } }, "E_INVALID_SCHEMA", "responseFormat.json_schema.schema.properties.a.type"],
      ["minItems > maxItems", schema({ type: "array", minItems: 3, maxItems: 1 }), "E_INVALID_SCHEMA", "responseFormat.schema.minItems"],
      ["minLength > maxLength", schema({ type: "string", minLength: 5, maxLength: 2 }), "E_INVALID_SCHEMA", "responseFormat.schema.minLength"],
      ["an invalid pattern", schema({ type: "string", pattern: "([a-z" }), "E_INVALID_SCHEMA", "responseFormat.schema.pattern"],
      ["an unresolvable $ref", schema({ type: "object", properties: { a: { $ref: "#/$defs/missing" } } }), "E_INVALID_SCHEMA", "responseFormat.schema"],
      ["a remote $ref", schema({ $ref: "https://example.com/schema.json" }), "E_INVALID_SCHEMA", "responseFormat.schema"],
      ["an empty enum", schema({ enum: [] }), "E_INVALID_SCHEMA", "responseFormat.schema.enum"],
      ["a non-object schema", schema("string"), "E_INVALID_SCHEMA", "responseFormat.schema"],
      ["a number as schema", { responseFormat: { type: "json_object", schema: 42 } }, "E_INVALID_SCHEMA", "responseFormat.schema"],
      ["a cyclic JS object", schema(cyclic), "E_INVALID_SCHEMA", /^responseFormat\.schema\.properties\.self/],
      ["json_schema without a schema", { responseFormat: { type: "json_schema" } }, "E_INVALID_ARGUMENT", "responseFormat.schema"],
      ["an unknown responseFormat type", { responseFormat: { type: "xml" } }, "E_INVALID_ARGUMENT", "responseFormat.type"],
      ["a grammar with an undefined rule", { grammar: "root ::= item" }, "E_INVALID_GRAMMAR", "grammar"],
      ["a grammar syntax error", { grammar: 'root ::= ("yes" | "no"' }, "E_INVALID_GRAMMAR", "grammar"],
      ["a grammar without root", { grammar: 'answer ::= "yes"' }, "E_INVALID_GRAMMAR", "grammar"],
      ["an empty grammar", { grammar: "" }, "E_INVALID_ARGUMENT", "grammar"],
      ["a blank grammar", { grammar: " \n " }, "E_INVALID_ARGUMENT", "grammar"],
      ["a grammar that is not a string", { grammar: 42 }, "E_INVALID_ARGUMENT", "grammar"],
      ["grammar and responseFormat", { grammar: 'root ::= "a"', responseFormat: { type: "json_object" } }, "E_INVALID_ARGUMENT", "grammar"],
      ["a bad tool name", { tools: [tool("get weather!")] }, "E_INVALID_ARGUMENT", "tools[0].function.name", true],
      ["a duplicate tool name", { tools: [tool("a"), tool("b"), tool("a")] }, "E_INVALID_ARGUMENT", "tools[2].function.name", true],
      ["a non-function tool", { tools: [{ type: "retrieval", function: { name: "a" } }] }, "E_INVALID_ARGUMENT", "tools[0]", true],
      ["tools not an array", { tools: { type: "function" } }, "E_INVALID_ARGUMENT", "tools", true],
      ["a bad parameters schema", { tools: [tool("a", { type: "object", properties: { x: { type: "objekt" } } })] }, "E_INVALID_SCHEMA", "tools[0].function.parameters.properties.x.type", true],
      ["parameters that are not a schema", { tools: [tool("a", "x")] }, "E_INVALID_SCHEMA", "tools[0].function.parameters", true],
      ["toolChoice naming a missing tool", { tools: [tool("a")], toolChoice: { type: "function", function: { name: "b" } } }, "E_INVALID_ARGUMENT", "toolChoice.function.name", true],
      ["an unknown toolChoice", { tools: [tool("a")], toolChoice: "always" }, "E_INVALID_ARGUMENT", "toolChoice", true],
      ['toolChoice "required" without tools', { toolChoice: "required" }, "E_INVALID_ARGUMENT", "toolChoice", true],
      ["parallelToolCalls not a boolean", { tools: [tool("a")], parallelToolCalls: "yes" }, "E_INVALID_ARGUMENT", "parallelToolCalls", true],
      ["tools and a grammar", { tools: [tool("a")], grammar: 'root ::= "a"' }, "E_INVALID_ARGUMENT", "grammar", true],
      ["tools and a JSON responseFormat", { tools: [tool("a")], responseFormat: { type: "json_object" } }, "E_INVALID_ARGUMENT", "responseFormat", true],
      ["tools with raw: true", { tools: [tool("a")], raw: true }, "E_INVALID_ARGUMENT", "tools", true],
      ["tools on the built-in template", { tools: [tool("a")] }, "E_TOOLS_UNSUPPORTED", "tools"],
      ["a required call on the built-in template", { tools: [tool("a")], toolChoice: "required" }, "E_TOOLS_UNSUPPORTED", "tools"],
      ["topLogprobs 21", { logprobs: true, topLogprobs: 21 }, "E_INVALID_ARGUMENT", "topLogprobs"],
      ["topLogprobs -1", { logprobs: true, topLogprobs: -1 }, "E_INVALID_ARGUMENT", "topLogprobs"],
      ["topLogprobs without logprobs", { topLogprobs: 3 }, "E_INVALID_ARGUMENT", "topLogprobs"],
      ["a logitBias token id = vocabSize", { logitBias: { [vocabSize]: 5 } }, "E_INVALID_ARGUMENT", `logitBias[${vocabSize}]`],
      ["a logitBias token id far beyond the vocabulary", { logitBias: { 4000000000: 5 } }, "E_INVALID_ARGUMENT", "logitBias[4000000000]"],
      ["a logitBias of 1000", { logitBias: { 5: 1000 } }, "E_INVALID_ARGUMENT", "logitBias[5]"],
      ["a NaN logitBias", { logitBias: { 5: NaN } }, "E_INVALID_ARGUMENT", "logitBias[5]"],
      ["a negative logitBias key", { logitBias: { "-1": 5 } }, "E_INVALID_ARGUMENT", "logitBias[-1]"],
    ];

    it(`${badCases(0).length} bad requests reject with their code and param; the model answers as before`, async () => {
      const cases = badCases(lm.info.vocabSize);
      const before = (await lm.generate({ ...probe, images: [image] })).text;
      const beforeTools = (await withTools.generate({ ...probe, images: [image] })).text;
      for (const [what, request, code, param, tools] of cases) {
        const model = tools ? withTools : lm;
        const error = await rejection(model.generate({ ...probe, ...request } as GenerateRequest));
        expect(error.code, `${what}: ${error.message}`).toBe(code);
        if (typeof param === "string") expect(error.param, what).toBe(param);
        else expect(error.param, what).toMatch(param);
        expect(error.message.length, what).toBeGreaterThan(10);
      }
      // chat(), the streams and formatChat check the same way.
      const messages: ChatMessage[] = [{ role: "user", content: "Hello" }];
      expect((await rejection(lm.chat({ messages, tools: [tool("a")] }))).code).toBe("E_TOOLS_UNSUPPORTED");
      expect((await rejection(lm.chatStream({ messages, grammar: "root ::= item" }).result)).code).toBe("E_INVALID_GRAMMAR");
      const stream = lm.generateStream({ ...probe, responseFormat: { type: "json_schema", schema: { type: "strin" } } });
      expect((await rejection((async () => { for await (const _ of stream.events()); })())).code).toBe("E_INVALID_SCHEMA");
      expect(() => lm.formatChat(messages, { toolChoice: "required" })).toThrow(/toolChoice/);
      expect((await lm.generate({ ...probe, images: [image] })).text).toBe(before);
      expect((await withTools.generate({ ...probe, images: [image] })).text).toBe(beforeTools);
    });

    it("tools with toolChoice none on the built-in template are accepted (no calls to render)", async () => {
      const r = await lm.generate({ ...probe, tools: [tool("a")], toolChoice: "none" });
      expect(r.toolCalls).toEqual([]);
      expect(r.usage.completionTokens).toBe(12);
    });

    it("a left-recursive grammar is refused before it reaches the sampler", async () => {
      for (const grammar of ['root ::= root "a"', 'root ::= x\nx ::= y "b"\ny ::= x | "c"']) {
        const error = await rejection(lm.generate({ ...probe, grammar }));
        expect(error, grammar).toMatchObject({ code: "E_INVALID_GRAMMAR", param: "grammar" });
        expect(error.message).toMatch(/left recursion/);
      }
      expect((await rejection(lm.generate({ ...probe, grammar: 'answer ::= "yes"' }))).message).toMatch(/'root'/);
    });

    it("a grammar that cannot end stops at maxTokens with 'length', or at a full context", async () => {
      const r = await lm.generate({ ...probe, maxTokens: 40, grammar: 'root ::= "a" root' });
      expect(r.stopReason).toBe("length");
      expect(r.usage.completionTokens).toBe(40);
      expect(r.text).toMatch(/^a+$/);
      const streamed = await collect(lm.generateStream({ ...probe, maxTokens: 40, grammar: 'root ::= "a" root' }));
      expect(textOf(streamed.events)).toBe(r.text);
      // Without maxTokens it runs until the context is full.
      await using small = await load({ model: files.model, mmproj: files.mmproj, ...exact, contextSize: 256, parallel: 1 });
      const full = await small.generate({ prompt: "Hello", ...greedy, grammar: 'root ::= "a" root' });
      expect(full.stopReason).toBe("context");
      expect(full.text).toMatch(/^a+$/);
    });

    it("a huge repetition: {0,100000} runs (llama.cpp makes it unbounded), a minimum of 100000 is refused", async () => {
      const r = await lm.generate({ ...probe, maxTokens: 50, ignoreEos: true, grammar: 'root ::= "a"{0,100000}' });
      expect(r.stopReason).toBe("length");
      expect(r.text).toMatch(/^a+$/);
      const bounded = await lm.generate({ ...probe, maxTokens: 50, ignoreEos: true, grammar: "root ::= [a-z]{5,100000}" });
      expect(bounded.stopReason).toBe("length");
      expect(bounded.text).toMatch(/^[a-z]+$/);
      for (const grammar of ['root ::= "a"{100000}', 'root ::= ("a"{0,1000}){0,1000}']) {
        expect(await rejection(lm.generate({ ...probe, grammar })), grammar).toMatchObject({ code: "E_INVALID_GRAMMAR", param: "grammar" });
      }
    });

    it("a grammar that leaves no token to sample fails the request, not the process", async () => {
      // After "a" only end-of-generation is left, and ignoreEos bans it; <[99999]> is no token at all.
      for (const request of [
        { grammar: 'root ::= "a"', ignoreEos: true },
        { grammar: "root ::= <[99999]>" },
        { grammar: "root ::= <[99999]>", temperature: 0.8 },
      ]) {
        const error = await rejection(lm.generate({ ...probe, ...request }));
        expect(error.code, JSON.stringify(request)).toBe("E_INVALID_GRAMMAR");
        expect(error.param).toBe("grammar");
      }
      expect((await lm.generate({ ...probe, maxTokens: 5, grammar: 'root ::= ""' })).text).toBe("");
      expect((await lm.generate({ ...probe, maxTokens: 4 })).usage.completionTokens).toBe(4);
    });

    it("grammars nested up to 1000 groups deep run; deeper ones are refused before llama.cpp parses them", async () => {
      const nested = (depth: number) => "root ::= " + "(".repeat(depth) + '"a"' + ")".repeat(depth);
      expect((await lm.generate({ ...probe, maxTokens: 3, grammar: nested(1000) })).text).toBe("a");
      const error = await rejection(lm.generate({ ...probe, grammar: nested(1001) }));
      expect(error).toMatchObject({ code: "E_INVALID_GRAMMAR", param: "grammar" });
      expect(error.message).toMatch(/nests groups 1001 deep; at most 1000/);
      // Parentheses inside strings and character classes are not groups.
      expect((await lm.generate({ ...probe, maxTokens: 3, grammar: 'root ::= "' + "(".repeat(2000) + '" | [(]' })).text).toMatch(/^\(/);
    });

    // Run in a child process: llama.cpp's recursive grammar parser overflows the stack on deep
    // nesting (SIGSEGV, llama-server too); such grammars are refused before it sees them.
    it("a grammar nested 20000 groups deep is refused or run, without crashing the process", () => {
      const script = path.join(tmp, "deep-grammar.mts");
      fs.writeFileSync(
        script,
        `import { MultimodalLM } from ${JSON.stringify(pathToFileURL(path.join(root, "src/index.ts")).href)};
  const lm = await MultimodalLM.load({ isolation: ${JSON.stringify(isolation)}, model: process.env.MODEL, mmproj: process.env.MMPROJ, logLevel: "error" });
  const depth = 20000;
  const grammar = "root ::= " + "(".repeat(depth) + '"a"' + ")".repeat(depth);
  let outcome;
  try {
    const r = await lm.generate({ prompt: "Hello", temperature: 0, maxTokens: 3, grammar });
    outcome = { text: r.text };
  } catch (e) {
    outcome = { code: e.code, param: e.param };
  }
  await lm.dispose();
  console.log(JSON.stringify(outcome));
  `,
      );
      const child = spawnSync(process.execPath, ["--import", "tsx", script], {
        cwd: root,
        encoding: "utf8",
        timeout: 120_000,
        env: { ...process.env, MODEL: files.model, MMPROJ: files.mmproj },
      });
      expect({ status: child.status, signal: child.signal }, child.stderr.slice(-2000)).toEqual({ status: 0, signal: null });
      const outcome = JSON.parse(child.stdout.trim().split("\n").at(-1)!) as { text?: string; code?: string; param?: string };
      if (outcome.code !== undefined) expect(outcome).toEqual({ code: "E_INVALID_GRAMMAR", param: "grammar" });
      else expect(outcome.text).toBe("a");
    });
  });
});
