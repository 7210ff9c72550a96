// Audio on the chat page, in headless Chromium (see web-ui.test.ts) with a fake microphone
// (--use-fake-device-for-media-stream): on an audio model an audio file is attached with a
// player and sent as an input_audio part (base64, format from its type), and resent on later
// turns; a recording from the microphone is attached, playable, and sent as webm/ogg that the
// server decodes; a denied microphone is reported; a vision-only model offers no Record button
// and refuses audio files with a notice, sending nothing.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import type { ChatMessage } from "../src/messages.js";
import { MultimodalLM } from "../src/multimodal-lm.js";
import { startServer, type RunningServer } from "../src/server/serve.js";
import { ensureTestModel } from "../src/test-models/index.js";

// page.evaluate() callbacks run in Chromium; the tests compile against Node's types.
interface PageAudio {
  src: string;
  duration: number;
  readyState: number;
  currentTime: number;
  paused: boolean;
  muted: boolean;
  play(): Promise<void>;
  pause(): void;
  addEventListener(type: string, listener: () => void, options?: { once: boolean }): void;
}
declare const document: { querySelectorAll(selector: string): ArrayLike<{ classList: { contains(name: string): boolean } }> };
declare const window: { dispatchEvent(event: unknown): boolean };
declare const navigator: { mediaDevices: { getUserMedia: unknown } };
declare class DataTransfer {
  items: { add(file: File): void };
}
declare class DragEvent {
  constructor(type: string, init: { dataTransfer: DataTransfer; bubbles: boolean; cancelable: boolean });
}

const root = path.resolve(import.meta.dirname, "..");
const outputDir = path.join(root, "test-output", "web-ui");
const sampleImage = path.join(root, "assets", "sample.png");
const executablePath = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].find((file): file is string => !!file && existsSync(file));
if (!executablePath && process.env.CI) throw new Error("CI needs Chromium for the chat page test: apt-get install chromium (or set CHROMIUM_PATH).");

type Body = { messages: ChatMessage[]; temperature?: number; max_tokens?: number };
type AudioPart = { type: "input_audio"; input_audio: { data: string; format: string } };

