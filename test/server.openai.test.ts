// The OpenAI-compatible server against the real `openai` client: every request shape of the
// two seed documents (vllm-mlx and LMDeploy), adapted only in URL, model and media location;
// streaming; parity with MultimodalLM; errors in OpenAI's shape.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import OpenAI from "openai";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  checkServeOptions,
  createOpenAIHandler,
  MultimodalLM,
  startServer,
  type OpenAIHandlerOptions,
  type RunningServer,
  type ServeOptions,
} from "../src/index.js";
import type { ChatMessage } from "../src/messages.js";
import { runningChildren } from "../src/media/ffmpeg.js";
import { liveTempDirs } from "../src/media/video.js";
import { ensureTestModel } from "../src/test-models/index.js";
import { ffmpegAvailable, indexClip } from "./helpers/clips.js";
import { fakeDns, startMediaServer, type MediaServer } from "./helpers/server.js";

const root = path.resolve(import.meta.dirname, "..");
let tmp: string;
let mediaDir: string;
let lm: MultimodalLM;
let server: RunningServer;
let media: MediaServer;
let client: OpenAI;
let MEDIA: string; // http://media.test:PORT, served from mediaDir on 127.0.0.2
let modelName: string;

type Body = OpenAI.Chat.ChatCompletionCreateParamsNonStreaming & Record<string, unknown>;

beforeAll(async () => {
  if (!ffmpegAvailable()) throw new Error("The server tests need ffmpeg and ffprobe on PATH (Debian/Ubuntu: apt-get install ffmpeg).");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-server-"));
  mediaDir = path.join(tmp, "media");
  fs.mkdirSync(mediaDir);
  // The seeds' file names: image.jpg, photo.jpg, tiger.jpeg, video.mp4, space_woaudio.mp4.
  const jpeg = await sharp(path.join(root, "assets", "sample.png")).jpeg().toBuffer();
  for (const name of ["image.jpg", "photo.jpg", "tiger.jpeg"]) fs.writeFileSync(path.join(mediaDir, name), jpeg);
  // 10 s at 2 fps is 20 frames: more than video_max_frames 16, fewer than 32.
  indexClip(path.join(mediaDir, "video.mp4"), { fps: 10, seconds: 10, width: 64, height: 48 });
  fs.copyFileSync(path.join(mediaDir, "video.mp4"), path.join(mediaDir, "space_woaudio.mp4"));

  const files = await ensureTestModel("qwen2vl-tiny");
  lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: 2048 });
  media = await startMediaServer(mediaDir, "127.0.0.2");
  MEDIA = `http://media.test:${media.port}`;
  server = await startServer(lm, {
    port: 0,
    allowedLocalMediaPath: mediaDir,
    allowedMediaDomains: ["media.test"],
    allowedPrivateNetworks: ["127.0.0.2"],
    lookup: fakeDns({ "media.test": "127.0.0.2" }),
  });
  modelName = server.handler.modelName;
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "not-needed", maxRetries: 0 });
}, 600_000);

