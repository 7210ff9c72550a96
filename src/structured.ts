// Structured output and tools: responseFormat, grammar, tools and toolChoice checked and turned into
// the request llama.cpp's chat layer takes (common_chat_templates_apply gives the grammar and its
// lazy triggers); its output parsed back (common_chat_parse) into content and tool calls, also
// while streaming, as llama-server does.
import { randomBytes } from "node:crypto";

import { MultimodalLMError } from "./errors.js";
import type { ToolCall } from "./messages.js";
import type { NativeParsedChat } from "./native-types.js";
import { describeValue, invalidParameter, is } from "./validate.js";

/** A JSON Schema (the subset llama.cpp turns into a grammar: types, properties, required, items, enum, bounds, pattern, $ref, anyOf...). */
export type JsonSchema = { [key: string]: unknown } | boolean;

export type ResponseFormat =
  | { type: "text" }
  /** Any JSON object (or one matching `schema`, as llama-server also takes). */
  | { type: "json_object"; schema?: JsonSchema }
  /** JSON matching `schema`. */
  | { type: "json_schema"; schema: JsonSchema }
  /** OpenAI's form (what the openai SDK's zodResponseFormat builds). */
  | { type: "json_schema"; json_schema: { name: string; schema?: JsonSchema; strict?: boolean | null; description?: string } };

/** An OpenAI function tool. */
export interface FunctionTool {
  type: "function";
  function: { name: string; description?: string; parameters?: JsonSchema; strict?: boolean | null };
}

/** "auto": the model decides; "none": no calls; "required": at least one; or one named function. */
export type ToolChoice = "auto" | "none" | "required" | { type: "function"; function: { name: string } };

export interface StructuredOptions {
  /** Constrain the reply to JSON (any object, or matching a schema). */
  responseFormat?: ResponseFormat;
  /** A GBNF grammar the reply must match (llama.cpp's grammar format). Not with responseFormat or tools. */
  grammar?: string;
  /** Functions the model may call; calls come back in `toolCalls`. */
  tools?: FunctionTool[];
  /** Default "auto" when tools are given. */
  toolChoice?: ToolChoice;
  /** Allow more than one call in a reply. Default: what the model's chat template supports. */
  parallelToolCalls?: boolean;
}

export const STRUCTURED_KEYS = ["responseFormat", "grammar", "tools", "toolChoice", "parallelToolCalls"] as const;

/** What a request asks of the output, checked. */
export interface OutputPlan {
  schema?: JsonSchema;
  grammar?: string;
  tools?: FunctionTool[];
  toolChoice: "auto" | "none" | "required";
  parallelToolCalls?: boolean;
  /** The reply goes through the chat layer's parser (JSON or tools); plain text otherwise. */
  parse: boolean;
}

/** Native checks: llama.cpp's schema converter and grammar parser. Both throw coded errors. */
export interface GrammarChecks {
  schemaToGrammar(schemaJson: string): string;
  checkGrammar(grammar: string): void;
}

const SCHEMA_TYPES = new Set(["string", "number", "integer", "boolean", "object", "array", "null"]);
const NUMBER_KEYS = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"];
const COUNT_KEYS = ["minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"];

function schemaError(param: string, message: string): MultimodalLMError {
  return new MultimodalLMError("E_INVALID_SCHEMA", `Invalid JSON schema at ${param}: ${message}`, { param });
}

