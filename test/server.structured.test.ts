// Structured output, tool calls and logprobs over HTTP, driven by the real `openai` client:
// zod schemas through chat.completions.parse (every reply checked with ajv against the schema
// the request sent), forced and named tool calls (streamed and not), the client's tool runner,
// OpenAI's logprobs shape, and bad schemas, grammars and tools answered 400 with a typed code
// and the field at fault. Both tiny models run with the Mistral-Nemo chat template, which can
// render tool calls (their own templates cannot), and an image in every prompt.
import fs from "node:fs";
import path from "node:path";

import { Ajv, type ValidateFunction } from "ajv";
import OpenAI from "openai";
import { LengthFinishReasonError } from "openai/error";
import { zodResponseFormat } from "openai/helpers/zod";
import type { ParsedChatCompletion } from "openai/resources/chat/completions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";

import { MultimodalLM, startServer, type RunningServer } from "../src/index.js";
import { ensureTestModel } from "../src/test-models/index.js";

const root = path.resolve(import.meta.dirname, "..");
const MISTRAL_NEMO = fs.readFileSync(path.join(root, "vendor", "llama.cpp", "models", "templates", "mistralai-Mistral-Nemo-Instruct-2407.jinja"), "utf8");
const pngDataUrl = `data:image/png;base64,${fs.readFileSync(path.join(root, "assets", "sample.png")).toString("base64")}`;
const MODELS = ["qwen2vl-tiny", "gemma3-tiny"] as const;
type ModelName = (typeof MODELS)[number];

interface Served {
  lm: MultimodalLM;
  server: RunningServer;
  client: OpenAI;
}

const served = {} as Record<ModelName, Served>;
/** qwen2vl-tiny with its own chat template, which cannot render tools. */
let plain: Served;

async function serve(name: ModelName, chatTemplate?: string): Promise<Served> {
  const files = await ensureTestModel(name);
  const lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: 4096, ...(chatTemplate ? { chatTemplate } : {}) });
  const server = await startServer(lm, { port: 0 });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "not-needed", maxRetries: 0 });
  return { lm, server, client };
}

beforeAll(async () => {
  for (const name of MODELS) served[name] = await serve(name, MISTRAL_NEMO);
  plain = await serve("qwen2vl-tiny");
}, 600_000);

afterAll(async () => {
  for (const s of [...Object.values(served), plain]) {
    await s?.server.close();
    await s?.lm.dispose();
  }
});

const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });

/** A user turn with the sample image and a question. */
function ask(text: string): OpenAI.Chat.ChatCompletionMessageParam[] {
  return [
    {
      role: "user",
      content: [
        { type: "image_url", image_url: { url: pngDataUrl } },
        { type: "text", text },
      ],
    },
  ];
}

// Bounded everywhere: random weights never stop inside an unbounded string or number, so every
// string has a maxLength, a pattern, an enum or a const, and every number is an integer range.
const short = (n = 8) => z.string().max(n);
const digit = z.int().min(0).max(9);