afterAll(async () => {
  await server?.close();
  await media?.close();
  await lm?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const local = (name: string) => path.join(mediaDir, name);
const create = (body: Body) => client.chat.completions.create(body as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);

/** Prompt tokens MultimodalLM counts for the same media: proves the server read them, with these options. */
async function expectedPromptTokens(text: string, images: string[], videos: string[], video: Record<string, number> = {}, image: Record<string, number> = {}) {
  return (await lm.countTokens(text, images.map(local), { videos: videos.map(local), video, image })).tokens;
}

function expectCompletion(r: OpenAI.Chat.ChatCompletion) {
  expect(r.object).toBe("chat.completion");
  expect(r.id).toMatch(/^chatcmpl-/);
  expect(r.model).toBe(modelName);
  expect(r.choices).toHaveLength(1);
  expect(r.choices[0]!.message.role).toBe("assistant");
  expect(typeof r.choices[0]!.message.content).toBe("string");
  expect(["stop", "length"]).toContain(r.choices[0]!.finish_reason);
  expect(r.usage!.total_tokens).toBe(r.usage!.prompt_tokens + r.usage!.completion_tokens);
}

describe("vllm-mlx seed requests", () => {
  it("image from URL, max_tokens 256", async () => {
    const r = await create({
      model: "default",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "What's in this image?" },
            { type: "image_url", image_url: { url: `${MEDIA}/image.jpg` } },
          ],
        },
      ],
      max_tokens: 256,
    });
    expectCompletion(r);
    expect(r.usage!.completion_tokens).toBeLessThanOrEqual(256);
    expect(r.usage!.prompt_tokens).toBe(await expectedPromptTokens("What's in this image?", ["image.jpg"], []));
  });

  it("base64 image", async () => {
    const base64_image = fs.readFileSync(local("photo.jpg")).toString("base64");
    const r = await create({
      model: "default",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Describe this image" },
            { type: "image_url", image_url: { url: `data:image/jpeg;base64,${base64_image}` } },
          ],
        },
      ],
    });
    expectCompletion(r);
    expect(r.usage!.prompt_tokens).toBe(await expectedPromptTokens("Describe this image", ["photo.jpg"], []));
  });

  it("image via curl (plain JSON POST)", async () => {
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: `{
    "model": "default",
    "messages": [{
      "role": "user",
      "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "${MEDIA}/image.jpg"}}
      ]
    }],
    "max_tokens": 256
  }`,
    });
    expect(response.status).toBe(200);
    const r = (await response.json()) as OpenAI.Chat.ChatCompletion;
    expectCompletion(r);
  });

  it("video from URL, max_tokens 512", async () => {
    const r = await create({
      model: "default",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "What happens in this video?" },
            { type: "video_url", video_url: { url: `${MEDIA}/video.mp4` } },
          ] as never,
        },
      ],
      max_tokens: 512,
    });
    expectCompletion(r);
    expect(r.usage!.prompt_tokens).toBe(await expectedPromptTokens("What happens in this video?", [], ["video.mp4"]));
  });

  it("video parameters in extra_body (video_fps 2.0, video_max_frames 32) with a relative local path", async () => {
    const r = await create({
      model: "default",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Describe this video" },
            { type: "video_url", video_url: { url: "video.mp4" } },
          ] as never,
        },
      ],
      // The Python SDK's extra_body is merged into the JSON body; the Node SDK passes extra fields through.
      video_fps: 2.0,
      video_max_frames: 32,
    });
    expectCompletion(r);
    expect(r.usage!.prompt_tokens).toBe(await expectedPromptTokens("Describe this video", [], ["video.mp4"], { fps: 2, maxFrames: 32 }));
  });

  it("video parameters top-level via curl (video_fps 2.0, video_max_frames 16) take effect", async () => {
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: `{
    "model": "default",
    "messages": [{
      "role": "user",
      "content": [
        {"type": "text", "text": "Describe this video"},
        {"type": "video_url", "video_url": {"url": "${MEDIA}/video.mp4"}}
      ]
    }],
    "video_fps": 2.0,
    "video_max_frames": 16,
    "max_tokens": 8
  }`,
    });
    expect(response.status).toBe(200);
    const r = (await response.json()) as OpenAI.Chat.ChatCompletion;
    const sixteen = await expectedPromptTokens("Describe this video", [], ["video.mp4"], { fps: 2, maxFrames: 16 });
    expect(r.usage!.prompt_tokens).toBe(sixteen);
    expect(sixteen).toBeLessThan(await expectedPromptTokens("Describe this video", [], ["video.mp4"], { fps: 2, maxFrames: 32 }));
  });

  it("supported formats: local image path, {type: video, video: path}, base64 video", async () => {
    const image = await create({
      model: "default",
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: local("image.jpg") } }] }],
      max_tokens: 8,
    });
    expectCompletion(image);
    const video = await create({
      model: "default",
      messages: [{ role: "user", content: [{ type: "video", video: local("video.mp4") }] as never }],
      max_tokens: 8,
    });
    expectCompletion(video);
    const b64 = fs.readFileSync(local("video.mp4")).toString("base64");
    const inline = await create({
      model: "default",
      messages: [{ role: "user", content: [{ type: "video_url", video_url: { url: `data:video/mp4;base64,${b64}` } }] as never }],
      max_tokens: 8,
    });
    expectCompletion(inline);
    expect(inline.usage!.prompt_tokens).toBe(video.usage!.prompt_tokens);
    expect(video.usage!.prompt_tokens).toBe(await expectedPromptTokens("", [], ["video.mp4"]));
  });
});