describe.skipIf(!executablePath)("audio on the chat page", () => {
  let tmp: string;
  let wav: string;
  let audioLM: MultimodalLM;
  let audioServer: RunningServer;
  let visionLM: MultimodalLM;
  let visionServer: RunningServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let problems: string[];
  /** Bodies of the page's chat-completion requests, and the statuses of their responses. */
  let sent: Body[];
  let statuses: number[];

  beforeAll(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "mmlm-web-audio-"));
    wav = path.join(tmp, "tone.wav");
    const made = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1", "-ac", "1", "-c:a", "pcm_s16le", wav], {
      encoding: "utf8",
      timeout: 60_000,
    });
    if (made.status !== 0) throw new Error(`ffmpeg failed: ${made.stderr}`);
    const audioFiles = await ensureTestModel("qwen2audio-tiny");
    audioLM = await MultimodalLM.load({ model: audioFiles.model, mmproj: audioFiles.mmproj, contextSize: 4096 });
    audioServer = await startServer(audioLM, { port: 0 });
    const visionFiles = await ensureTestModel("qwen2vl-tiny");
    visionLM = await MultimodalLM.load({ model: visionFiles.model, mmproj: visionFiles.mmproj, contextSize: 4096 });
    visionServer = await startServer(visionLM, { port: 0 });
    mkdirSync(outputDir, { recursive: true });
    browser = await chromium.launch({
      executablePath: executablePath!,
      // A fake microphone (a beeping tone) that is granted without a prompt; media may play without a click.
      args: ["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required"],
    });
  }, 600_000);

  afterAll(async () => {
    await browser?.close();
    await audioServer?.close();
    await visionServer?.close();
    await audioLM?.dispose();
    await visionLM?.dispose();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  afterEach(async () => {
    await context?.close();
  });

  async function open(server: RunningServer, model: string, init?: () => void): Promise<void> {
    context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
    await context.grantPermissions(["microphone"], { origin: server.url });
    page = await context.newPage();
    if (init) await page.addInitScript(init);
    problems = [];
    sent = [];
    statuses = [];
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console: ${message.text()}`);
    });
    page.on("request", (request) => {
      if (request.url().endsWith("/v1/chat/completions")) sent.push(JSON.parse(request.postData() ?? "{}") as Body);
    });
    page.on("response", (response) => {
      if (response.url().endsWith("/v1/chat/completions")) statuses.push(response.status());
    });
    await page.goto(`${server.url}/`);
    await page.locator("#model-name", { hasText: model }).waitFor();
  }

  async function settings(temperature: string, maxTokens: string): Promise<void> {
    await page.click("#settings-toggle");
    await page.fill("#set-temperature", temperature);
    await page.fill("#set-max-tokens", maxTokens);
    expect(await page.textContent("#settings-error")).toBe("");
    await page.click("#settings-close");
  }

  async function ask(text: string): Promise<void> {
    await page.fill("#prompt", text);
    await page.press("#prompt", "Enter");
  }

  /** Waits for the n-th reply (1-based) to finish and returns its text and stats line. */
  async function reply(n: number): Promise<{ text: string; meta: string }> {
    await page.waitForFunction((i) => {
      const node = document.querySelectorAll(".message.assistant")[i];
      return !!node && !node.classList.contains("streaming");
    }, n - 1);
    const message = page.locator(".message.assistant").nth(n - 1);
    return { text: (await message.locator(".text").textContent()) ?? "", meta: (await message.locator(".meta").textContent()) ?? "" };
  }

  /** Loads the player's metadata and plays it (muted) until its clock moves: its source, duration, and whether it played. */
  async function play(selector: string): Promise<{ src: string; duration: number; played: boolean }> {
    return page.locator(selector).evaluate(async (node: PageAudio) => {
      if (node.readyState < 1) await new Promise<void>((resolve) => node.addEventListener("loadedmetadata", () => resolve(), { once: true }));
      node.muted = true;
      await node.play();
      // Headless Chromium's audio output takes a moment to start; the clock then runs.
      for (let waited = 0; node.currentTime === 0 && waited < 5000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
      const played = node.currentTime > 0;
      node.pause();
      node.currentTime = 0;
      node.muted = false;
      return { src: node.src, duration: node.duration, played };
    });
  }

  it("attaches a WAV file with a player, sends it as input_audio (base64, wav), shows it in the history and resends it on the next turn", async () => {
    await open(audioServer, "qwen2audio-tiny");
    const capabilities = await page.locator(".cap").evaluateAll((badges) => badges.map((b) => [b.textContent, b.getAttribute("data-supported")]));
    expect(capabilities).toEqual([
      ["vision", "false"],
      ["audio", "true"],
      ["video", "false"],
    ]);
    expect(await page.getAttribute("#file", "accept")).toBe("audio/*");
    expect(await page.getAttribute("#attach", "title")).toBe("Attach audio");
    expect(await page.isVisible("#record")).toBe(true);
    expect(await page.getAttribute("#prompt", "placeholder")).toBe("Ask about your audio (Enter sends, Shift+Enter adds a line)");

    // An image is not for this model: a notice, no attachment.
    await page.setInputFiles("#file", sampleImage);
    expect(await page.textContent("#notice")).toBe("Not attached: sample.png. This model does not take images; it takes audio.");
    expect(await page.locator("#attachments .thumb").count()).toBe(0);

    await settings("0", "8");
    await page.setInputFiles("#file", wav);
    const attached = await play("#attachments .thumb[data-kind=audio] audio");
    expect(attached.src).toMatch(/^blob:/);
    expect(attached.duration).toBeCloseTo(1, 1);
    expect(attached.played).toBe(true);
    expect(await page.textContent("#attachments .clip-name")).toBe("tone.wav");
    expect(await page.textContent("#notice")).toBe("");
    await page.screenshot({ path: path.join(outputDir, "audio-attached.png"), fullPage: true });

    await ask("What is this sound?");
    const first = await reply(1);
    expect(first.meta).toMatch(/^\d+ tokens · /);
    const base64 = readFileSync(wav).toString("base64");
    const turn1: ChatMessage = {
      role: "user",
      content: [
        { type: "input_audio", input_audio: { data: base64, format: "wav" } },
        { type: "text", text: "What is this sound?" },
      ],
    };
    expect(sent[0]).toMatchObject({ temperature: 0, max_tokens: 8, messages: [turn1] });
    expect(statuses[0]).toBe(200);
    // The reply is the library's for the same request.
    const expected = await audioLM.chat({ messages: [turn1], temperature: 0, maxTokens: 8 });
    expect(first.text).toBe(expected.text);
    expect(first.text.length).toBeGreaterThan(0);

    // The clip moved into the conversation, still playable.
    expect(await page.locator("#attachments .thumb").count()).toBe(0);
    const shown = await play(".message.user .media audio");
    expect(shown.src).toBe(attached.src);
    expect(shown.duration).toBeCloseTo(1, 1);

    // The next turn sends the clip again, as the first turn of the history.
    await ask("Once more?");
    const second = await reply(2);
    expect(second.meta).toMatch(/prompt \d+ tokens \(\d+ cached\)/);
    expect(sent[1]!.messages).toEqual([turn1, { role: "assistant", content: first.text }, { role: "user", content: "Once more?" }]);
    await page.screenshot({ path: path.join(outputDir, "audio-chat.png"), fullPage: true });
    expect(problems).toEqual([]);
  });

  it("records from the microphone: the recording is attached, playable, and sent as webm (or ogg) that the server decodes", async () => {
    await open(audioServer, "qwen2audio-tiny");
    await settings("0", "8");
    expect(await page.textContent("#record")).toBe("Record");
    await page.click("#record");
    await page.locator("#record.recording").waitFor();
    expect(await page.getAttribute("#record", "aria-pressed")).toBe("true");
    await page.waitForTimeout(1200);
    expect(await page.textContent("#record")).toMatch(/^Stop recording 0:0[1-9]$/);
    await page.screenshot({ path: path.join(outputDir, "audio-recording.png"), fullPage: true });
    // Sending while recording asks for the recording to be stopped first.
    await ask("Too soon.");
    expect(await page.textContent("#notice")).toMatch(/^Still recording: press Stop recording first\./);
    expect(sent).toEqual([]);
    await page.click("#record");
    await page.locator("#attachments .thumb[data-kind=audio] audio").waitFor();
    expect(await page.textContent("#record")).toBe("Record");
    expect(await page.textContent("#attachments .clip-name")).toMatch(/^recording \d\d-\d\d-\d\d\.(webm|ogg)$/);
    const recorded = await play("#attachments .thumb[data-kind=audio] audio");
    expect(recorded.src).toMatch(/^blob:/);
    expect(recorded.played).toBe(true);
    await page.screenshot({ path: path.join(outputDir, "audio-recorded.png"), fullPage: true });

    await ask("What did I say?");
    const answer = await reply(1);
    expect(answer.meta).toMatch(/^\d+ tokens · /);
    expect(statuses).toEqual([200]);
    const part = (sent[0]!.messages[0]!.content as AudioPart[])[0]!;
    expect(part.type).toBe("input_audio");
    expect(["webm", "ogg"]).toContain(part.input_audio.format);
    const bytes = Buffer.from(part.input_audio.data, "base64");
    // WebM begins with the EBML magic, Ogg with "OggS"; about a second of Opus is a few KiB.
    expect(bytes.subarray(0, 4).toString("hex")).toBe(part.input_audio.format === "webm" ? "1a45dfa3" : "4f676753");
    expect(bytes.length).toBeGreaterThan(1000);
    expect(await page.locator(".message.user .media audio").count()).toBe(1);

    // New chat during a recording throws the recording away and frees the microphone.
    await page.click("#record");
    await page.locator("#record.recording").waitFor();
    await page.click("#new-chat");
    await page.locator("#record:not(.recording)").waitFor();
    expect(await page.textContent("#record")).toBe("Record");
    await page.waitForTimeout(300);
    expect(await page.locator("#attachments .thumb").count()).toBe(0);
    expect(await page.textContent("#notice")).toBe("");
    expect(problems).toEqual([]);
  });

  it("reports a denied microphone clearly and attaches nothing", async () => {
    await open(audioServer, "qwen2audio-tiny", () => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
    });
    await page.click("#record");
    await page.locator("#notice", { hasText: "Microphone access was denied." }).waitFor();
    expect(await page.textContent("#notice")).toBe(
      "Microphone access was denied. Allow this page to use the microphone (the icon in the address bar, or the browser's site settings) and press Record again, or attach an audio file instead.",
    );
    expect(await page.textContent("#record")).toBe("Record");
    expect(await page.isEnabled("#record")).toBe(true);
    expect(await page.locator("#attachments .thumb").count()).toBe(0);
    expect(problems).toEqual([]);
  });

  it("on a vision-only model offers no Record button, and refuses audio files with a notice, sending nothing", async () => {
    await open(visionServer, "qwen2vl-tiny");
    expect(await page.isVisible("#record")).toBe(false);
    expect(await page.getAttribute("#file", "accept")).toBe("image/*,video/*");
    expect(await page.getAttribute("#attach", "title")).toBe("Attach images or videos");
    await page.setInputFiles("#file", wav);
    expect(await page.textContent("#notice")).toBe("Not attached: tone.wav. This model does not take audio; it takes images and videos.");
    expect(await page.locator("#attachments .thumb").count()).toBe(0);
    // Dropped, too (with a file of no known kind: the same sentence names both).
    const mp3 = readFileSync(wav).toString("base64");
    await page.evaluate((data) => {
      const dropped = new DataTransfer();
      dropped.items.add(new File([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], "voice.mp3", { type: "audio/mpeg" }));
      dropped.items.add(new File(["x"], "notes.txt", { type: "text/plain" }));
      window.dispatchEvent(new DragEvent("drop", { dataTransfer: dropped, bubbles: true, cancelable: true }));
    }, mp3);
    expect(await page.textContent("#notice")).toBe("Not attached: voice.mp3, notes.txt. This model does not take audio; it takes images and videos.");
    expect(await page.locator("#attachments .thumb").count()).toBe(0);
    await page.press("#prompt", "Enter");
    expect(await page.textContent("#notice")).toBe("Type a message or attach images or videos first.");
    await page.screenshot({ path: path.join(outputDir, "audio-refused.png"), fullPage: true });
    expect(sent).toEqual([]);
    expect(await page.locator(".message").count()).toBe(0);
    expect(problems).toEqual([]);
  });
});
