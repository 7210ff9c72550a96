// The web chat page, driven in headless Chromium (Debian's chromium package through
// playwright-core; no browser is downloaded): media in by file input, drop and paste, replies
// streamed from the server's SSE and equal to MultimodalLM.chat, multi-turn history, stop, errors.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

import express from "express";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";

import type { ChatMessage } from "../src/messages.js";
import { MultimodalLM } from "../src/multimodal-lm.js";
import { createOpenAIHandler } from "../src/server/handler.js";
import { startServer, type RunningServer } from "../src/server/serve.js";
import { ensureTestModel } from "../src/test-models/index.js";

// page.evaluate() callbacks run in Chromium. These are the few DOM names they use, declared
// module-locally because the tests compile against Node's types (the DOM lib clashes with them).
interface PageNode {
  textContent: string | null;
  classList: { contains(name: string): boolean };
  getAttribute(name: string): string | null;
}
declare const document: {
  querySelector(selector: string): PageNode | null;
  querySelectorAll(selector: string): ArrayLike<PageNode>;
  dispatchEvent(event: unknown): boolean;
};
declare const window: { dispatchEvent(event: unknown): boolean };
declare class DataTransfer {
  items: { add(file: File): void };
}
declare class DragEvent {
  constructor(type: string, init: { dataTransfer: DataTransfer; bubbles: boolean; cancelable: boolean });
}
declare class ClipboardEvent {
  constructor(type: string, init: { clipboardData: DataTransfer; bubbles: boolean; cancelable: boolean });
}

const root = path.resolve(import.meta.dirname, "..");
const outputDir = path.join(root, "test-output", "web-ui");
const sampleImage = path.join(root, "assets", "sample.png");
const sampleVideo = path.join(root, "assets", "sample.mp4");
const pngDataUrl = `data:image/png;base64,${readFileSync(sampleImage).toString("base64")}`;

/** CHROMIUM_PATH, else Debian's chromium (apt-get install chromium) or another system Chrome. */
function findChromium(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];
  return candidates.find((file): file is string => !!file && existsSync(file));
}

const executablePath = findChromium();
if (!executablePath && process.env.CI) {
  throw new Error("CI needs Chromium for the chat page test: apt-get install chromium (or set CHROMIUM_PATH).");
}
if (!executablePath) console.warn("web-ui tests skipped: no Chromium found (apt-get install chromium, or set CHROMIUM_PATH).");

let lm: MultimodalLM;

beforeAll(async () => {
  const files = await ensureTestModel("qwen2vl-tiny");
  // A context long enough that an unbounded reply runs for many seconds, so there is time to stop it.
  lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: 8192 });
}, 600_000);

afterAll(async () => {
  await lm?.dispose();
});

describe("the handler's ui option", () => {
  it("serves the page at / by default, with a CSP that admits only its own inline script and style", async () => {
    const server = await startServer(lm, { port: 0 });
    try {
      const response = await fetch(`${server.url}/`);
      expect(response.status).toBe(200);
      const csp = response.headers.get("content-security-policy")!;
      expect(csp).toMatch(/^default-src 'none'; script-src 'sha256-[A-Za-z0-9+/]+=*'; style-src 'sha256-[A-Za-z0-9+/]+=*'; /);
      expect(csp).toContain("connect-src 'self'");
      const html = await response.text();
      // Nothing is loaded from elsewhere: no src/href to another origin.
      expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
      const config = JSON.parse(/<script id="config" type="application\/json">(.*?)<\/script>/.exec(html)![1]!);
      expect(config).toEqual({ maxBodyBytes: 64 * 1024 * 1024, apiKeyRequired: false, video: { fps: 2, maxFrames: 32, maxFramesLimit: 1024 } });
      expect((await fetch(`${server.url}/`, { method: "HEAD" })).headers.get("content-length")).toBe(String(Buffer.byteLength(html)));
      expect((await fetch(`${server.url}/`, { method: "POST" })).status).toBe(405);
      const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: Array<Record<string, unknown>> };
      expect(models.data[0]).toMatchObject({
        id: "qwen2vl-tiny",
        capabilities: { vision: true, video: true, audio: false },
        meta: { context_size: 8192, architecture: "qwen2vl", projector: "qwen2vl_merger" },
      });
    } finally {
      await server.close();
    }
  });

  it("ui: false leaves / to the app (next) or answers 404; a bad value is refused", async () => {
    const server = await startServer(lm, { port: 0, ui: false, apiKey: "k" });
    try {
      const response = await fetch(`${server.url}/`);
      expect(response.status).toBe(404);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe("E_NOT_FOUND");
    } finally {
      await server.close();
    }
    const app = express();
    const handler = createOpenAIHandler(lm, { ui: false });
    app.use(handler);
    app.get("/", (_req, res) => void res.send("the app's own page"));
    const listener = app.listen(0, "127.0.0.1");
    await new Promise((resolve) => listener.once("listening", resolve));
    try {
      const { port } = listener.address() as AddressInfo;
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("the app's own page");
    } finally {
      listener.close();
      await handler.close();
    }
    expect(() => createOpenAIHandler(lm, { ui: "yes" as unknown as boolean })).toThrow('Expected a boolean for ui but received "yes" of type string');
  });

  it("sends the API-key requirement to the page, and escapes the config so it cannot end its script element", async () => {
    const server = await startServer(lm, { port: 0, apiKey: "k", modelName: "</script><script>alert(1)</script>" });
    try {
      const html = await (await fetch(`${server.url}/`)).text();
      const config = JSON.parse(/<script id="config" type="application\/json">(.*?)<\/script>/.exec(html)![1]!);
      expect(config.apiKeyRequired).toBe(true);
      expect(html).not.toContain("<script>alert(1)");
    } finally {
      await server.close();
    }
  });
});