describe("LMDeploy seed requests", () => {
  const lmdeploy = () => new OpenAI({ apiKey: "EMPTY", baseURL: `${server.url}/v1`, maxRetries: 0 });

  it("client.models.list() names the served model, and that name works", async () => {
    const c = lmdeploy();
    const model_name = (await c.models.list()).data[0]!.id;
    expect(model_name).toBe(modelName);
    expect(model_name).toBe("qwen2vl-tiny");
    const r = await c.chat.completions.create({
      model: model_name,
      messages: [{ role: "user", content: [{ type: "text", text: "Who are you?" }] }],
      temperature: 0.8,
      top_p: 0.8,
    });
    expectCompletion(r);
  });

  const run = async (content: unknown[], extra: Record<string, unknown> = {}) => {
    const c = lmdeploy();
    const model_name = (await c.models.list()).data[0]!.id;
    const r = await c.chat.completions.create({
      model: model_name,
      messages: [{ role: "user", content: content as never }],
      temperature: 0.8,
      top_p: 0.8,
      ...extra,
    } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    expectCompletion(r);
    return r;
  };

  it("single image", async () => {
    const r = await run([{ type: "image_url", image_url: { url: `${MEDIA}/tiger.jpeg` } }, { type: "text", text: "Describe this image." }]);
    expect(r.usage!.prompt_tokens).toBe(await expectedPromptTokens("Describe this image.", ["tiger.jpeg"], []));
  });

  it("multiple images", async () => {
    const r = await run([
      { type: "image_url", image_url: { url: `${MEDIA}/tiger.jpeg` } },
      { type: "image_url", image_url: { url: `${MEDIA}/tiger.jpeg` } },
      { type: "text", text: "Compare these two images. What are the similarities and differences?" },
    ]);
    expect(r.usage!.prompt_tokens).toBe(
      await expectedPromptTokens("Compare these two images. What are the similarities and differences?", ["tiger.jpeg", "tiger.jpeg"], []),
    );
  });

  it("single video, max_completion_tokens 256", async () => {
    const r = await run([{ type: "video_url", video_url: { url: `${MEDIA}/space_woaudio.mp4` } }, { type: "text", text: "What's in this video?" }], {
      max_completion_tokens: 256,
    });
    expect(r.usage!.completion_tokens).toBeLessThanOrEqual(256);
    expect(r.usage!.prompt_tokens).toBe(await expectedPromptTokens("What's in this video?", [], ["space_woaudio.mp4"]));
  });

  it("multiple videos", async () => {
    const r = await run(
      [
        { type: "video_url", video_url: { url: `${MEDIA}/space_woaudio.mp4` } },
        { type: "video_url", video_url: { url: `${MEDIA}/space_woaudio.mp4` } },
        { type: "text", text: "Compare these two videos. What are the similarities and differences?" },
      ],
      { max_completion_tokens: 256 },
    );
    expect(r.usage!.prompt_tokens).toBe(
      await expectedPromptTokens("Compare these two videos. What are the similarities and differences?", [], ["space_woaudio.mp4", "space_woaudio.mp4"]),
    );
  });

  it("mixed image and video", async () => {
    const r = await run(
      [
        { type: "image_url", image_url: { url: `${MEDIA}/tiger.jpeg` } },
        { type: "video_url", video_url: { url: `${MEDIA}/space_woaudio.mp4` } },
        { type: "text", text: "Describe both the image and the video." },
      ],
      { max_completion_tokens: 256 },
    );
    expect(r.usage!.prompt_tokens).toBe(await expectedPromptTokens("Describe both the image and the video.", ["tiger.jpeg"], ["space_woaudio.mp4"]));
  });

  it("time series: refused with a clear 400, and the server keeps serving", async () => {
    const error = await run(
      [
        { type: "text", text: "Please determine whether an Earthquake event has occurred. If so, specify P-wave and S-wave starting indices." },
        { type: "time_series_url", time_series_url: { url: `${MEDIA}/0092638_seism.npy`, sampling_rate: 100 } },
      ],
      { max_completion_tokens: 256 },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    const apiError = error as InstanceType<typeof OpenAI.BadRequestError>;
    expect(apiError.status).toBe(400);
    expect(apiError.code).toBe("E_INVALID_ARGUMENT");
    expect(apiError.message).toMatch(/time_series_url content parts are not supported/);
    expect(apiError.param).toBe("messages[0].content[1].type");
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it("local file:// URL", async () => {
    const r = await run([{ type: "image_url", image_url: { url: pathToFileURL(local("image.jpg")).href } }, { type: "text", text: "Describe this image." }]);
    expect(r.usage!.prompt_tokens).toBe(await expectedPromptTokens("Describe this image.", ["image.jpg"], []));
  });

  it("base64 image and base64 video (16 frames, as encode_video_base64(num_frames=16) would)", async () => {
    const b64 = fs.readFileSync(local("image.jpg")).toString("base64");
    await run([{ type: "image_url", image_url: { url: `data:image/jpeg;base64,${b64}` } }, { type: "text", text: "Describe this image." }]);
    // A 16-frame clip stands in for the helper's 16 sampled frames.
    const sixteen = path.join(mediaDir, "sixteen.mp4");
    indexClip(sixteen, { fps: 2, seconds: 8, width: 64, height: 48 });
    const v64 = fs.readFileSync(sixteen).toString("base64");
    const r = await run([{ type: "video_url", video_url: { url: `data:video/mp4;base64,${v64}` } }, { type: "text", text: "Describe this video." }]);
    expect(r.usage!.prompt_tokens).toBe(await expectedPromptTokens("Describe this video.", [], ["sixteen.mp4"]));
  });

  it("mm_processor_kwargs and media_io_kwargs in extra_body take effect", async () => {
    const kwargs = {
      mm_processor_kwargs: { video: { min_pixels: 4 * 32 * 32, max_pixels: 256 * 32 * 32 } },
      media_io_kwargs: { video: { num_frames: 16, fps: 2 } },
    };
    const r = await run([{ type: "video_url", video_url: { url: `${MEDIA}/space_woaudio.mp4` } }, { type: "text", text: "Describe this video." }], {
      max_completion_tokens: 256,
      ...kwargs,
    });
    const expected = await expectedPromptTokens("Describe this video.", [], ["space_woaudio.mp4"], { numFrames: 16, minPixels: 4096, maxPixels: 262144 });
    expect(r.usage!.prompt_tokens).toBe(expected);
    expect(expected).not.toBe(await expectedPromptTokens("Describe this video.", [], ["space_woaudio.mp4"]));
    // A client that sends extra_body literally (curl) gets the same.
    const literal = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({
        model: modelName,
        messages: [{ role: "user", content: [{ type: "video_url", video_url: { url: `${MEDIA}/space_woaudio.mp4` } }, { type: "text", text: "Describe this video." }] }],
        max_completion_tokens: 4,
        extra_body: kwargs,
      }),
    });
    expect(((await literal.json()) as OpenAI.Chat.ChatCompletion).usage!.prompt_tokens).toBe(expected);
  });
});

describe("parity and streaming", () => {
  const messages: ChatMessage[] = [
    { role: "system", content: "You are terse." },
    {
      role: "user",
      content: [
        { type: "text", text: "Compare:" },
        { type: "image_url", image_url: { url: "" } },
        { type: "video_url", video_url: { url: "" } },
      ],
    },
  ];
  const request = (imageUrl: string, videoUrl: string) =>
    [
      messages[0]!,
      {
        role: "user" as const,
        content: [
          { type: "text" as const, text: "Compare:" },
          { type: "image_url" as const, image_url: { url: imageUrl } },
          { type: "video_url", video_url: { url: videoUrl } },
        ],
      },
    ] as OpenAI.Chat.ChatCompletionMessageParam[];

  it("greedy output through the server equals MultimodalLM.chat, streaming and not", async () => {
    const ours = await lm.chat({
      messages: [messages[0]!, { role: "user", content: [{ type: "text", text: "Compare:" }, { type: "image", image: local("image.jpg") }, { type: "video", video: local("video.mp4") }] }],
      temperature: 0,
      seed: 7,
      maxTokens: 24,
      video: { fps: 1 },
    });
    const body = { model: modelName, messages: request(`${MEDIA}/image.jpg`, "video.mp4"), temperature: 0, seed: 7, max_tokens: 24, video_fps: 1 };
    const plain = await create(body as Body);
    expect(plain.choices[0]!.message.content).toBe(ours.text);
    expect(plain.usage!.prompt_tokens).toBe(ours.usage.promptTokens);
    expect(plain.usage!.completion_tokens).toBe(ours.usage.completionTokens);
    expect(plain.choices[0]!.finish_reason).toBe(ours.stopReason === "length" ? "length" : "stop");

    const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
    let text = "";
    const chunks: OpenAI.Chat.ChatCompletionChunk[] = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
      text += chunk.choices[0]?.delta.content ?? "";
    }
    expect(text).toBe(ours.text);
    expect(chunks[0]!.choices[0]!.delta.role).toBe("assistant");
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe(plain.choices[0]!.finish_reason);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(plain.usage);
    expect(chunks.slice(0, -1).every((c) => c.usage === null && c.object === "chat.completion.chunk" && c.id === last.id)).toBe(true);
  });

  it("reports the prompt tokens reused from the KV cache as usage.prompt_tokens_details.cached_tokens", async () => {
    const turn1 = [{ role: "user", content: [{ type: "image_url", image_url: { url: `${MEDIA}/image.jpg` } }, { type: "text", text: "What is it?" }] }];
    const first = await create({ model: modelName, messages: turn1, temperature: 0, max_tokens: 8 } as Body);
    const turn2 = [...turn1, { role: "assistant", content: first.choices[0]!.message.content }, { role: "user", content: "And then?" }];
    const second = await create({ model: modelName, messages: turn2, temperature: 0, max_tokens: 8 } as Body);
    const cached = second.usage!.prompt_tokens_details!.cached_tokens!;
    // At least the whole first prompt, image included; not the new question.
    expect(cached).toBeGreaterThanOrEqual(first.usage!.prompt_tokens);
    expect(cached).toBeLessThan(second.usage!.prompt_tokens);
  });

  it("streams without usage unless asked, and ends with [DONE]", async () => {
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "default", messages: [{ role: "user", content: "Hi" }], stream: true, max_tokens: 4, temperature: 0 }),
    });
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = (await response.text()).split("\n\n").filter(Boolean);
    expect(events.at(-1)).toBe("data: [DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice("data: ".length)) as Record<string, unknown>);
    expect(chunks.every((c) => !("usage" in c))).toBe(true);
  });

  it("sampling fields reach the sampler: stop, seed, and max_tokens", async () => {
    const base = { model: modelName, messages: [{ role: "user" as const, content: "Tell me a story." }], max_tokens: 12 };
    const a = await create({ ...base, temperature: 1, seed: 123 });
    const b = await create({ ...base, temperature: 1, seed: 123 });
    expect(a.choices[0]!.message.content).toBe(b.choices[0]!.message.content);
    const ours = await lm.chat({ messages: base.messages, temperature: 1, seed: 123, maxTokens: 12 });
    expect(a.choices[0]!.message.content).toBe(ours.text);
    const greedy = await create({ ...base, temperature: 0 });
    const text = greedy.choices[0]!.message.content!;
    // Two visible characters after the start: the reply must end just before them.
    const at = text.slice(1).search(/\S\S/) + 1;
    expect(at).toBeGreaterThan(0);
    const stop = text.slice(at, at + 2);
    const stopped = await create({ ...base, temperature: 0, stop: [stop] });
    expect(stopped.choices[0]!.message.content).toBe(text.slice(0, text.indexOf(stop)));
    expect(stopped.choices[0]!.finish_reason).toBe("stop");
    const penalised = await lm.chat({ messages: base.messages, temperature: 0, maxTokens: 12, presencePenalty: 1.5, frequencyPenalty: 1, topK: 5, topP: 0.5, minP: 0.1 });
    const served = await create({ ...base, temperature: 0, presence_penalty: 1.5, frequency_penalty: 1, top_k: 5, top_p: 0.5, min_p: 0.1 } as Body);
    expect(served.choices[0]!.message.content).toBe(penalised.text);
  });
});

