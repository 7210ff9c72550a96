// The chat page's JSON output switch and its display of tool calls, in headless Chromium (see
// web-ui.test.ts): the switch sends response_format (json_schema with the schema typed in, or
// json_object when it is empty), the JSON reply is shown indented, a schema that is not JSON is
// refused in the settings, and tool calls in a streamed reply show as the function's name and
// its arguments, indented.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";

import { Ajv } from "ajv";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM } from "../src/multimodal-lm.js";
import { startServer, type RunningServer } from "../src/server/serve.js";
import { ensureTestModel } from "../src/test-models/index.js";
import { WEATHER_TOOL } from "./helpers/tools.js";

// page.waitForFunction callbacks run in Chromium; the tests compile against Node's types.
declare const document: { querySelectorAll(selector: string): ArrayLike<{ classList: { contains(name: string): boolean } }> };

const root = path.resolve(import.meta.dirname, "..");
const sampleImage = path.join(root, "assets", "sample.png");
const pngDataUrl = `data:image/png;base64,${readFileSync(sampleImage).toString("base64")}`;
const executablePath = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].find((file): file is string => !!file && existsSync(file));
if (!executablePath && process.env.CI) throw new Error("CI needs Chromium for the chat page test: apt-get install chromium (or set CHROMIUM_PATH).");

const SCHEMA = {
  type: "object",
  properties: { count: { type: "integer", minimum: 0, maximum: 9 }, colour: { type: "string", enum: ["red", "green", "blue"] }, ok: { type: "boolean" } },
  required: ["count", "colour", "ok"],
  additionalProperties: false,
};