const SCHEMAS: Array<[string, z.ZodObject]> = [
  ["flat", z.object({ name: short(), age: z.int().min(0).max(120), active: z.boolean() })],
  ["enum", z.object({ color: z.enum(["red", "green", "blue"]) })],
  ["int_array", z.object({ values: z.array(digit).min(1).max(5) })],
  ["nested", z.object({ person: z.object({ name: short(6), address: z.object({ city: short(), zip: z.string().regex(/^[0-9]{5}$/) }) }) })],
  ["nullable", z.object({ nickname: short(5).nullable(), score: digit.nullable() })],
  ["optional", z.object({ title: short(6), subtitle: short(6).optional().nullable(), rank: z.int().min(1).max(3).optional().nullable() })],
  ["code_pattern", z.object({ code: z.string().regex(/^[A-Z]{3}-[0-9]{2}$/) })],
  ["enum_array", z.object({ tags: z.array(z.enum(["a", "b", "c", "d"])).min(2).max(4) })],
  [
    "discriminated",
    z.object({
      shape: z.discriminatedUnion("kind", [z.object({ kind: z.literal("circle"), radius: z.int().min(1).max(9) }), z.object({ kind: z.literal("square"), side: z.int().min(1).max(9) })]),
    }),
  ],
  ["const_and_enum", z.object({ version: z.literal(1), status: z.enum(["ok", "error", "pending"]) })],
  ["object_array", z.object({ items: z.array(z.object({ id: z.int().min(1).max(99), tag: z.enum(["x", "y"]) })).min(1).max(3) })],
  ["matrix", z.object({ matrix: z.array(z.array(digit).min(1).max(2)).min(1).max(2) })],
  ["flags", z.object({ a: z.boolean(), b: z.boolean(), c: z.boolean(), d: z.boolean() })],
  ["exact_length", z.object({ pin: z.string().length(4) })],
  ["hex_colour", z.object({ colour: z.string().regex(/^#[0-9a-f]{6}$/) })],
  ["negative_range", z.object({ delta: z.int().min(-50).max(-1) })],
  ["date", z.object({ day: z.string().regex(/^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])$/) })],
  ["uuid", z.object({ id: z.uuid() })],
  ["string_or_int", z.object({ value: z.union([short(4), digit]) })],
  ["deep", z.object({ a: z.object({ b: z.object({ c: z.object({ d: digit }) }) }) })],
  ["nullable_object", z.object({ owner: z.object({ name: short(5) }).nullable() })],
  ["pair", z.object({ pair: z.array(z.boolean()).min(2).max(2) })],
  ["number_literals", z.object({ level: z.union([z.literal(1), z.literal(2), z.literal(3)]) })],
  [
    "many_fields",
    z.object({ a: short(3), b: digit, c: z.boolean(), d: z.enum(["p", "q"]), e: z.int().min(10).max(20), f: short(2).nullable(), g: z.array(z.boolean()).max(2), h: z.literal("h") }),
  ],
  ["literal_true", z.object({ ok: z.literal(true) })],
  ["order", z.object({ order: z.object({ lines: z.array(z.object({ sku: z.string().regex(/^[A-Z][0-9]{3}$/), qty: z.int().min(1).max(5) })).min(1).max(2), rush: z.boolean() }) })],
  ["email_like", z.object({ email: z.string().regex(/^[a-z]{1,5}@[a-z]{1,5}\.(com|org)$/) })],
  ["short_strings", z.object({ words: z.array(short(3)).max(3) })],
  ["clock", z.object({ time: z.string().regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/) })],
  [
    "described",
    z.object({
      label: short(6).describe("A short label for the picture"),
      count: z.int().min(0).max(5).describe("How many objects it shows"),
      mood: z.enum(["calm", "busy"]).describe("The picture's mood"),
    }),
  ],
  ["four_digit", z.object({ year: z.int().min(1000).max(1999) })],
];

/** The tools of the tool-call tests: every argument bounded. */
// The tool-call id in this template's grammar (llama.cpp's, for the Mistral-Nemo format) may be
// any JSON string or number, unbounded: random weights can loop in it. These tools, in this
// order, with these prompts, end their calls on both models.
const TOOLS: OpenAI.Chat.ChatCompletionFunctionTool[] = [
  {
    type: "function",
    function: {
      name: "book_table",
      description: "Books a table at a restaurant.",
      parameters: {
        type: "object",
        properties: {
          name: { type: "string", pattern: "^[A-Za-z]{1,8}$" },
          people: { type: "integer", minimum: 1, maximum: 12 },
          time: { type: "string", pattern: "^([01][0-9]|2[0-3]):[0-5][0-9]$" },
        },
        required: ["name", "people", "time"],
        additionalProperties: false,
      },
    },
  },
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather forecast for a city.",
      parameters: {
        type: "object",
        properties: { city: { type: "string", maxLength: 12 }, days: { type: "integer", minimum: 1, maximum: 7 }, units: { type: "string", enum: ["c", "f"] } },
        required: ["city", "days", "units"],
        additionalProperties: false,
      },
    },
  },
];

const toolValidators = new Map<string, ValidateFunction>(TOOLS.map((t) => [t.function.name, ajv.compile(t.function.parameters!)]));

/** Checks a call's arguments against its function's parameters; returns the parsed arguments. */
function expectValidCall(call: { name: string; arguments: string }, names: string[]): unknown {
  expect(names).toContain(call.name);
  const args: unknown = JSON.parse(call.arguments);
  const validate = toolValidators.get(call.name)!;
  expect(validate(args), `${call.name}(${call.arguments}): ${ajv.errorsText(validate.errors)}`).toBe(true);
  return args;
}