/** Structural checks of the keywords llama.cpp reads, naming the part of the schema at fault. */
function checkSchemaShape(schema: unknown, at: string, depth = 0): void {
  if (depth > 64) throw schemaError(at, "nested more than 64 levels deep");
  if (is.bool(schema)) return;
  if (!is.object(schema)) throw schemaError(at, `expected an object or a boolean, received ${describeValue(schema)}`);
  const type = schema.type;
  if (type !== undefined) {
    const types = Array.isArray(type) ? type : [type];
    if (types.length === 0 || types.some((t) => !is.string(t) || !SCHEMA_TYPES.has(t))) {
      throw schemaError(`${at}.type`, `expected one of ${[...SCHEMA_TYPES].join(", ")} (or an array of them), received ${JSON.stringify(type)}`);
    }
  }
  for (const key of NUMBER_KEYS) {
    if (schema[key] !== undefined && !is.number(schema[key])) throw schemaError(`${at}.${key}`, `expected a number, received ${describeValue(schema[key])}`);
  }
  for (const key of COUNT_KEYS) {
    const value = schema[key];
    if (value !== undefined && (!is.integer(value) || (value as number) < 0)) throw schemaError(`${at}.${key}`, `expected a non-negative integer, received ${describeValue(value)}`);
  }
  if (is.integer(schema.minItems) && is.integer(schema.maxItems) && schema.minItems > schema.maxItems) {
    throw schemaError(`${at}.minItems`, `minItems (${schema.minItems}) is greater than maxItems (${schema.maxItems})`);
  }
  if (is.integer(schema.minLength) && is.integer(schema.maxLength) && schema.minLength > schema.maxLength) {
    throw schemaError(`${at}.minLength`, `minLength (${schema.minLength}) is greater than maxLength (${schema.maxLength})`);
  }
  if (is.number(schema.minimum) && is.number(schema.maximum) && schema.minimum > schema.maximum) {
    throw schemaError(`${at}.minimum`, `minimum (${schema.minimum}) is greater than maximum (${schema.maximum})`);
  }
  if (schema.pattern !== undefined) {
    if (!is.string(schema.pattern)) throw schemaError(`${at}.pattern`, `expected a regular expression string, received ${describeValue(schema.pattern)}`);
    try {
      new RegExp(schema.pattern, "u");
    } catch (error) {
      throw schemaError(`${at}.pattern`, (error as Error).message);
    }
  }
  if (schema.enum !== undefined && (!Array.isArray(schema.enum) || schema.enum.length === 0)) {
    throw schemaError(`${at}.enum`, `expected a non-empty array, received ${describeValue(schema.enum)}`);
  }
  if (schema.required !== undefined && (!Array.isArray(schema.required) || schema.required.some((r) => !is.string(r)))) {
    throw schemaError(`${at}.required`, `expected an array of property names, received ${describeValue(schema.required)}`);
  }
  if (schema.$ref !== undefined && !is.string(schema.$ref)) throw schemaError(`${at}.$ref`, `expected a string, received ${describeValue(schema.$ref)}`);
  for (const key of ["properties", "$defs", "definitions", "patternProperties"]) {
    const map = schema[key];
    if (map === undefined) continue;
    if (!is.object(map)) throw schemaError(`${at}.${key}`, `expected an object, received ${describeValue(map)}`);
    for (const [name, sub] of Object.entries(map)) checkSchemaShape(sub, `${at}.${key}.${name}`, depth + 1);
  }
  for (const key of ["items", "additionalProperties", "not", "contains"]) {
    if (schema[key] !== undefined) checkSchemaShape(schema[key], `${at}.${key}`, depth + 1);
  }
  for (const key of ["anyOf", "oneOf", "allOf", "prefixItems"]) {
    const list = schema[key];
    if (list === undefined) continue;
    if (!Array.isArray(list) || list.length === 0) throw schemaError(`${at}.${key}`, `expected a non-empty array of schemas, received ${describeValue(list)}`);
    list.forEach((sub, i) => checkSchemaShape(sub, `${at}.${key}[${i}]`, depth + 1));
  }
}

/** Checks a schema, then has llama.cpp convert it (its error names the part it could not convert). */
function checkSchema(schema: unknown, param: string, checks: GrammarChecks): JsonSchema {
  checkSchemaShape(schema, param);
  let json: string;
  try {
    json = JSON.stringify(schema);
  } catch (error) {
    throw schemaError(param, `it cannot be written as JSON (${(error as Error).message})`);
  }
  try {
    checks.schemaToGrammar(json);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new MultimodalLMError("E_INVALID_SCHEMA", `llama.cpp cannot turn the JSON schema at ${param} into a grammar: ${message}`, { param, cause: error });
  }
  return schema as JsonSchema;
}

function readResponseFormat(value: unknown, checks: GrammarChecks): JsonSchema | undefined {
  if (value === undefined) return undefined;
  if (!is.object(value) || !is.string(value.type)) throw invalidParameter("responseFormat", '{ type: "text" | "json_object" | "json_schema", ... }', value);
  const anyObject = { type: "object" };
  const emptyToObject = (schema: unknown) => (is.object(schema) && Object.keys(schema).length === 0 ? anyObject : schema);
  switch (value.type) {
    case "text":
      return undefined;
    case "json_object":
      return value.schema === undefined ? anyObject : checkSchema(emptyToObject(value.schema), "responseFormat.schema", checks);
    case "json_schema": {
      if (value.json_schema !== undefined) {
        const wrapper = value.json_schema;
        if (!is.object(wrapper)) throw invalidParameter("responseFormat.json_schema", "{ name, schema, strict }", wrapper);
        if (wrapper.name !== undefined && !is.string(wrapper.name)) throw invalidParameter("responseFormat.json_schema.name", "a string", wrapper.name);
        if (wrapper.strict !== undefined && wrapper.strict !== null && !is.bool(wrapper.strict)) {
          throw invalidParameter("responseFormat.json_schema.strict", "a boolean", wrapper.strict);
        }
        return wrapper.schema === undefined ? anyObject : checkSchema(emptyToObject(wrapper.schema), "responseFormat.json_schema.schema", checks);
      }
      if (value.schema === undefined) throw invalidParameter("responseFormat.schema", "a JSON schema (or json_schema: { name, schema })", value.schema);
      return checkSchema(emptyToObject(value.schema), "responseFormat.schema", checks);
    }
    default:
      throw invalidParameter("responseFormat.type", '"text", "json_object" or "json_schema"', value.type);
  }
}

