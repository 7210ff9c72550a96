// The request shapes that users of vllm-mlx and LMDeploy send, through the official `openai`
// npm client: an image by local path, as a base64 data URL and by remote URL; two images in one
// message; a video by video_url with vllm-mlx's video_fps/video_max_frames; Qwen-style
// {"type": "video", "video": path}; LMDeploy's media_io_kwargs/mm_processor_kwargs; a streaming
// request; and client.models.list(). It prints one labelled line per request.
//   npx tsx examples/openai-client.ts [--max-tokens 16] [--model model.gguf --mmproj mmproj.gguf]
//   npx tsx examples/openai-client.ts --base-url http://127.0.0.1:8000/v1 [--api-key KEY]
// By default it starts the server in-process (startServer on a free port, with assets/ allowed
// as local media and a loopback media server for the remote URL), and closes it at the end.
// Without --model that server runs the tiny generated Qwen2-VL test model (random weights: the
// text is gibberish, but every step runs for real). With --base-url it talks to a server that is
// already running and loads no model; the requests name files in assets/ by absolute path, so
// start that server with --allowed-local-media-path pointing at assets/, e.g.
//   npx multimodal-lm serve model.gguf --allowed-local-media-path assets
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

import { startServer, type MultimodalLM, type RunningServer } from "multimodal-lm";
import OpenAI from "openai";

import { asset, assetsDir, integerOption, loadModel, modelOptions, parseOptions, usageError } from "./shared/model.js";

const { values } = parseOptions({
  options: {
    ...modelOptions,
    "max-tokens": { type: "string" },
    "base-url": { type: "string" },
    "api-key": { type: "string" },
  },
});
const maxTokens = integerOption(values["max-tokens"], "--max-tokens", 16);
const remote = values["base-url"];
if (remote !== undefined && (values.model !== undefined || values.mmproj !== undefined)) {
  usageError("--base-url talks to a server that is already running, which has its own model; --model and --mmproj are for the in-process server.");
}
if (remote !== undefined && !URL.canParse(remote)) usageError(`--base-url takes a URL such as http://127.0.0.1:8000/v1, not ${JSON.stringify(remote)}.`);