/** A streamed completion put back together from its chunks: text, tool calls (by index), finish_reason, logprobs. */
async function collect(stream: AsyncIterable<OpenAI.Chat.ChatCompletionChunk>) {
  let content = "";
  let finish: string | null = null;
  const calls: Array<{ id: string; type: string; name: string; arguments: string }> = [];
  const logprobs: OpenAI.Chat.ChatCompletionTokenLogprob[] = [];
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    content += choice.delta.content ?? "";
    for (const delta of choice.delta.tool_calls ?? []) {
      if (delta.id !== undefined) {
        // A call's first delta: its id, type and name (and maybe the start of its arguments).
        expect(calls).toHaveLength(delta.index);
        calls.push({ id: delta.id, type: delta.type!, name: delta.function!.name!, arguments: delta.function?.arguments ?? "" });
      } else {
        expect(delta.function?.name).toBeUndefined();
        calls[delta.index]!.arguments += delta.function?.arguments ?? "";
      }
    }
    logprobs.push(...(choice.logprobs?.content ?? []));
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  return { content, finish, calls, logprobs };
}

describe.each(MODELS)("%s with the Mistral-Nemo template", (name) => {
  const s = () => served[name];

  it(`${SCHEMAS.length} zod schemas through chat.completions.parse: every reply ends with "stop", parses, and validates against the schema sent`, async () => {
    const failures: string[] = [];
    let valid = 0;
    for (const [schemaName, schema] of SCHEMAS) {
      const format = zodResponseFormat(schema, schemaName);
      const validate = ajv.compile(format.json_schema.schema!);
      let completion: ParsedChatCompletion<unknown>;
      try {
        completion = await s().client.chat.completions.parse({ model: "default", messages: ask("Describe this image as JSON."), response_format: format, temperature: 0, max_tokens: 400 });
      } catch (error) {
        // The client refuses to parse a reply cut short: never counted as valid.
        if (error instanceof LengthFinishReasonError) {
          failures.push(`${schemaName}: finish_reason length`);
          continue;
        }
        throw error;
      }
      const choice = completion.choices[0]!;
      const content = choice.message.content ?? "";
      if (choice.finish_reason !== "stop") {
        failures.push(`${schemaName}: finish_reason ${choice.finish_reason}`);
        continue;
      }
      if (choice.message.parsed === null) {
        failures.push(`${schemaName}: parsed is null for ${content}`);
        continue;
      }
      if (!validate(JSON.parse(content))) {
        failures.push(`${schemaName}: ${content} fails ${ajv.errorsText(validate.errors)}`);
        continue;
      }
      // parse() gives the same value zod reads from the text.
      expect(choice.message.parsed).toEqual(schema.parse(JSON.parse(content)));
      valid++;
    }
    expect(failures).toEqual([]);
    expect(valid).toBe(SCHEMAS.length);
  });

  it('tool_choice "required" and a named function: calls whose arguments match the parameters, the same streamed and not, finish_reason "tool_calls"', async () => {
    const names = TOOLS.map((t) => t.function.name);
    for (const toolChoice of ["required", { type: "function", function: { name: "book_table" } }] as const) {
      const body = { model: "default", messages: ask("Help me plan my evening."), tools: TOOLS, tool_choice: toolChoice, parallel_tool_calls: false, temperature: 0, max_tokens: 300 };
      const completion = await s().client.chat.completions.create(body);
      const choice = completion.choices[0]!;
      expect(choice.finish_reason).toBe("tool_calls");
      expect(choice.message.role).toBe("assistant");
      expect(choice.message.refusal).toBeNull();
      const calls = choice.message.tool_calls!;
      expect(calls).toHaveLength(1);
      const call = calls[0]!;
      expect(call.type).toBe("function");
      expect(call.id).toMatch(/^\S+$/);
      if (call.type !== "function") throw new Error("not a function call");
      expectValidCall(call.function, typeof toolChoice === "string" ? names : ["book_table"]);
      // No text beside the call: OpenAI's content is null then.
      if (choice.message.content !== null) expect(choice.message.content.trim()).not.toBe("");

      const streamed = await collect(await s().client.chat.completions.create({ ...body, stream: true }));
      expect(streamed.finish).toBe("tool_calls");
      expect(streamed.calls).toHaveLength(1);
      expect(streamed.calls[0]).toMatchObject({ type: "function", name: call.function.name, arguments: call.function.arguments });
      expectValidCall(streamed.calls[0]!, [call.function.name]);
    }
  });

  it("the openai client's tool runner: the forced call runs the tool with valid arguments, its result goes back, and an assistant reply ends the conversation", async () => {
    // A model that has its tool's result answers in text, and ends. Random weights neither know
    // when to stop nor stop calling under "required" (which the runner sends again), so the
    // follow-up (the request that carries the tool result) goes out with tool_choice "none" and
    // llama-server's grammar holding the answer to one sentence.
    const ANSWER = "Sunny, 21 degrees.";
    const bodies: Array<Record<string, unknown>> = [];
    const client = new OpenAI({
      baseURL: `${s().server.url}/v1`,
      apiKey: "not-needed",
      maxRetries: 0,
      fetch: async (url, init) => {
        const body = JSON.parse(String(init?.body)) as { messages: Array<{ role: string }>; tool_choice?: unknown; grammar?: string };
        if (body.messages.some((m) => m.role === "tool")) Object.assign(body, { tool_choice: "none", grammar: `root ::= ${JSON.stringify(ANSWER)}` });
        bodies.push(body);
        return fetch(url, { ...init, body: JSON.stringify(body) });
      },
    });
    const weather = TOOLS.find((t) => t.function.name === "get_weather")!.function;
    const ran: unknown[] = [];
    const runner = client.chat.completions.runTools(
      {
        model: "default",
        messages: ask("What will the weather be?"),
        tools: [
          {
            type: "function",
            function: {
              name: weather.name,
              description: weather.description!,
              parameters: weather.parameters!,
              parse: (args: string) => expectValidCall({ name: weather.name, arguments: args }, [weather.name]),
              function: (args: unknown) => {
                ran.push(args);
                return { forecast: "sunny", high: 21 };
              },
            },
          },
        ],
        tool_choice: "required",
        parallel_tool_calls: false,
        temperature: 0,
        max_tokens: 300,
      },
      { maxChatCompletions: 3 },
    );
    const content = await runner.finalContent();
    expect(ran).toHaveLength(1);
    expect(toolValidators.get(weather.name)!(ran[0])).toBe(true);
    expect(bodies).toHaveLength(2);
    const messages = runner.messages;
    expect(messages.map((m) => m.role)).toEqual(["user", "assistant", "tool", "assistant"]);
    const [, call, result, answer] = messages as [unknown, OpenAI.Chat.ChatCompletionAssistantMessageParam, OpenAI.Chat.ChatCompletionToolMessageParam, OpenAI.Chat.ChatCompletionAssistantMessageParam];
    expect(call.tool_calls).toHaveLength(1);
    expect(result.tool_call_id).toBe(call.tool_calls![0]!.id);
    expect(JSON.parse(result.content as string)).toEqual({ forecast: "sunny", high: 21 });
    expect(answer.tool_calls ?? []).toEqual([]);
    expect(typeof answer.content).toBe("string");
    expect(answer.content).toBe(ANSWER);
    expect(content).toBe(ANSWER);
    const final = await runner.finalChatCompletion();
    expect(final.choices[0]!.finish_reason).toBe("stop");
  });

  it("logprobs in OpenAI's shape, the same streamed and not; under greedy sampling each token is the most likely one", async () => {
    const body = { model: "default", messages: ask("Describe this image."), temperature: 0, max_tokens: 16, logprobs: true, top_logprobs: 5 };
    const completion = await s().client.chat.completions.create(body);
    const choice = completion.choices[0]!;
    const entries = choice.logprobs!.content!;
    expect(choice.logprobs!.refusal).toBeNull();
    expect(entries).toHaveLength(completion.usage!.completion_tokens);
    for (const entry of entries) {
      expect(Object.keys(entry).sort()).toEqual(["bytes", "logprob", "token", "top_logprobs"]);
      expect(entry.logprob).toBeLessThanOrEqual(0);
      expect(Buffer.from(entry.bytes!).toString("utf8")).toBe(entry.token);
      expect(entry.top_logprobs).toHaveLength(5);
      const tops = entry.top_logprobs.map((t) => t.logprob);
      expect(tops).toEqual([...tops].sort((a, b) => b - a));
      // Greedy: the sampled token is the most likely one.
      expect(entry.logprob).toBeCloseTo(Math.max(...tops), 5);
      expect(entry.top_logprobs[0]!.token).toBe(entry.token);
    }
    expect(Buffer.concat(entries.map((e) => Buffer.from(e.bytes!))).toString("utf8")).toBe(choice.message.content);

    const streamed = await collect(await s().client.chat.completions.create({ ...body, stream: true }));
    expect(streamed.content).toBe(choice.message.content);
    // The same tokens; the numbers agree to float precision (the prompt came from the KV cache).
    expect(streamed.logprobs.map((e) => [e.token, e.bytes, e.top_logprobs.map((t) => t.token)])).toEqual(entries.map((e) => [e.token, e.bytes, e.top_logprobs.map((t) => t.token)]));
    streamed.logprobs.forEach((e, i) => expect(e.logprob).toBeCloseTo(entries[i]!.logprob, 4));

    const without = await s().client.chat.completions.create({ ...body, logprobs: false, top_logprobs: undefined });
    expect(without.choices[0]!.logprobs).toBeNull();
    expect(without.choices[0]!.message.content).toBe(choice.message.content);
  });
});

