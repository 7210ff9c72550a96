// POST /v1/audio/transcriptions on the two audio recipes (qwen2audio-tiny, ultravox-tiny): the real
// `openai` client's audio.transcriptions.create gives lm.describeAudio's greedy text for the same
// instruction, as JSON and as text; language and prompt become words of the instruction; bad
// uploads and fields are typed 400s naming the field; and the route shares the chat completions'
// API key, queue, disconnect abort and metrics.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

import express from "express";
import OpenAI, { toFile } from "openai";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM, startServer, type RequestLog, type RunningServer, type ServeOptions } from "../src/index.js";
import { runningChildren } from "../src/media/ffmpeg.js";
import { createOpenAIHandler } from "../src/server/handler.js";
import { languageName, transcriptionInstruction } from "../src/server/transcriptions.js";
import { ensureTestModel } from "../src/test-models/index.js";
import { ffmpegAvailable } from "./helpers/clips.js";

let tmp: string;
let wav: string;
let mp3: string;

function ffmpeg(args: string[]): void {
  const r = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", ...args], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(" ")} failed: ${r.stderr}`);
}

beforeAll(() => {
  if (!ffmpegAvailable()) throw new Error("The audio server tests need ffmpeg and ffprobe on PATH (Debian/Ubuntu: apt-get install ffmpeg).");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-server-audio-"));
  wav = path.join(tmp, "sweep.wav");
  ffmpeg(["-f", "lavfi", "-i", "aevalsrc=sin(2*PI*(200+150*t)*t):s=16000:d=3", "-ac", "1", "-c:a", "pcm_s16le", "-fflags", "+bitexact", "-flags:a", "+bitexact", wav]);
  mp3 = path.join(tmp, "sweep.mp3");
  ffmpeg(["-i", wav, mp3]);
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

/** A multipart POST with fetch's own FormData; `file` is the upload's bytes (a Blob) unless given as a string. */
async function postForm(url: string, fields: Record<string, string | Blob>, headers: Record<string, string> = {}) {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) {
    if (value instanceof Blob) form.append(key, value, key === "file" ? "clip.wav" : "blob");
    else form.append(key, value);
  }
  const response = await fetch(`${url}/v1/audio/transcriptions`, { method: "POST", body: form, headers });
  return response;
}

async function errorOf(response: Response): Promise<ErrorBody["error"]> {
  expect(response.headers.get("content-type")).toBe("application/json");
  return ((await response.json()) as ErrorBody).error;
}

const wavBlob = () => new Blob([fs.readFileSync(wav)], { type: "audio/wav" });

/** Context sizes that leave a few hundred tokens after the clip: the tiny models never stop on their own, so each answer runs to the context's end. */
const CONTEXT = { "qwen2audio-tiny": 896, "ultravox-tiny": 384 } as const;

describe.each(["qwen2audio-tiny", "ultravox-tiny"] as const)("POST /v1/audio/transcriptions on %s", (recipe) => {
  let lm: MultimodalLM;
  let server: RunningServer;
  let client: OpenAI;
  const logs: RequestLog[] = [];

  beforeAll(async () => {
    const files = await ensureTestModel(recipe);
    lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: CONTEXT[recipe], flashAttention: false });
    server = await startServer(lm, { port: 0, onRequest: (log) => logs.push({ ...log }) });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "not-needed", maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.close();
    await lm?.dispose();
  });

  it("the openai client's transcription (json and text, stream or toFile) is describeAudio's greedy text", async () => {
    // OpenAI's defaults: temperature 0, and the instruction is describeAudio's own default.
    const expected = await lm.describeAudio(wav, { temperature: 0 });
    expect(expected.length).toBeGreaterThan(0);
    expect(transcriptionInstruction()).toBe("Transcribe this audio.");

    const json = await client.audio.transcriptions.create({ file: fs.createReadStream(wav), model: "default" });
    expect(json.text).toBe(expected);
    // OpenAI's token usage: the clip's tokens are the audio tokens.
    const prompt = await lm.countTokens("Transcribe this audio.", [], { audios: [wav] });
    expect(json.usage).toEqual({
      type: "tokens",
      input_tokens: prompt.tokens,
      input_token_details: { text_tokens: prompt.tokens - prompt.mediaTokens, audio_tokens: prompt.mediaTokens },
      output_tokens: expect.any(Number),
      total_tokens: expect.any(Number),
    });
    const usage = json.usage as { output_tokens: number; total_tokens: number };
    expect(usage.output_tokens).toBeGreaterThan(0);
    expect(usage.total_tokens).toBe(prompt.tokens + usage.output_tokens);

    const viaToFile = await client.audio.transcriptions.create({ file: await toFile(fs.readFileSync(wav), "clip.wav"), model: server.handler.modelName, temperature: 0 });
    expect(viaToFile.text).toBe(expected);

    const text = await client.audio.transcriptions.create({ file: await toFile(fs.readFileSync(wav), "clip.wav"), model: "default", response_format: "text" });
    expect(text).toBe(expected);
    const raw = await postForm(server.url, { file: wavBlob(), model: "default", response_format: "text" });
    expect(raw.status).toBe(200);
    expect(raw.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    expect(await raw.text()).toBe(expected);

    const log = logs.at(-1)!;
    expect(log).toMatchObject({ method: "POST", path: "/v1/audio/transcriptions", status: 200, aborted: false, stream: false, promptTokens: prompt.tokens });
    expect(log.code).toBeUndefined();
  });

  it("language and prompt become words of the instruction; the sampling extras and an MP3 give describeAudio's text for the same", async () => {
    const instruction = transcriptionInstruction({ language: "de", prompt: "Grüße aus Köln, ZyntriQix." });
    expect(instruction).toBe("Transcribe this audio. The speech is in German.\nContext, for spelling and style only (it is not part of the audio): Grüße aus Köln, ZyntriQix.");
    expect(transcriptionInstruction({ language: "pt-BR" })).toBe("Transcribe this audio. The speech is in Brazilian Portuguese.");
    expect(transcriptionInstruction({ prompt: "   " })).toBe("Transcribe this audio.");
    expect(languageName("en")).toBe("English");
    expect(languageName("xx")).toBeUndefined();

    const expected = await lm.describeAudio(wav, { prompt: instruction, temperature: 0 });
    expect(expected.length).toBeGreaterThan(0);
    const r = await client.audio.transcriptions.create({
      file: fs.createReadStream(wav),
      model: "default",
      language: "de",
      prompt: "Grüße aus Köln, ZyntriQix.",
      response_format: "json",
      temperature: 0,
    });
    expect(r.text).toBe(expected);

    // vLLM's extras, as the SDK sends unknown fields: a seed and a token cap.
    const capped = await lm.describeAudio(mp3, { temperature: 0, seed: 42, maxTokens: 8 });
    const extras = { seed: 42, max_completion_tokens: 8 } as Record<string, unknown>;
    const viaMp3 = await client.audio.transcriptions.create({ file: fs.createReadStream(mp3), model: "default", temperature: 0, ...extras });
    expect(viaMp3.text).toBe(capped);
    expect((viaMp3.usage as { output_tokens: number }).output_tokens).toBe(8);

    // Sampled at a temperature with a seed: the same text twice.
    const sampled = { file: wavBlob(), model: "default", temperature: "0.9", seed: "7", max_completion_tokens: "12" };
    const first = (await (await postForm(server.url, sampled)).json()) as { text: string };
    const second = (await (await postForm(server.url, sampled)).json()) as { text: string };
    expect(second.text).toBe(first.text);
    expect(first.text).toBe(await lm.describeAudio(wav, { temperature: 0.9, seed: 7, maxTokens: 12 }));
  });

  it("bad uploads and fields are 400s naming the field, in OpenAI's error shape, with nothing left running", async () => {
    // No file.
    let error = await errorOf(await postForm(server.url, { model: "default" }));
    expect(error).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "file", type: "invalid_request_error" });
    // file as a text field, not an upload.
    error = await errorOf(await postForm(server.url, { file: "clip.wav", model: "default" }));
    expect(error).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "file" });
    expect(error.message).toMatch(/file must be a file upload/);
    // Two clips.
    const two = new FormData();
    two.append("file", wavBlob(), "a.wav");
    two.append("file", wavBlob(), "b.wav");
    error = await errorOf(await fetch(`${server.url}/v1/audio/transcriptions`, { method: "POST", body: two }));
    expect(error).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "file" });
    expect(error.message).toMatch(/2 fields named file/);
    // Bytes that are not audio: the library's typed error, naming the upload.
    const bad = await postForm(server.url, { file: new Blob([Buffer.from("not audio at all, just text")]), model: "default" });
    expect(bad.status).toBe(400);
    error = await errorOf(bad);
    expect(error).toMatchObject({ code: "E_AUDIO_DECODE", param: "file", type: "invalid_request_error" });
    expect(error.message).toMatch(/^The file "clip\.wav" \(27 bytes\) could not be decoded as audio/);
    // An empty file.
    error = await errorOf(await postForm(server.url, { file: new Blob([]), model: "default" }));
    expect(error).toMatchObject({ code: "E_AUDIO_DECODE", param: "file" });
    expect(error.message).toMatch(/empty \(0 bytes\)/);
    // Formats that need timestamps, and unknown ones.
    for (const format of ["srt", "vtt", "verbose_json"]) {
      error = await errorOf(await postForm(server.url, { file: wavBlob(), model: "default", response_format: format }));
      expect(error).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "response_format" });
      expect(error.message).toMatch(/not supported by this server.*Use "json" \(the default\) or "text"/);
    }
    error = await errorOf(await postForm(server.url, { file: wavBlob(), model: "default", response_format: "xml" }));
    expect(error).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "response_format" });
    // Fields out of range, and what cannot be honoured.
    for (const [field, value] of [
      ["temperature", "1.5"],
      ["temperature", "warm"],
      ["language", "xx"],
      ["language", "English"],
      ["seed", "1.5"],
      ["max_completion_tokens", "0"],
      ["stream", "true"],
      ["timestamp_granularities[]", "word"],
    ]) {
      error = await errorOf(await postForm(server.url, { file: wavBlob(), model: "default", [field!]: value! }));
      expect(error, `${field}=${value}`).toMatchObject({ code: "E_INVALID_ARGUMENT", param: field!.replace("[]", "") });
    }
    // An unknown model name is a 404, as in chat completions.
    const unknown = await postForm(server.url, { file: wavBlob(), model: "whisper-1" });
    expect(unknown.status).toBe(404);
    expect(await errorOf(unknown)).toMatchObject({ code: "E_NOT_FOUND", param: "model" });
    // Not multipart: a JSON body, and a multipart type without a boundary.
    const asJson = await fetch(`${server.url}/v1/audio/transcriptions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "default", file: "x" }) });
    expect(asJson.status).toBe(400);
    error = await errorOf(asJson);
    expect(error.code).toBe("E_INVALID_ARGUMENT");
    expect(error.message).toMatch(/takes a multipart\/form-data body .*this request has Content-Type application\/json/);
    const noBoundary = await fetch(`${server.url}/v1/audio/transcriptions`, { method: "POST", headers: { "content-type": "multipart/form-data" }, body: "x" });
    expect(await errorOf(noBoundary)).toMatchObject({ code: "E_INVALID_ARGUMENT" });
    // A broken multipart body.
    const broken = await fetch(`${server.url}/v1/audio/transcriptions`, { method: "POST", headers: { "content-type": "multipart/form-data; boundary=zzz" }, body: "--zzz\r\nnonsense" });
    expect(broken.status).toBe(400);
    expect((await errorOf(broken)).message).toMatch(/not a valid multipart\/form-data body/);
    // GET: 405 with Allow.
    const get = await fetch(`${server.url}/v1/audio/transcriptions`);
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");

    // The openai client raises them as its typed errors.
    const sdkError = await client.audio.transcriptions.create({ file: await toFile(Buffer.from("nope"), "x.mp3"), model: "default" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(sdkError).toBeInstanceOf(OpenAI.BadRequestError);
    expect(sdkError).toMatchObject({ status: 400, code: "E_AUDIO_DECODE", param: "file" });

    expect(runningChildren()).toBe(0);
    expect(server.handler.stats.active).toBe(0);
    // Still serving.
    expect((await client.audio.transcriptions.create({ file: fs.createReadStream(wav), model: "default", ...({ max_completion_tokens: 2 } as object) })).text.length).toBeGreaterThan(0);
  });

  it("a body past maxBodyBytes is a 413; the 404 list names the endpoint on an audio model", async () => {
    const small = await startServer(lm, { port: 0, maxBodyBytes: 50_000 });
    try {
      const r = await postForm(small.url, { file: wavBlob(), model: "default" });
      expect(r.status).toBe(413);
      expect((await errorOf(r)).code).toBe("E_BODY_TOO_LARGE");
      const nope = await fetch(`${small.url}/nope`);
      expect((await errorOf(nope)).message).toBe(
        "No endpoint GET /nope. This server serves POST /v1/chat/completions, POST /v1/audio/transcriptions, GET /v1/models, GET /health, GET /metrics and the chat page at GET /.",
      );
    } finally {
      await small.close();
    }
  });
});

describe("transcriptions on a vision-only model", () => {
  it("is a 400 naming the model, and the 404 list leaves the endpoint out", async () => {
    const files = await ensureTestModel("qwen2vl-tiny");
    const lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });
    const server = await startServer(lm, { port: 0, ui: false, metrics: false });
    try {
      const r = await postForm(server.url, { file: wavBlob(), model: "default" });
      expect(r.status).toBe(400);
      const error = await errorOf(r);
      expect(error).toMatchObject({ code: "E_INVALID_ARGUMENT", param: "model", type: "invalid_request_error" });
      expect(error.message).toMatch(/cannot transcribe audio: its projector takes vision \(images and video\) only/);
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
      const sdkError = await client.audio.transcriptions.create({ file: fs.createReadStream(wav), model: "default" }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(sdkError).toMatchObject({ status: 400, code: "E_INVALID_ARGUMENT", param: "model" });
      const nope = await fetch(`${server.url}/nope`);
      expect((await errorOf(nope)).message).toBe("No endpoint GET /nope. This server serves POST /v1/chat/completions, GET /v1/models and GET /health.");
    } finally {
      await server.close();
      await lm.dispose();
    }
  });
});

describe("transcriptions share the API key, the queue, the disconnect abort and the metrics", () => {
  let lm: MultimodalLM;
  const servers: RunningServer[] = [];
  const logs: RequestLog[] = [];

  beforeAll(async () => {
    const files = await ensureTestModel("qwen2audio-tiny");
    // One slot and a large context: an uncapped transcription runs for many seconds (the tiny model never stops on its own).
    lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: 32768, parallel: 1, flashAttention: false });
  });
  afterAll(async () => {
    for (const server of servers) await server.close();
    await lm?.dispose();
  });

  async function serve(options: ServeOptions): Promise<RunningServer> {
    const server = await startServer(lm, { port: 0, onRequest: (log) => logs.push({ ...log }), ...options });
    servers.push(server);
    return server;
  }

  async function until(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it("needs the key; a second request past maxQueue is a 429; a disconnect aborts the generation; the metrics count them", async () => {
    const server = await serve({ apiKey: "sekret", maxQueue: 0 });
    const auth = { authorization: "Bearer sekret" };

    const noKey = await postForm(server.url, { file: wavBlob(), model: "default" });
    expect(noKey.status).toBe(401);
    expect((await errorOf(noKey)).code).toBe("E_UNAUTHORIZED");
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "sekret", maxRetries: 0 });
    const done = await client.audio.transcriptions.create({ file: fs.createReadStream(wav), model: "default", ...({ max_completion_tokens: 4 } as object) });
    expect(done.text).toBe(await lm.describeAudio(wav, { temperature: 0, maxTokens: 4 }));

    // An uncapped transcription that holds the only slot until its client goes away.
    const controller = new AbortController();
    const form = new FormData();
    form.append("file", wavBlob(), "clip.wav");
    form.append("model", "default");
    const long = fetch(`${server.url}/v1/audio/transcriptions`, { method: "POST", headers: auth, body: form, signal: controller.signal }).then(
      (r) => r.status,
      () => "aborted",
    );
    await until(() => server.handler.stats.active === 1 && lm.stats.slots.busy === 1, "the transcription to hold the slot");
    const full = await postForm(server.url, { file: wavBlob(), model: "default" }, auth);
    expect(full.status).toBe(429);
    expect(full.headers.get("retry-after")).toBe("1");
    expect(await errorOf(full)).toMatchObject({ code: "E_QUEUE_FULL", type: "rate_limit_error" });

    const aborted = Date.now();
    controller.abort();
    expect(await long).toBe("aborted");
    await until(() => logs.some((log) => log.aborted), "the aborted request's log");
    // The generation stopped at once (uncapped, it would run for many seconds) and freed its slot.
    await until(() => lm.stats.slots.busy === 0, "the slot to be freed", 5_000);
    expect(Date.now() - aborted).toBeLessThan(5_000);
    const log = logs.find((l) => l.aborted)!;
    expect(log).toMatchObject({ path: "/v1/audio/transcriptions", code: "E_ABORTED", aborted: true });
    expect(log.completionTokens).toBeUndefined();
    expect(server.handler.stats).toMatchObject({ active: 0, completed: 1, aborted: 1, rejected: 1 });

    const scraped = await fetch(`${server.url}/metrics`, { headers: auth });
    expect(scraped.status).toBe(200);
    const families = parsePrometheusTextFormat(await scraped.text());
    const family = (name: string) => families.find((f) => f.name === `multimodal_lm_${name}`)!;
    const requests = Object.fromEntries(family("requests_total").metrics.map((m) => [`${m.labels!.status} ${m.labels!.code}`, Number(m.value)]));
    expect(requests).toEqual({ "401 E_UNAUTHORIZED": 1, "200 ": 1, "429 E_QUEUE_FULL": 1, "200 E_ABORTED": 1 });
    const promptTokens = (await lm.countTokens("Transcribe this audio.", [], { audios: [wav] })).tokens;
    expect(Number(family("prompt_tokens_total").metrics[0]!.value)).toBe(promptTokens);
    expect(Number(family("generation_tokens_total").metrics[0]!.value)).toBe(4);
    expect(runningChildren()).toBe(0);
  });

  it("works mounted in Express behind express.json(), which leaves a multipart body unread", async () => {
    const handler = createOpenAIHandler(lm);
    const app = express();
    app.use(express.json());
    app.use(handler);
    const listener = http.createServer(app).listen(0, "127.0.0.1");
    await new Promise((resolve) => listener.once("listening", resolve));
    try {
      const url = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`;
      const r = await postForm(url, { file: wavBlob(), model: "default", response_format: "text", max_completion_tokens: "3" });
      expect(r.status).toBe(200);
      expect(await r.text()).toBe(await lm.describeAudio(wav, { temperature: 0, maxTokens: 3 }));
      // JSON chat completions still come through express.json()'s parsed body.
      const chat = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], max_tokens: 2 }),
      });
      expect(chat.status).toBe(200);
    } finally {
      await new Promise((resolve) => listener.close(resolve));
      await handler.close();
    }
  });

  it("takes the bytes express.raw() read; a body another middleware consumed is a 400 that says so", async () => {
    const handler = createOpenAIHandler(lm);
    const app = express();
    app.use("/raw", express.raw({ type: "multipart/form-data", limit: "10mb" }), handler);
    // A stand-in for a multipart parser (multer): reads the whole body and leaves fields in req.body.
    app.use(
      "/eaten",
      (req, _res, next) => {
        req.resume();
        req.on("end", () => {
          (req as unknown as { body: unknown }).body = { model: "default" };
          next();
        });
      },
      handler,
    );
    const listener = http.createServer(app).listen(0, "127.0.0.1");
    await new Promise((resolve) => listener.once("listening", resolve));
    try {
      const url = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`;
      const r = await postForm(`${url}/raw`, { file: wavBlob(), model: "default", max_completion_tokens: "3" });
      expect(r.status).toBe(200);
      expect(((await r.json()) as { text: string }).text).toBe(await lm.describeAudio(wav, { temperature: 0, maxTokens: 3 }));
      const eaten = await postForm(`${url}/eaten`, { file: wavBlob(), model: "default" });
      expect(eaten.status).toBe(400);
      expect((await errorOf(eaten)).message).toMatch(/already consumed by another middleware/);
    } finally {
      await new Promise((resolve) => listener.close(resolve));
      await handler.close();
    }
  });
});