/** Serves the files of assets/ on a loopback port, standing in for a remote media host. */
async function serveAssets(): Promise<{ url: string; close(): Promise<void> }> {
  const names = new Set(fs.readdirSync(assetsDir));
  const types: Record<string, string> = { ".png": "image/png", ".jpg": "image/jpeg", ".mp4": "video/mp4" };
  const server = http.createServer((req, res) => {
    const name = path.posix.basename(new URL(req.url ?? "/", "http://localhost").pathname);
    if (!names.has(name)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[path.extname(name)] ?? "application/octet-stream" });
    fs.createReadStream(asset(name)).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// The extra request fields the server reads (the Python SDK sends them through extra_body; the
// Node SDK sends any extra property of the params object as it is).
interface ExtraBody {
  /** vllm-mlx: frames per second to sample, and the most frames. */
  video_fps?: number;
  video_max_frames?: number;
  /** LMDeploy: how to sample video frames; num_frames wins over fps. */
  media_io_kwargs?: { video?: { fps?: number; num_frames?: number; max_frames?: number } };
  /** LMDeploy: the pixel budget per image or video frame. */
  mm_processor_kwargs?: { image?: { min_pixels?: number; max_pixels?: number }; video?: { min_pixels?: number; max_pixels?: number } };
}
type Request = Omit<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, "model"> & ExtraBody;

// The SDK's types know text, image_url, input_audio and file parts; the server also takes video
// parts, vLLM's {"type": "video_url"} and Qwen's {"type": "video"}.
type ContentPart = OpenAI.Chat.ChatCompletionContentPart | { type: "video_url"; video_url: { url: string } } | { type: "video"; video: string };
const user = (...content: ContentPart[]): OpenAI.Chat.ChatCompletionUserMessageParam => ({
  role: "user",
  content: content as OpenAI.Chat.ChatCompletionContentPart[],
});
const text = (value: string): ContentPart => ({ type: "text", text: value });
const image = (url: string): ContentPart => ({ type: "image_url", image_url: { url } });
const video = (url: string): ContentPart => ({ type: "video_url", video_url: { url } });

let lm: MultimodalLM | undefined;
let server: RunningServer | undefined;
let media: Awaited<ReturnType<typeof serveAssets>> | undefined;
let failures = 0;
try {
  let baseURL: string;
  if (remote === undefined) {
    media = await serveAssets();
    lm = await loadModel(values);
    server = await startServer(lm, {
      port: 0,
      allowedLocalMediaPath: assetsDir,
      // Remote URLs are refused unless their host is allowed, and loopback and private addresses
      // stay blocked unless their network is allowed too.
      allowedMediaDomains: ["127.0.0.1"],
      allowedPrivateNetworks: ["127.0.0.1/32"],
    });
    baseURL = `${server.url}/v1`;
    console.log(`server: ${baseURL} (in-process), media server: ${media.url}`);
  } else {
    baseURL = new URL(remote).pathname === "/" ? new URL("/v1", remote).href : remote;
    console.log(`server: ${baseURL}; local paths name files in ${assetsDir}`);
  }
  const client = new OpenAI({ baseURL, apiKey: values["api-key"] ?? process.env.OPENAI_API_KEY ?? "not-needed", maxRetries: 0 });

  const models = await client.models.list();
  const model = models.data[0]?.id ?? "default";
  console.log(`models: ${models.data.map((m) => m.id).join(", ")}`);

  /** Sends one request and prints a line: tokens, finish reason and the start of the text. */
  const ask = async (label: string, request: Request) => {
    try {
      const params: OpenAI.Chat.ChatCompletionCreateParamsNonStreaming & ExtraBody = { model, ...request };
      const completion = await client.chat.completions.create(params);
      const choice = completion.choices[0];
      const usage = completion.usage;
      console.log(
        `${label}: ${usage?.prompt_tokens} prompt tokens (${usage?.prompt_tokens_details?.cached_tokens ?? 0} cached), ` +
          `${usage?.completion_tokens} generated, ${choice?.finish_reason}: ${JSON.stringify((choice?.message.content ?? "").slice(0, 40))}`,
      );
    } catch (error) {
      if (!(error instanceof OpenAI.APIError)) throw error;
      failures++;
      console.log(`${label}: FAILED ${error.status} ${error.code}: ${error.message}`);
    }
  };

  const png = fs.readFileSync(asset("sample.png")).toString("base64");

  // vllm-mlx
  await ask("image by local path", { messages: [user(text("What's in this image?"), image(asset("sample.png")))], max_tokens: maxTokens });
  await ask("base64 image", { messages: [user(text("Describe this image"), image(`data:image/png;base64,${png}`))], max_tokens: maxTokens });
  if (media) {
    await ask("remote URL image", { messages: [user(text("What's in this image?"), image(`${media.url}/sample.png`))], max_tokens: maxTokens });
  } else {
    console.log("remote URL image: skipped with --base-url (it needs a media host the server allows; see --allowed-media-domains)");
  }
  await ask("video_url with video_fps/video_max_frames", {
    messages: [user(text("Describe this video"), video(asset("sample.mp4")))],
    max_tokens: maxTokens,
    video_fps: 2.0,
    video_max_frames: 8,
  });
  await ask("type video", { messages: [user({ type: "video", video: asset("sample.mp4") }, text("What happens in this video?"))], max_tokens: maxTokens });

  // LMDeploy
  await ask("two images", {
    messages: [user(image(asset("sample.png")), image(asset("sample-2.png")), text("Compare these two images. What are the similarities and differences?"))],
    temperature: 0.8,
    top_p: 0.8,
    max_completion_tokens: maxTokens,
  });
  await ask("media_io_kwargs/mm_processor_kwargs", {
    messages: [user(video(asset("sample.mp4")), text("Describe this video."))],
    temperature: 0.8,
    top_p: 0.8,
    max_completion_tokens: maxTokens,
    media_io_kwargs: { video: { num_frames: 4, fps: 2 } },
    mm_processor_kwargs: { video: { min_pixels: 32 * 32, max_pixels: 80 * 60 } },
  });

  // Streaming, with the usage in a last chunk.
  const stream = await client.chat.completions.create({
    model,
    messages: [user(image(asset("sample.png")), text("Describe this image."))],
    max_tokens: maxTokens,
    stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = "";
  let chunks = 0;
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of stream) {
    chunks++;
    streamed += chunk.choices[0]?.delta.content ?? "";
    usage = chunk.usage ?? usage;
  }
  console.log(`streaming: ${chunks} chunks, ${usage?.prompt_tokens} prompt tokens, ${usage?.completion_tokens} generated: ${JSON.stringify(streamed.slice(0, 40))}`);
} finally {
  await server?.close();
  await lm?.dispose();
  await media?.close();
}
if (failures > 0) {
  console.error(`${failures} requests failed`);
  process.exitCode = 1;
}