describe("llama-server's extensions and other output options", () => {
  const client = () => served["qwen2vl-tiny"].client;
  const post = (body: Record<string, unknown>) =>
    client().chat.completions.create({ model: "default", messages: ask("Answer."), temperature: 0, max_tokens: 200, ...body } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);

  it("grammar (GBNF), json_schema at the top level, response_format json_object and json_schema without strict", async () => {
    const grammar = await post({ grammar: 'root ::= ("yes" | "no") " " [0-9]' });
    expect(grammar.choices[0]!.message.content).toMatch(/^(yes|no) [0-9]$/);
    expect(grammar.choices[0]!.finish_reason).toBe("stop");

    const schema = { type: "object", properties: { n: { type: "integer", minimum: 0, maximum: 9 } }, required: ["n"], additionalProperties: false };
    const top = await post({ json_schema: schema });
    expect(ajv.validate(schema, JSON.parse(top.choices[0]!.message.content!))).toBe(true);

    const loose = await post({ response_format: { type: "json_schema", json_schema: { name: "n", schema } } });
    expect(loose.choices[0]!.message.content).toBe(top.choices[0]!.message.content);

    const object = await post({ response_format: { type: "json_object" }, max_tokens: 400 });
    if (object.choices[0]!.finish_reason === "stop") {
      const value: unknown = JSON.parse(object.choices[0]!.message.content!);
      expect(typeof value === "object" && value !== null && !Array.isArray(value)).toBe(true);
    }

    const text = await post({ response_format: { type: "text" }, max_tokens: 8 });
    expect(text.choices[0]!.message.content).toBe((await post({ max_tokens: 8 })).choices[0]!.message.content);
  });

  it("logit_bias steers the sampler: +100 on one token makes it every token, -100 on the greedy first token keeps it out", async () => {
    const { lm } = served["qwen2vl-tiny"];
    const base = await post({ max_tokens: 6, logprobs: true });
    const first = base.choices[0]!.logprobs!.content![0]!.token;
    const firstIds = [...lm.tokenize(first, { addSpecial: false })];
    expect(firstIds).toHaveLength(1);
    // An ordinary text token that greedy decoding does not start with.
    const id = [...lm.tokenize("cat dog sun", { addSpecial: false })].find((t) => t !== firstIds[0])!;
    const text = lm.detokenize([id]);
    const forced = await post({ max_tokens: 6, logit_bias: { [id]: 100 }, logprobs: true });
    expect(forced.choices[0]!.logprobs!.content!.map((e) => e.token)).toEqual(Array(6).fill(text));
    const banned = await post({ max_tokens: 6, logit_bias: { [firstIds[0]!]: -100 }, logprobs: true });
    expect(banned.choices[0]!.logprobs!.content!.map((e) => e.token)).not.toContain(first);
  });
});

