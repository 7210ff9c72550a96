// A multi-turn chat about images, streamed: turn 1 sends the images (OpenAI-style content parts)
// with a question; turn 2 asks a follow-up and sends nothing new, only the history (the question,
// the images and the assistant's reply). After each turn it prints what the caches saved: the
// second turn takes the whole first one, images included, from the KV cache.
//   npx tsx examples/chat-with-images.ts [image ...] [--prompt "..."] [--follow-up "..."] [--max-tokens 64]
//                                        [--interactive] [--model model.gguf --mmproj mmproj.gguf]
// The turns are scripted, so it exits by itself; with --interactive the questions come from
// stdin instead (the first one goes with the images), until an empty line, Ctrl-D or Ctrl-C.
// Without --model it uses the tiny generated Qwen2-VL test model (random weights: the text is
// gibberish, but every step runs for real); without images, the bundled assets/sample.png.
import { createInterface } from "node:readline/promises";

import type { ChatContentPart, ChatMessage } from "multimodal-lm";

import { asset, generationOptions, integerOption, loadModel, modelOptions, parseOptions } from "./shared/model.js";
import { cacheLine, printStream, usageLine } from "./shared/report.js";

const { values, positionals } = parseOptions({
  allowPositionals: true,
  options: {
    ...modelOptions,
    ...generationOptions,
    "follow-up": { type: "string" },
    interactive: { type: "boolean", default: false },
  },
});
const images = positionals.length > 0 ? positionals : [asset("sample.png")];
const maxTokens = integerOption(values["max-tokens"], "--max-tokens", 64);

/** The questions: scripted, or read from stdin with --interactive. */
async function* questions(): AsyncGenerator<string> {
  if (!values.interactive) {
    yield values.prompt ?? (images.length === 1 ? "What is in this image?" : "What is in these images?");
    yield values["follow-up"] ?? "Which colour stands out the most?";
    return;
  }
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  rl.setPrompt("you> ");
  rl.on("SIGINT", () => rl.close()); // Ctrl-C ends the chat (after the reply being written)
  const lines = rl[Symbol.asyncIterator]();
  try {
    for (;;) {
      if (process.stdin.isTTY) rl.prompt();
      const line = await lines.next();
      if (line.done || line.value.trim() === "") return;
      yield line.value;
    }
  } finally {
    rl.close();
  }
}

await using lm = await loadModel(values);
const messages: ChatMessage[] = [{ role: "system", content: "You are a helpful assistant. Answer briefly." }];
let turn = 0;
for await (const question of questions()) {
  turn++;
  // Only the first turn carries the images; later turns send the history as it is.
  const content: ChatContentPart[] =
    turn === 1 ? [...images.map((url): ChatContentPart => ({ type: "image_url", image_url: { url } })), { type: "text", text: question }] : [{ type: "text", text: question }];
  messages.push({ role: "user", content });
  if (!values.interactive || !process.stdin.isTTY) console.log(`you> ${question}`);
  process.stdout.write("assistant> ");
  const result = await printStream(lm.chatStream({ messages, maxTokens }));
  messages.push({ role: "assistant", content: result.text });
  console.log(`[turn ${turn}] ${usageLine(result)}, ${result.timings.totalMs.toFixed(1)} ms`);
  console.log(`[turn ${turn}] ${cacheLine(result)}\n`);
}
console.log(`${turn} turn${turn === 1 ? "" : "s"}; over the whole chat ${lm.stats.prefix.reusedPositions} prompt positions came from the KV cache and ${lm.stats.prefix.evaluatedPositions} were evaluated`);