describe.skipIf(!executablePath)("the chat page's JSON output and tool calls", () => {
  let lm: MultimodalLM;
  let server: RunningServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let problems: string[];
  /** Bodies of the page's chat-completion requests. */
  let sent: Array<Record<string, unknown>>;

  beforeAll(async () => {
    const files = await ensureTestModel("qwen2vl-tiny");
    lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: 4096 });
    server = await startServer(lm, { port: 0 });
    mkdirSync(path.join(root, "test-output", "web-ui"), { recursive: true });
    browser = await chromium.launch({ executablePath: executablePath!, args: ["--no-sandbox"] });
  }, 600_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await lm?.dispose();
  });

  afterEach(async () => {
    await context?.close();
  });

  async function open(): Promise<void> {
    context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
    page = await context.newPage();
    problems = [];
    sent = [];
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console: ${message.text()}`);
    });
    page.on("request", (request) => {
      if (request.url().endsWith("/v1/chat/completions")) sent.push(JSON.parse(request.postData() ?? "{}") as Record<string, unknown>);
    });
    await page.goto(`${server.url}/`);
    await page.locator("#model-name", { hasText: "qwen2vl-tiny" }).waitFor();
  }

  async function ask(text: string): Promise<void> {
    await page.fill("#prompt", text);
    await page.press("#prompt", "Enter");
  }

  /** Waits for the n-th reply (1-based) to finish. */
  async function reply(n: number) {
    await page.waitForFunction((i) => {
      const node = document.querySelectorAll(".message.assistant")[i];
      return !!node && !node.classList.contains("streaming");
    }, n - 1);
    return page.locator(".message.assistant").nth(n - 1);
  }

  it("the JSON output switch sends response_format with the schema typed in, and shows the JSON reply indented; empty means any JSON object", async () => {
    await open();
    await page.click("#settings-toggle");
    await page.fill("#set-temperature", "0");
    await page.fill("#set-max-tokens", "300");
    expect(await page.isVisible("#set-schema")).toBe(false);
    await page.check("#set-json");
    expect(await page.isVisible("#set-schema")).toBe(true);
    // Not JSON: the settings say so, and nothing is sent.
    await page.fill("#set-schema", "{ not json");
    expect(await page.textContent("#settings-error")).toMatch(/^The JSON schema is not valid JSON: /);
    await page.fill("#set-schema", "[1, 2]");
    expect(await page.textContent("#settings-error")).toBe("The JSON schema must be a JSON object (or empty, for any JSON object).");
    await page.fill("#set-schema", JSON.stringify(SCHEMA, null, 2));
    expect(await page.textContent("#settings-error")).toBe("");
    await page.click("#settings-close");

    await page.setInputFiles("#file", sampleImage);
    await ask("Count the shapes.");
    const first = await reply(1);
    expect(sent[0]).toMatchObject({ response_format: { type: "json_schema", json_schema: { name: "reply", schema: SCHEMA, strict: true } }, temperature: 0, max_tokens: 300 });
    const text = (await first.locator(".text").textContent())!;
    const value: unknown = JSON.parse(text);
    expect(new Ajv().validate(SCHEMA, value)).toBe(true);
    expect(text).toBe(JSON.stringify(value, null, 2));
    expect(await first.locator(".text.json").count()).toBe(1);
    // The same JSON as MultimodalLM gives for the same request.
    const expected = await lm.chat({
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: pngDataUrl } }, { type: "text", text: "Count the shapes." }] }],
      responseFormat: { type: "json_schema", schema: SCHEMA },
      temperature: 0,
      maxTokens: 300,
    });
    expect(value).toEqual(JSON.parse(expected.text));
    expect(await first.locator(".meta").textContent()).toMatch(/^\d+ tokens · /);

    // An empty schema: any JSON object (json_object); the switch off: plain text again.
    await page.screenshot({ path: path.join(root, "test-output", "web-ui", "json-output.png"), fullPage: true });
    await page.click("#settings-toggle");
    await page.fill("#set-schema", "");
    await page.fill("#set-max-tokens", "30");
    await page.click("#settings-close");
    await ask("Anything.");
    await reply(2);
    expect(sent[1]!.response_format).toEqual({ type: "json_object" });
    await page.click("#settings-toggle");
    await page.uncheck("#set-json");
    expect(await page.isVisible("#set-schema")).toBe(false);
    await page.fill("#set-max-tokens", "4");
    await page.click("#settings-close");
    await ask("And now in words.");
    const third = await reply(3);
    expect(sent[2]).not.toHaveProperty("response_format");
    expect(await third.locator(".text.json").count()).toBe(0);
    // The JSON replies went back into the history as the text they were.
    expect((sent[2]!.messages as Array<{ role: string; content: unknown }>).map((m) => m.role)).toEqual(["user", "assistant", "user", "assistant", "user"]);
    expect(problems).toEqual([]);
  });

  it("the Tools setting sends tools and tool_choice; a model whose template takes tools answers with a call the page shows", async () => {
    const files = await ensureTestModel("qwen2vl-tiny");
    const template = readFileSync(path.join(root, "vendor/llama.cpp/models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja"), "utf8");
    const withTools = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: 4096, chatTemplate: template });
    const toolServer = await startServer(withTools, { port: 0 });
    try {
      const tools = [WEATHER_TOOL];
      context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
      page = await context.newPage();
      const bodies: Array<Record<string, unknown>> = [];
      page.on("request", (request) => {
        if (request.url().endsWith("/v1/chat/completions")) bodies.push(JSON.parse(request.postData() ?? "{}") as Record<string, unknown>);
      });
      await page.goto(`${toolServer.url}/`);
      await page.locator("#model-name", { hasText: "qwen2vl-tiny" }).waitFor();
      await page.click("#settings-toggle");
      await page.fill("#set-temperature", "0");
      await page.fill("#set-max-tokens", "300");
      expect(await page.isVisible("#set-tool-choice")).toBe(false);
      await page.fill("#set-tools", "{}");
      expect(await page.textContent("#settings-error")).toMatch(/^The tools must be a JSON array of function tools/);
      await page.fill("#set-tools", JSON.stringify(tools));
      expect(await page.textContent("#settings-error")).toBe("");
      await page.selectOption("#set-tool-choice", "required");
      await page.click("#settings-close");
      await page.setInputFiles("#file", sampleImage);
      await page.fill("#prompt", "What is the weather where this was taken?");
      await page.press("#prompt", "Enter");
      await page.waitForFunction(() => {
        const node = document.querySelectorAll(".message.assistant")[0];
        return !!node && !node.classList.contains("streaming");
      });
      const message = page.locator(".message.assistant").first();
      expect(bodies[0]).toMatchObject({ tools, tool_choice: "required", temperature: 0, max_tokens: 300 });
      const name = await message.locator(".tool-call .name").textContent();
      const args = JSON.parse((await message.locator(".tool-call .arguments").textContent())!) as unknown;
      expect(name).toBe("get_weather");
      expect(new Ajv().validate(WEATHER_TOOL.function.parameters as object, args)).toBe(true);
      expect(await message.locator(".meta").textContent()).toMatch(/ · ended with a tool call$/);
      await page.screenshot({ path: path.join(root, "test-output", "web-ui", "tool-call-real.png"), fullPage: true });
    } finally {
      await context?.close();
      await toolServer.close();
      await withTools.dispose();
    }
  });

  it("shows a streamed reply's tool calls as the function's name and its arguments, indented, and keeps them in the history", async () => {
    await open();
    // The page sends no tools, so a server that answers with calls is stood in for.
    const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
      `data: ${JSON.stringify({ id: "chatcmpl-x", object: "chat.completion.chunk", created: 0, model: "m", choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] })}\n\n`;
    const events = [
      chunk({ role: "assistant", content: "" }),
      chunk({ content: "Let me check." }),
      chunk({ tool_calls: [{ index: 0, id: "abcdefghi", type: "function", function: { name: "get_weather", arguments: '{"city":' } }] }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: ' "Paris", "days": 2}' } }] }),
      chunk({ tool_calls: [{ index: 1, id: "bcdefghij", type: "function", function: { name: "book_table", arguments: '{"people":4}' } }] }),
      chunk({}, "tool_calls"),
      "data: [DONE]\n\n",
    ];
    await page.route("**/v1/chat/completions", (route) => route.fulfill({ status: 200, contentType: "text/event-stream", body: events.join("") }));
    await ask("Weather in Paris, and a table for four?");
    const message = await reply(1);
    expect(await message.locator(".text").textContent()).toBe("Let me check.");
    const calls = await message.locator(".tool-call").evaluateAll((nodes) =>
      nodes.map((node) => [node.querySelector(".name")?.textContent, node.querySelector(".arguments")?.textContent]),
    );
    expect(calls).toEqual([
      ["get_weather", JSON.stringify({ city: "Paris", days: 2 }, null, 2)],
      ["book_table", JSON.stringify({ people: 4 }, null, 2)],
    ]);
    expect(await message.locator(".meta").textContent()).toMatch(/ · ended with a tool call$/);
    await page.screenshot({ path: path.join(root, "test-output", "web-ui", "tool-calls.png"), fullPage: true });

    await page.unroute("**/v1/chat/completions");
    await page.route("**/v1/chat/completions", (route) => route.fulfill({ status: 200, contentType: "text/event-stream", body: [events[0], chunk({ content: "ok" }), chunk({}, "stop"), "data: [DONE]\n\n"].join("") }));
    await ask("Thanks.");
    await reply(2);
    const history = sent[1]!.messages as Array<Record<string, unknown>>;
    expect(history[1]).toEqual({
      role: "assistant",
      content: "Let me check.",
      tool_calls: [
        { id: "abcdefghi", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris", "days": 2}' } },
        { id: "bcdefghij", type: "function", function: { name: "book_table", arguments: '{"people":4}' } },
      ],
    });
    expect(problems).toEqual([]);
  });
});