describe.skipIf(!executablePath)("the chat page in Chromium", () => {
  let browser: Browser;
  let server: RunningServer;
  let context: BrowserContext;
  let page: Page;
  /** Requests to anything but this server (the page must work offline). */
  let foreign: string[];
  /** Script errors and console errors (a CSP violation shows up here). */
  let problems: string[];

  beforeAll(async () => {
    mkdirSync(outputDir, { recursive: true });
    server = await startServer(lm, { port: 0 });
    browser = await chromium.launch({ executablePath: executablePath!, args: ["--no-sandbox"] });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  async function open(url = `${server.url}/`): Promise<Page> {
    context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
    page = await context.newPage();
    foreign = [];
    problems = [];
    // Only the page's own origin, and the blob:/data: URLs of the attached media.
    const origin = new URL(url).origin;
    page.on("request", (request) => {
      const requested = request.url();
      if (!/^(blob|data):/.test(requested) && new URL(requested).origin !== origin) foreign.push(requested);
    });
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console: ${message.text()}`);
    });
    await page.goto(url);
    return page;
  }

  beforeEach(() => {
    foreign = [];
    problems = [];
  });

  afterEach(async () => {
    await context?.close();
    expect(foreign).toEqual([]);
  });

  /** Sets fields in the settings panel (they are kept in localStorage) and closes it. */
  async function settings(values: { temperature?: string; maxTokens?: string; fps?: string; maxFrames?: string }): Promise<void> {
    await page.click("#settings-toggle");
    if (values.temperature !== undefined) await page.fill("#set-temperature", values.temperature);
    if (values.maxTokens !== undefined) await page.fill("#set-max-tokens", values.maxTokens);
    if (values.fps !== undefined) await page.fill("#set-fps", values.fps);
    if (values.maxFrames !== undefined) await page.fill("#set-max-frames", values.maxFrames);
    expect(await page.textContent("#settings-error")).toBe("");
    await page.click("#settings-close");
  }

  async function ask(text: string): Promise<void> {
    await page.fill("#prompt", text);
    await page.press("#prompt", "Enter");
  }

  /** Waits for the n-th reply (1-based) to finish and returns its text and stats line. */
  async function reply(n: number): Promise<{ text: string; meta: string }> {
    const message = page.locator(".message.assistant").nth(n - 1);
    await page.waitForFunction((i) => {
      const node = document.querySelectorAll(".message.assistant")[i];
      return !!node && !node.classList.contains("streaming");
    }, n - 1);
    return { text: (await message.locator(".text").textContent()) ?? "", meta: (await message.locator(".meta").textContent()) ?? "" };
  }

  it("shows the model and its capabilities, takes an image from the file input, and streams a reply equal to MultimodalLM.chat; a follow-up keeps the image in the history", async () => {
    await open();
    await page.locator("#model-name", { hasText: "qwen2vl-tiny" }).waitFor();
    expect(await page.title()).toBe("qwen2vl-tiny · multimodal-lm");
    const capabilities = await page.locator(".cap").evaluateAll((badges) => badges.map((b) => [b.textContent, b.getAttribute("data-supported")]));
    expect(capabilities).toEqual([
      ["vision", "true"],
      ["audio", "false"],
      ["video", "true"],
    ]);

    await settings({ temperature: "0", maxTokens: "120" });
    await page.setInputFiles("#file", sampleImage);
    await page.locator("#attachments .thumb img").waitFor();

    await ask("Describe this image.");
    // The attachment moved into the conversation.
    expect(await page.locator("#attachments .thumb").count()).toBe(0);
    const first = await reply(1);
    expect(first.meta).toMatch(/^120 tokens · [\d.]+ tok\/s · first token [\d.]+ s · prompt \d+ tokens · stopped at the token limit$/);

    const turn1: ChatMessage = {
      role: "user",
      content: [
        { type: "image_url", image_url: { url: pngDataUrl } },
        { type: "text", text: "Describe this image." },
      ],
    };
    const expected1 = await lm.chat({ messages: [turn1], temperature: 0, maxTokens: 120 });
    expect(first.text).toBe(expected1.text);

    await settings({ maxTokens: "40" });
    await ask("And what colours are in it?");
    const second = await reply(2);
    const expected2 = await lm.chat({
      messages: [turn1, { role: "assistant", content: first.text }, { role: "user", content: "And what colours are in it?" }],
      temperature: 0,
      maxTokens: 40,
    });
    expect(second.text).toBe(expected2.text);
    // The first turn, image included, came from the KV cache.
    expect(second.meta).toMatch(/prompt \d+ tokens \(\d+ cached\)/);
    expect(await page.locator(".message.user").count()).toBe(2);
    expect(await page.locator(".message.user").nth(0).locator(".media img").count()).toBe(1);
    await page.screenshot({ path: path.join(outputDir, "chat.png"), fullPage: true });
    expect(problems).toEqual([]);
  });

  it("streams: text appears while the generation runs; the stop button ends it, and the server aborts it and keeps serving", async () => {
    await open();
    await page.locator("#model-name", { hasText: "qwen2vl-tiny" }).waitFor();
    // No token limit: the reply would run until the 8192-token context is full.
    await settings({ temperature: "0", maxTokens: "" });
    const abortedBefore = server.handler.stats.aborted;
    await ask("Go on and on.");
    // Streamed text shows while the reply is still being generated (it would run for many seconds).
    await page.waitForFunction(() => (document.querySelector(".message.assistant .text")?.textContent?.length ?? 0) > 200);
    expect(await page.locator(".message.assistant.streaming").count()).toBe(1);
    expect(server.handler.stats.active).toBe(1);
    expect(await page.isVisible("#send")).toBe(false);
    await page.click("#stop");
    await page.locator(".message.assistant .meta.stopped").waitFor();
    const stoppedText = await page.textContent(".message.assistant .text");
    expect(await page.textContent(".message.assistant .meta")).toMatch(/^stopped after \d+ tokens$/);
    expect(await page.isVisible("#send")).toBe(true);
    expect(await page.isVisible("#stop")).toBe(false);
    await expect.poll(() => server.handler.stats.aborted, { timeout: 5000 }).toBe(abortedBefore + 1);
    expect(server.handler.stats.active).toBe(0);
    await page.waitForTimeout(300);
    expect(await page.textContent(".message.assistant .text")).toBe(stoppedText);

    await settings({ maxTokens: "8" });
    await ask("Short one.");
    expect((await reply(2)).meta).toMatch(/^8 tokens · /);

    // Stopped before any reply (the request is held back): that question leaves the conversation.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    await page.route("**/v1/chat/completions", async (route) => {
      await held;
      await route.continue().catch(() => undefined);
    });
    await ask("Never answered.");
    await page.click("#stop");
    await page.locator(".message.assistant .meta.stopped").nth(1).waitFor();
    expect(await page.textContent(".message.assistant >> nth=2 >> .meta")).toBe("stopped after 0 tokens");
    release();
    await page.unroute("**/v1/chat/completions");
    const bodies: string[] = [];
    page.on("request", (request) => {
      if (request.url().endsWith("/v1/chat/completions")) bodies.push(request.postData() ?? "");
    });
    await ask("Answered.");
    expect((await reply(4)).meta).toMatch(/^8 tokens · /);
    const sent = JSON.parse(bodies[0]!).messages as Array<{ role: string; content: string }>;
    expect(sent.map((m) => m.content)).toEqual(["Go on and on.", stoppedText, "Short one.", (await page.textContent(".message.assistant >> nth=1 >> .text"))!, "Answered."]);
    expect(await page.locator(".message.user.failed").count()).toBe(1);
    await page.screenshot({ path: path.join(outputDir, "stopped.png"), fullPage: true });
    expect(problems).toEqual([]);
  });

  it("takes media by drop and paste (refusing other files), sends a video with the fps and frame settings, and shows server errors readably", async () => {
    await open();
    await page.locator("#model-name", { hasText: "qwen2vl-tiny" }).waitFor();
    await settings({ temperature: "0", maxTokens: "6", fps: "1", maxFrames: "3" });
    const files = {
      png: readFileSync(sampleImage).toString("base64"),
      mp4: readFileSync(sampleVideo).toString("base64"),
    };
    await page.evaluate(({ png, mp4 }) => {
      const file = (base64: string, name: string, type: string) => new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name, { type });
      const dropped = new DataTransfer();
      dropped.items.add(file(mp4, "clip.mp4", "video/mp4"));
      dropped.items.add(file(btoa("just text"), "notes.txt", "text/plain"));
      window.dispatchEvent(new DragEvent("drop", { dataTransfer: dropped, bubbles: true, cancelable: true }));
      const pasted = new DataTransfer();
      pasted.items.add(file(png, "image.png", "image/png"));
      document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: pasted, bubbles: true, cancelable: true }));
    }, files);
    expect(await page.locator("#attachments .thumb").evaluateAll((thumbs) => thumbs.map((t) => t.getAttribute("data-kind")))).toEqual(["video", "image"]);
    // The drop's text file was refused with a notice (the paste then cleared it).
    await page.evaluate(() => {
      const dropped = new DataTransfer();
      dropped.items.add(new File(["x"], "notes.txt", { type: "text/plain" }));
      window.dispatchEvent(new DragEvent("drop", { dataTransfer: dropped, bubbles: true, cancelable: true }));
    });
    expect(await page.textContent("#notice")).toBe("Not attached: notes.txt. This model takes images and videos.");
    await page.click('button[aria-label="Remove image.png"]');
    expect(await page.locator("#attachments .thumb").count()).toBe(1);

    // The video goes through the server's ffmpeg sampling at 1 fps, at most 3 frames.
    const requests: string[] = [];
    page.on("request", (request) => {
      if (request.url().endsWith("/v1/chat/completions")) requests.push(request.postData() ?? "");
    });
    await ask("What happens?");
    const video = await reply(1);
    expect(video.meta).toMatch(/^6 tokens · /);
    const body = JSON.parse(requests[0]!);
    expect(body).toMatchObject({ stream: true, temperature: 0, max_tokens: 6, video_fps: 1, video_max_frames: 3 });
    expect(body.messages[0].content[0].video_url.url).toMatch(/^data:video\/mp4;base64,/);
    const expected = await lm.chat({
      messages: [{ role: "user", content: [{ type: "video", video: sampleVideo }, { type: "text", text: "What happens?" }] }],
      video: { fps: 1, maxFrames: 3 },
      temperature: 0,
      maxTokens: 6,
    });
    expect(video.text).toBe(expected.text);
    expect(await page.locator(".message.user .media video").count()).toBe(1);

    // A corrupt image: the server's 400 is shown with its code and message, and the turn is dropped.
    await page.setInputFiles("#file", { name: "broken.png", mimeType: "image/png", buffer: Buffer.from("not a png at all") });
    await ask("And this?");
    const error = page.locator(".message.error");
    await error.waitFor();
    expect(await error.locator(".title").textContent()).toBe("Error 400 · E_IMAGE_DECODE");
    expect(await error.locator(".text").textContent()).toMatch(
      /^messages\[2\]\.content\[0\]\.image_url: Could not decode the image in buffer of 16 bytes: .+; check that the data is a complete, uncorrupted image\.$/,
    );
    // The server keeps serving, and the failed turn is not part of the conversation.
    requests.length = 0;
    await ask("Still there?");
    expect((await reply(2)).meta).toMatch(/^6 tokens · /);
    expect(JSON.parse(requests[0]!).messages.map((m: { role: string }) => m.role)).toEqual(["user", "assistant", "user"]);
    await page.screenshot({ path: path.join(outputDir, "media-and-errors.png"), fullPage: true });
    // The failed request's 400 is logged by Chromium as a console error; nothing else is.
    expect(problems.filter((p) => !p.includes("400 (Bad Request)"))).toEqual([]);
  });

  it("works on `multimodal-lm serve` itself: a streamed reply, then a stop that the access log records", async () => {
    const files = await ensureTestModel("qwen2vl-tiny");
    const env = { ...process.env };
    delete env.MULTIMODAL_LM_API_KEY;
    const child = spawn(process.execPath, [path.join(root, "lib", "cli", "index.js"), "serve", files.model, "--port", "0", "--ctx-size", "8192"], {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let stdout = "";
        child.stdout.setEncoding("utf8").on("data", (d: string) => {
          stdout += d;
          const line = /^multimodal-lm: chat page at (http:\/\/\S+\/)\n/m.exec(stdout);
          if (line) resolve(line[1]!);
        });
        void exited.then((code) => reject(new Error(`serve exited (${code}) before listening:\n${stderr}`)));
      });
      await open(url);
      await page.locator("#model-name", { hasText: "qwen2vl-tiny" }).waitFor();
      await settings({ temperature: "0", maxTokens: "16" });
      await page.setInputFiles("#file", sampleImage);
      await ask("Describe this image.");
      expect((await reply(1)).meta).toMatch(/^16 tokens · /);

      await settings({ maxTokens: "" });
      await ask("Go on and on.");
      await page.waitForFunction(() => (document.querySelectorAll(".message.assistant")[1]?.textContent?.length ?? 0) > 200);
      await page.click("#stop");
      await page.locator(".message.assistant .meta.stopped").waitFor();
      await expect.poll(() => stderr, { timeout: 5000 }).toMatch(/^POST \/v1\/chat\/completions 200 \d+ms E_ABORTED \(client went away\)$/m);
      expect(stderr).toMatch(/^GET \/ 200 \d+ms$/m);
      expect(problems).toEqual([]);
    } finally {
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    }
  });

  it("works under a mount path in an Express app, and asks for the API key the server requires", async () => {
    const app = express();
    const handler = createOpenAIHandler(lm, { apiKey: "sekret", maxBodyBytes: 200_000 });
    app.use("/llm", handler);
    const listener = http.createServer(app).listen(0, "127.0.0.1");
    await new Promise((resolve) => listener.once("listening", resolve));
    const { port } = listener.address() as AddressInfo;
    const mounted = `http://127.0.0.1:${port}`;
    try {
      await open(`${mounted}/llm`);
      await page.locator("#model-name", { hasText: "API key needed" }).waitFor();
      expect(await page.textContent("#notice")).toMatch(/^Error 401 · E_UNAUTHORIZED: Missing or wrong API key\..* Enter the key under Settings → API key\.$/);
      expect(await page.isVisible("#settings")).toBe(true);
      await page.fill("#set-api-key", "sekret");
      await page.press("#set-api-key", "Tab");
      await page.locator("#model-name", { hasText: "qwen2vl-tiny" }).waitFor();
      await page.click("#settings-close");
      await settings({ temperature: "0", maxTokens: "4" });
      // 160 000 bytes are 213 336 as base64: more than this server's 200 000-byte body limit.
      await page.setInputFiles("#file", [
        { name: "big.png", mimeType: "image/png", buffer: Buffer.alloc(160_000) },
        { name: "sample.png", mimeType: "image/png", buffer: readFileSync(sampleImage) },
      ]);
      expect(await page.textContent("#notice")).toBe(
        "Too large to send: big.png (156 KiB). The server takes requests of at most 195 KiB, and media travel as base64 (a third larger); raise it with the server's --max-body-mb.",
      );
      expect(await page.locator("#attachments .thumb").count()).toBe(1);
      await ask("Hello");
      expect((await reply(1)).meta).toMatch(/^4 tokens · /);
      // Five such images fit one by one, but not in one request: the page says so and sends nothing.
      const png = { name: "sample.png", mimeType: "image/png", buffer: readFileSync(sampleImage) };
      await page.setInputFiles("#file", [png, png, png, png, png]);
      expect(await page.locator("#attachments .thumb").count()).toBe(5);
      await ask("All of them?");
      expect(await page.textContent("#notice")).toMatch(
        /^This message and the conversation before it come to 2\d\d KiB, and the server accepts at most 195 KiB per request\. Remove an attachment, start a new chat, or raise the server's --max-body-mb\.$/,
      );
      expect(await page.locator(".message.user").count()).toBe(1);
      expect(await page.locator("#attachments .thumb").count()).toBe(5);
    } finally {
      listener.close();
      await handler.close();
    }
  });
});
