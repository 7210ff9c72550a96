// One MultimodalLM bench run in its own process, so load time and peak RSS are per run.
//   node bench/node-runner.mjs '<job JSON>'   (run.mjs writes the job; see runOurs there)
// Prints one JSON line on stdout. Times are milliseconds: load from before MultimodalLM.load
// to after it; everything else from just before the call that starts the request.
import fs from "node:fs";

import { MultimodalLM } from "../lib/index.js";

const job = JSON.parse(process.argv[2]);
const sampling = { maxTokens: job.tokens, temperature: 0, ignoreEos: true };

/** Runs one streamed request and times its pieces from just before the call. */
async function timed(start) {
  const t0 = performance.now();
  const stream = start();
  let firstMs;
  let lastMs;
  let pieces = 0;
  for await (const _piece of stream) {
    lastMs = performance.now() - t0;
    firstMs ??= lastMs;
    pieces++;
  }
  const result = await stream.result;
  const endMs = performance.now() - t0;
  const { timings, usage } = result;
  return {
    // Reading and decoding the media in JS: the image, or the audio clip (ffmpeg to PCM).
    imageLoadMs: timings.imageLoadMs,
    encodeMs: timings.encodeMs,
    promptTokens: usage.promptTokens,
    ttftMs: firstMs,
    genTokens: usage.completionTokens,
    genSpanMs: lastMs - firstMs,
    pieces,
    e2eMs: endMs,
    cache: result.cache,
    text: result.text,
  };
}

const tLoad = performance.now();
const lm = await MultimodalLM.load({
  model: job.model,
  mmproj: job.mmproj,
  contextSize: job.contextSize,
  threads: job.threads,
  batchSize: job.batchSize,
  // One sequence, as llama-mtmd-cli and node-llama-cpp have: the memory of one slot.
  parallel: 1,
  ...job.loadOptions,
});
const loadMs = performance.now() - tLoad;
const { prompts, image, audioClip } = job;
let out;

switch (job.mode) {
  case "prepare": {
    // The token ids of the text-only prompt (for node-llama-cpp) and the describe prompt's size.
    const chat = lm.formatChat([{ role: "user", content: prompts.text }]);
    const textTokens = Array.from(lm.tokenize(chat, { addSpecial: true, parseSpecial: true }));
    const describe = await lm.countTokens(prompts.describe, [image]);
    out = { textTokens, describeTokens: describe.tokens, describePositions: describe.positions };
    break;
  }
  case "prepare-audio": {
    // The audio prompt's size: the clip is decoded (its length decides its tokens), not encoded.
    const audio = await lm.countTokens(prompts.audio, [], { audios: [audioClip] });
    out = { audioTokens: audio.tokens, audioPositions: audio.positions };
    break;
  }
  case "describe":
    out = await timed(() => lm.generateStream({ prompt: prompts.describe, images: [image], ...sampling }));
    break;
  case "audio":
    // What describeAudio(clip, { prompt }) runs (generate with one clip), streamed to time the pieces.
    out = await timed(() => lm.generateStream({ prompt: prompts.audio, audios: [audioClip], ...sampling }));
    break;
  case "text":
    out = await timed(() => lm.generateStream({ prompt: prompts.text, ...sampling }));
    break;
  case "repeat": {
    const first = await timed(() => lm.generateStream({ prompt: prompts.describe, images: [image], ...sampling }));
    const second = await timed(() => lm.generateStream({ prompt: prompts.followUp, images: [image], ...sampling }));
    out = { requests: [first, second], stats: lm.stats };
    break;
  }
  case "chat": {
    const turn1 = [{ role: "user", content: [{ type: "image_url", image_url: { url: image } }, { type: "text", text: prompts.describe }] }];
    const first = await timed(() => lm.chatStream({ messages: turn1, ...sampling }));
    const turn2 = [...turn1, { role: "assistant", content: first.text }, { role: "user", content: prompts.followUp }];
    const second = await timed(() => lm.chatStream({ messages: turn2, ...sampling }));
    out = { requests: [first, second], stats: lm.stats };
    break;
  }
  case "crash-restart": {
    // A request that crashes llama.cpp (job.loadOptions.chatTemplate recurses once per character
    // of a message), then the time until the supervisor's new engine serves again.
    const restarted = new Promise((resolve) => lm.on("restart", resolve));
    const crashed = new Promise((resolve) => lm.on("crash", resolve));
    const error = await lm.chat({ messages: [{ role: "user", content: "x".repeat(300_000) }], maxTokens: 1 }).catch((e) => e);
    const crash = await crashed;
    const restart = await restarted;
    const after = await timed(() => lm.generateStream({ prompt: prompts.describe, images: [image], ...sampling }));
    out = { code: error.code, signal: crash.signal, downtimeMs: restart.downtimeMs, reloadMs: restart.loadMs, afterE2eMs: after.e2eMs };
    break;
  }
  default:
    throw new Error(`unknown mode ${job.mode}`);
}
// Each process's own peak RSS: this one, and the engine process's with isolation: "process".
const selfRssBytes = process.resourceUsage().maxRSS * 1024;
let engineRssBytes = null;
if (lm.engine.pid !== undefined) {
  const status = fs.readFileSync(`/proc/${lm.engine.pid}/status`, "utf8");
  const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  engineRssBytes = kb === undefined ? null : Number(kb) * 1024;
}
await lm.dispose();
process.stdout.write(`${JSON.stringify({ loadMs, ...out, selfRssBytes, engineRssBytes })}\n`);