const TOOL_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

function readTools(value: unknown, checks: GrammarChecks): FunctionTool[] {
  if (!Array.isArray(value)) throw invalidParameter("tools", "an array of function tools", value);
  const names = new Set<string>();
  return value.map((tool: unknown, i): FunctionTool => {
    const at = `tools[${i}]`;
    if (!is.object(tool) || tool.type !== "function" || !is.object(tool.function)) {
      throw invalidParameter(at, '{ type: "function", function: { name, description, parameters } }', tool);
    }
    const fn = tool.function;
    if (!is.string(fn.name) || !TOOL_NAME.test(fn.name)) {
      throw invalidParameter(`${at}.function.name`, "a name of 1 to 64 letters, digits, _, . or -", fn.name);
    }
    if (names.has(fn.name)) throw invalidParameter(`${at}.function.name`, "a name no other tool has", fn.name);
    names.add(fn.name);
    if (fn.description !== undefined && !is.string(fn.description)) throw invalidParameter(`${at}.function.description`, "a string", fn.description);
    const out: FunctionTool = { type: "function", function: { name: fn.name } };
    if (is.string(fn.description)) out.function.description = fn.description;
    out.function.parameters = fn.parameters === undefined ? { type: "object", properties: {} } : checkSchema(fn.parameters, `${at}.function.parameters`, checks);
    return out;
  });
}

const MAX_GRAMMAR_BYTES = 1 << 20;
const MAX_GRAMMAR_DEPTH = 1000;

/**
 * llama.cpp parses a grammar recursively: deep enough nesting overflows the stack and kills the
 * process (llama-server too). Groups nested past MAX_GRAMMAR_DEPTH are refused before it sees them.
 */
function checkGrammarSize(grammar: string): void {
  if (grammar.length > MAX_GRAMMAR_BYTES) {
    throw new MultimodalLMError("E_INVALID_GRAMMAR", `The grammar is ${grammar.length} characters long; at most ${MAX_GRAMMAR_BYTES} are accepted.`, { param: "grammar" });
  }
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < grammar.length; i++) {
    const c = grammar[i];
    if (c === '"' || c === "[") {
      // Skip a string literal or a character class, with its escapes.
      const end = c === '"' ? '"' : "]";
      for (i++; i < grammar.length && grammar[i] !== end; i++) if (grammar[i] === "\\") i++;
    } else if (c === "#") {
      while (i < grammar.length && grammar[i] !== "\n") i++;
    } else if (c === "(") {
      deepest = Math.max(deepest, ++depth);
    } else if (c === ")") {
      depth--;
    }
  }
  if (deepest > MAX_GRAMMAR_DEPTH) {
    throw new MultimodalLMError("E_INVALID_GRAMMAR", `The grammar nests groups ${deepest} deep; at most ${MAX_GRAMMAR_DEPTH} levels are accepted (llama.cpp's parser is recursive).`, {
      param: "grammar",
    });
  }
}