describe("errors in OpenAI's shape", () => {
  const post = async (body: unknown, headers: Record<string, string> = {}) => {
    const response = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body) });
    return { status: response.status, body: (await response.json()) as { error: { message: string; type: string; param: string | null; code: string } } };
  };
  const user = (content: unknown) => ({ model: "default", messages: [{ role: "user", content }], max_tokens: 4 });

  it.each([
    ["invalid JSON", 400, "E_INVALID_JSON", null, "{not json"],
    ["an empty body", 400, "E_INVALID_JSON", null, ""],
    ["no messages", 400, "E_INVALID_ARGUMENT", "messages", { model: "default" }],
    ["temperature out of range", 400, "E_INVALID_ARGUMENT", "temperature", { ...user("hi"), temperature: 3 }],
    ["n = 2", 400, "E_INVALID_ARGUMENT", "n", { ...user("hi"), n: 2 }],
    ["tools on a model whose chat template cannot call them", 400, "E_TOOLS_UNSUPPORTED", "tools", { ...user("hi"), tools: [{ type: "function", function: { name: "f" } }] }],
    ["legacy functions", 400, "E_INVALID_ARGUMENT", "functions", { ...user("hi"), functions: [{ name: "f", parameters: {} }] }],
    ["an unknown model", 404, "E_NOT_FOUND", "model", { ...user("hi"), model: "gpt-4o" }],
    ["bad base64", 400, "E_INVALID_DATA_URL", "messages[0].content[0].image_url", user([{ type: "image_url", image_url: { url: "data:image/png;base64,@@@" } }])],
    ["bytes that are no image", 400, "E_IMAGE_DECODE", "messages[0].content[0].image_url", user([{ type: "image_url", image_url: { url: `data:image/png;base64,${Buffer.from("not an image").toString("base64")}` } }])],
    ["a missing file", 400, "E_FILE_NOT_FOUND", "messages[0].content[0].image_url", user([{ type: "image_url", image_url: { url: "missing.jpg" } }])],
    ["a video that is no video", 400, "E_VIDEO_DECODE", "messages[0].content[0].video_url", user([{ type: "video_url", video_url: { url: `data:video/mp4;base64,${Buffer.from("nope").toString("base64")}` } }])],
    ["a bad part type", 400, "E_INVALID_ARGUMENT", "messages[0].content[0].type", user([{ type: "input_file", file: {} }])],
    ["a bad media option", 400, "E_INVALID_ARGUMENT", "media_io_kwargs.video.num_frames", { ...user("hi"), media_io_kwargs: { video: { num_frames: 0 } } }],
  ])("%s → %i %s", async (_, status, code, param, body) => {
    const r = await post(body);
    expect(r.status).toBe(status);
    expect(r.body.error.code).toBe(code);
    expect(r.body.error.message.length).toBeGreaterThan(10);
    expect(r.body.error.type).toBe(status === 404 ? "not_found_error" : "invalid_request_error");
    if (param !== null) expect(r.body.error.param).toBe(param);
  });

  it("a prompt longer than the context → 400 E_CONTEXT_OVERFLOW", async () => {
    const r = await post(user("word ".repeat(4000)));
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("E_CONTEXT_OVERFLOW");
  });

  it("unknown routes are 404, wrong methods 405, and /health stays up", async () => {
    const missing = await fetch(`${server.url}/v1/completions`, { method: "POST", body: "{}" });
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("E_NOT_FOUND");
    const wrong = await fetch(`${server.url}/v1/chat/completions`);
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get("allow")).toBe("POST");
    const model = await fetch(`${server.url}/v1/models/default`);
    expect(((await model.json()) as { id: string }).id).toBe(modelName);
    expect((await fetch(`${server.url}/v1/models/nope`)).status).toBe(404);
    const malformed = await fetch(`${server.url}/v1/models/%E0%A4%A`);
    expect(malformed.status).toBe(404);
    expect(((await malformed.json()) as { error: { code: string } }).error.code).toBe("E_NOT_FOUND");
    const health = await fetch(`${server.url}/health`);
    expect(await health.json()).toEqual({ status: "ok", model: modelName });
  });

  it("leaves no ffmpeg process or temp file behind after all of the above", () => {
    expect(runningChildren()).toBe(0);
    expect(liveTempDirs()).toBe(0);
  });

  it("checks the handler's and server's options", async () => {
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ maxQueue: -1 }, /Expected an integer between 0 and 1000000 for maxQueue but received -1/],
      [{ maxBodyBytes: 0 }, /for maxBodyBytes but received 0/],
      [{ apiKey: "" }, /Expected a non-empty string for apiKey/],
      [{ modelName: 3 }, /Expected a non-empty string for modelName/],
      [{ onRequest: "log" }, /Expected a function \(log\) => void for onRequest/],
      [{ allowedMediaDomain: ["x"] }, /Unknown option allowedMediaDomain for createOpenAIHandler\(\)/],
    ];
    for (const [options, message] of bad) {
      expect(() => createOpenAIHandler(lm, options as OpenAIHandlerOptions)).toThrow(message);
      await expect(checkServeOptions(options as ServeOptions)).rejects.toMatchObject({ code: "E_INVALID_ARGUMENT" });
    }
    await expect(startServer(lm, { port: 70000 })).rejects.toThrow(/Expected an integer between 0 and 65535 for port/);
    const taken = new URL(server.url).port;
    const error = await startServer(lm, { port: Number(taken) }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "E_INVALID_ARGUMENT" });
    expect((error as Error).message).toMatch(/Port \d+ is in use; pick another with --port/);
  });

  it("the OpenAI client surfaces the errors as its typed errors", async () => {
    const error = await create({ model: "nope", messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect((error as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("E_NOT_FOUND");
  });
});