describe("bad schemas, grammars, tools and token options over HTTP", () => {
  const url = () => `${served["qwen2vl-tiny"].server.url}/v1/chat/completions`;
  type ErrorBody = { error: { message: string; type: string; param: string | null; code: string } };
  const post = async (body: Record<string, unknown>, target = url()) => {
    const response = await fetch(target, { method: "POST", body: JSON.stringify({ model: "default", messages: ask("Answer."), max_tokens: 8, ...body }) });
    return { status: response.status, type: response.headers.get("content-type"), body: (await response.json()) as ErrorBody };
  };
  const schemaFormat = (schema: unknown) => ({ response_format: { type: "json_schema", json_schema: { name: "x", schema, strict: true } } });
  const object = (properties: Record<string, unknown>) => ({ type: "object", properties, required: Object.keys(properties) });
  const fn = (name: unknown, parameters: unknown = { type: "object", properties: {} }) => ({ type: "function", function: { name, parameters } });
  const RS = "response_format.json_schema.schema";

  const cases: Array<[string, string, string, Record<string, unknown>]> = [
    ['a schema type "strin"', "E_INVALID_SCHEMA", `${RS}.properties.a.type`, schemaFormat(object({ a: { type: "strin" } }))],
    ["minItems above maxItems", "E_INVALID_SCHEMA", `${RS}.properties.list.minItems`, schemaFormat(object({ list: { type: "array", items: { type: "integer" }, minItems: 3, maxItems: 1 } }))],
    ["a pattern that is no regular expression", "E_INVALID_SCHEMA", `${RS}.properties.code.pattern`, schemaFormat(object({ code: { type: "string", pattern: "([a-z" } }))],
    ["an unresolvable $ref", "E_INVALID_SCHEMA", RS, schemaFormat(object({ a: { $ref: "#/$defs/missing" } }))],
    ["enum []", "E_INVALID_SCHEMA", `${RS}.properties.e.enum`, schemaFormat(object({ e: { enum: [] } }))],
    ["minLength above maxLength", "E_INVALID_SCHEMA", `${RS}.properties.s.minLength`, schemaFormat(object({ s: { type: "string", minLength: 5, maxLength: 2 } }))],
    ["a json_object schema of the wrong type", "E_INVALID_SCHEMA", "response_format.schema", { response_format: { type: "json_object", schema: "object" } }],
    ["an unknown response_format type", "E_INVALID_ARGUMENT", "response_format.type", { response_format: { type: "xml" } }],
    ['llama-server\'s top-level json_schema with type "strin"', "E_INVALID_SCHEMA", "json_schema.properties.a.type", { json_schema: object({ a: { type: "strin" } }) }],
    ["a tool name with a space", "E_INVALID_ARGUMENT", "tools[0].function.name", { tools: [fn("get weather")] }],
    ["two tools with one name", "E_INVALID_ARGUMENT", "tools[1].function.name", { tools: [fn("f"), fn("f")] }],
    ["tool parameters that are no schema", "E_INVALID_SCHEMA", "tools[0].function.parameters", { tools: [fn("f", 42)] }],
    ["a bad schema inside tool parameters", "E_INVALID_SCHEMA", "tools[0].function.parameters.properties.n.maximum", { tools: [fn("f", object({ n: { type: "integer", maximum: "ten" } }))] }],
    ["a tool that is no function", "E_INVALID_ARGUMENT", "tools[0]", { tools: [{ type: "retrieval" }] }],
    ["tool_choice naming a missing function", "E_INVALID_ARGUMENT", "tool_choice.function.name", { tools: [fn("f")], tool_choice: { type: "function", function: { name: "g" } } }],
    ['tool_choice "required" without tools', "E_INVALID_ARGUMENT", "tool_choice", { tool_choice: "required" }],
    ["a bad tool_choice", "E_INVALID_ARGUMENT", "tool_choice", { tools: [fn("f")], tool_choice: "always" }],
    ["parallel_tool_calls that is no boolean", "E_INVALID_ARGUMENT", "parallel_tool_calls", { tools: [fn("f")], parallel_tool_calls: "yes" }],
    ["a JSON response_format with tools", "E_INVALID_ARGUMENT", "response_format", { tools: [fn("f")], response_format: { type: "json_object" } }],
    ["a grammar with an undefined rule", "E_INVALID_GRAMMAR", "grammar", { grammar: "root ::= undefined-rule" }],
    ["a grammar that does not parse", "E_INVALID_GRAMMAR", "grammar", { grammar: 'root ::= "unterminated' }],
    ["a grammar that is no string", "E_INVALID_ARGUMENT", "grammar", { grammar: 42 }],
    ["a grammar and a response_format together", "E_INVALID_ARGUMENT", "grammar", { grammar: 'root ::= "x"', response_format: { type: "json_object" } }],
    ["response_format and json_schema together", "E_INVALID_ARGUMENT", "json_schema", { json_schema: { type: "object" }, response_format: { type: "json_object" } }],
    ["top_logprobs 21", "E_INVALID_ARGUMENT", "top_logprobs", { logprobs: true, top_logprobs: 21 }],
    ["top_logprobs without logprobs", "E_INVALID_ARGUMENT", "top_logprobs", { top_logprobs: 2 }],
    ["logprobs that is no boolean", "E_INVALID_ARGUMENT", "logprobs", { logprobs: "yes" }],
    ["logit_bias with a token id beyond the vocabulary", "E_INVALID_ARGUMENT", "logit_bias[99999]", { logit_bias: { "99999": 5 } }],
    ["logit_bias with a bias over 100", "E_INVALID_ARGUMENT", "logit_bias[5]", { logit_bias: { "5": 150 } }],
    ["logit_bias with a key that is no token id", "E_INVALID_ARGUMENT", "logit_bias[abc]", { logit_bias: { abc: 1 } }],
    ["legacy functions", "E_INVALID_ARGUMENT", "functions", { functions: [{ name: "f", parameters: {} }] }],
    [
      "an assistant tool call whose arguments are no JSON text or object",
      "E_INVALID_ARGUMENT",
      "messages[1].tool_calls[0].function.arguments",
      { messages: [...ask("Hi"), { role: "assistant", tool_calls: [{ id: "abcdefghi", type: "function", function: { name: "f", arguments: 7 } }] }] },
    ],
    ["tool_call_id on a user message", "E_INVALID_ARGUMENT", "messages[0].tool_call_id", { messages: [{ role: "user", content: "Hi", tool_call_id: "x" }] }],
  ];

  it.each(cases)("%s → 400 %s at %s", async (_, code, param, body) => {
    for (const stream of [false, true]) {
      const r = await post({ ...body, stream });
      expect(r.status).toBe(400);
      expect(r.type).toBe("application/json");
      expect(r.body.error).toMatchObject({ code, param, type: "invalid_request_error" });
      // The message names the field as the request did, not by the library's option names.
      expect(r.body.error.message.length).toBeGreaterThan(20);
      expect(r.body.error.message).not.toMatch(/responseFormat|toolChoice|parallelToolCalls|topLogprobs|logitBias/);
    }
  });

  it('tools on a model whose chat template cannot render them → 400 E_TOOLS_UNSUPPORTED, unless tool_choice is "none"', async () => {
    const target = `${plain.server.url}/v1/chat/completions`;
    const r = await post({ tools: [fn("f")], tool_choice: "required" }, target);
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: "E_TOOLS_UNSUPPORTED", param: "tools", type: "invalid_request_error" });
    expect(r.body.error.message).toMatch(/chat template/);
    const none = await fetch(target, { method: "POST", body: JSON.stringify({ model: "default", messages: ask("Hi"), max_tokens: 4, tools: [fn("f")], tool_choice: "none" }) });
    expect(none.status).toBe(200);
  });

  it("the openai client surfaces them as BadRequestError with code and param; afterwards the server answers normally", async () => {
    const { client } = served["qwen2vl-tiny"];
    const format = zodResponseFormat(z.object({ code: z.string().regex(/^[a-z]+$/) }), "bad");
    (format.json_schema.schema as { properties: { code: { pattern: string } } }).properties.code.pattern = "([a-z";
    const error = await client.chat.completions.parse({ model: "default", messages: ask("Hi"), response_format: format, max_tokens: 8 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({ status: 400, code: "E_INVALID_SCHEMA", param: `${RS}.properties.code.pattern` });
    for (const s of [...Object.values(served), plain]) {
      const ok = await s.client.chat.completions.create({ model: "default", messages: ask("Describe this image."), max_tokens: 8, temperature: 0 });
      expect(ok.choices[0]!.finish_reason).toBe("length");
      expect(ok.choices[0]!.message.content!.length).toBeGreaterThan(0);
      expect(s.server.handler.stats.active).toBe(0);
    }
  });
});