/** Checks the structured-output options of one request. */
export function planOutput(o: StructuredOptions, checks: GrammarChecks): OutputPlan {
  const schema = readResponseFormat(o.responseFormat, checks);
  let grammar: string | undefined;
  if (o.grammar !== undefined) {
    if (!is.string(o.grammar) || o.grammar.trim().length === 0) throw invalidParameter("grammar", "a GBNF grammar string", o.grammar);
    if (schema !== undefined) throw invalidParameter("grammar", "no grammar together with a JSON responseFormat (use one of them)", "a grammar");
    checkGrammarSize(o.grammar);
    try {
      checks.checkGrammar(o.grammar);
    } catch (error) {
      if (error instanceof MultimodalLMError) throw new MultimodalLMError(error.code, error.message, { param: "grammar", cause: error });
      throw error;
    }
    grammar = o.grammar;
  }
  let tools = o.tools === undefined || o.tools === null ? undefined : readTools(o.tools, checks);
  if (tools?.length === 0) tools = undefined;
  let toolChoice: OutputPlan["toolChoice"] = "auto";
  const choice = o.toolChoice;
  if (choice !== undefined) {
    if (choice === "auto" || choice === "none" || choice === "required") {
      toolChoice = choice;
    } else if (is.object(choice) && choice.type === "function" && is.object(choice.function) && is.string(choice.function.name)) {
      const name = choice.function.name;
      const named = tools?.find((t) => t.function.name === name);
      if (!named) throw invalidParameter("toolChoice.function.name", `the name of one of the tools (${tools?.map((t) => t.function.name).join(", ") || "none given"})`, name);
      // One named function: that tool alone, and a call required.
      tools = [named];
      toolChoice = "required";
    } else {
      throw invalidParameter("toolChoice", '"auto", "none", "required" or { type: "function", function: { name } }', choice);
    }
    if (toolChoice !== "auto" && toolChoice !== "none" && !tools) throw invalidParameter("toolChoice", "no tool choice without tools", choice);
  }
  if (o.parallelToolCalls !== undefined && !is.bool(o.parallelToolCalls)) throw invalidParameter("parallelToolCalls", "a boolean", o.parallelToolCalls);
  const callsTools = tools !== undefined && toolChoice !== "none";
  if (callsTools && grammar !== undefined) throw invalidParameter("grammar", "no grammar together with tools (the tools make their own)", "a grammar");
  if (callsTools && schema !== undefined) throw invalidParameter("responseFormat", "no JSON responseFormat together with tools (use tool_choice: \"none\", or drop the tools)", o.responseFormat);
  return {
    ...(schema !== undefined ? { schema } : {}),
    ...(grammar !== undefined ? { grammar } : {}),
    ...(tools ? { tools } : {}),
    toolChoice,
    ...(o.parallelToolCalls !== undefined ? { parallelToolCalls: o.parallelToolCalls } : {}),
    parse: schema !== undefined || callsTools,
  };
}

/** A piece of a streamed reply. */
export type StreamEvent =
  | { type: "text"; text: string }
  /** A tool call appears (with id and name) or its arguments grow by `arguments`. */
  | { type: "tool_call"; index: number; id?: string; name?: string; arguments: string }
  | { type: "logprobs"; logprobs: TokenLogprob };

/** One generated token's log-probability, and the most likely tokens at that position. */
export interface TokenLogprob {
  token: string;
  bytes: number[];
  logprob: number;
  topLogprobs: Array<{ token: string; bytes: number[]; logprob: number }>;
}

const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/** A tool-call id: 9 letters and digits, the form Mistral's templates insist on (the others take any string). */
export function newToolCallId(): string {
  return [...randomBytes(9)].map((b) => ID_ALPHABET[b % ID_ALPHABET.length]).join("");
}

/**
 * Follows the raw output through llama.cpp's parser: each new piece re-parses the text so far
 * (partially), and what the content and tool calls gained is emitted as deltas.
 */
export class OutputParser {
  private raw = "";
  private content = "";
  private readonly calls: ToolCall[] = [];

  constructor(
    private readonly parse: (text: string, partial: boolean) => NativeParsedChat,
    private readonly emit: (event: StreamEvent) => void,
  ) {}

  push(piece: string): void {
    this.raw += piece;
    this.update(this.parse(this.raw, true));
  }

  /** The final parse (partial when the output was cut short), and the last deltas. */
  finish(truncated: boolean): { content: string; toolCalls: ToolCall[] } {
    const parsed = this.parse(this.raw, truncated);
    this.update(parsed);
    const toolCalls = parsed.toolCalls
      .filter((call) => call.name.length > 0)
      .map((call, i): ToolCall => ({ id: this.calls[i]?.id ?? (call.id || newToolCallId()), type: "function", function: { name: call.name, arguments: call.arguments } }));
    return { content: parsed.content, toolCalls };
  }

  private update(parsed: NativeParsedChat): void {
    if (parsed.content.length > this.content.length && parsed.content.startsWith(this.content)) {
      this.emit({ type: "text", text: parsed.content.slice(this.content.length) });
      this.content = parsed.content;
    }
    parsed.toolCalls.forEach((call, index) => {
      const known = this.calls[index];
      if (!known) {
        if (!call.name || index !== this.calls.length) return;
        const id = call.id || newToolCallId();
        this.calls.push({ id, type: "function", function: { name: call.name, arguments: call.arguments } });
        this.emit({ type: "tool_call", index, id, name: call.name, arguments: call.arguments });
      } else if (call.arguments.length > known.function.arguments.length && call.arguments.startsWith(known.function.arguments)) {
        this.emit({ type: "tool_call", index, arguments: call.arguments.slice(known.function.arguments.length) });
        known.function.arguments = call.arguments;
      }
    });
  }
}
