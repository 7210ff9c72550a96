#!/usr/bin/env node
// Does a greedy request give the same text alone and batched with others? Asks MultimodalLM and
// llama-server (built from the same tree by `npm run build:reference`) the same question, once
// alone and once together with three other requests, with flash attention on and off.
//
//   node scripts/batch-invariance.mjs [--recipe smolvlm-tiny] [--prompt "..."] [--threads 2]
//
// With flash attention on, the pinned CPU kernel (ggml-cpu ops.cpp, flash_attn_ext) does not give
// bit-identical rows for a sequence alone and in a micro-batch with other sequences (it picks its
// work split from the shape of the whole batch), so the last bits of the logits, and sometimes a
// greedy token, depend on what else runs: on both sides alike. With it off, both sides give the
// same text alone and batched.
// Needs lib/ (npm run build:ts) and build/bin/llama-server.
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    recipe: { type: "string", default: "smolvlm-tiny" },
    prompt: { type: "string", default: "Tell me a story about a cat and a dog" },
    threads: { type: "string", default: "2" },
    port: { type: "string", default: "18931" },
  },
});
// Batches of two and of four: which rows share a micro-batch depends on timing, so both are tried.
const companions = [["Hello there"], ["Hello there", "Short", "What else is there to say?"]];
const request = { temperature: 0, maxTokens: 12, seed: 42 };

const { MultimodalLM } = await import(path.join(root, "lib/index.js"));
const { ensureTestModel } = await import(path.join(root, "lib/test-models/index.js"));
const { model, mmproj } = await ensureTestModel(values.recipe);
const files = { model, mmproj };

async function compare(ask) {
  const alone = await ask(values.prompt);
  const batched = [];
  for (const others of companions) batched.push((await Promise.all([ask(values.prompt), ...others.map(ask)]))[0]);
  return { alone, batched };
}

async function ours(flashAttention) {
  const lm = await MultimodalLM.load({ ...files, parallel: 4, flashAttention, threads: Number(values.threads), logLevel: "error" });
  try {
    const ask = (content) => lm.chat({ messages: [{ role: "user", content }], ...request }).then((r) => r.text);
    return await compare(ask);
  } finally {
    await lm.dispose();
  }
}

async function server(flashAttention) {
  const bin = path.join(root, "build/bin/llama-server");
  const args = ["-m", files.model, "--mmproj", files.mmproj, "-np", "4", "-c", String(4 * 2048), "-t", values.threads, "-fa", flashAttention ? "on" : "off", "--port", values.port, "--no-webui"];
  const child = spawn(bin, args, { stdio: "ignore" });
  const url = `http://127.0.0.1:${values.port}`;
  try {
    for (let i = 0; ; i++) {
      if (i > 240) throw new Error("llama-server did not become ready");
      const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false);
      if (ok) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const ask = (content) =>
      fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ messages: [{ role: "user", content }], temperature: 0, max_tokens: request.maxTokens, seed: request.seed }),
      })
        .then((r) => r.json())
        .then((j) => j.choices[0].message.content);
    return await compare(ask);
  } finally {
    child.kill("SIGTERM");
  }
}

const rows = [];
for (const flashAttention of [true, false]) {
  for (const [side, run] of [["MultimodalLM", ours], ["llama-server", server]]) {
    const { alone, batched } = await run(flashAttention);
    const cells = batched.map((text) => (text === alone ? "same" : JSON.stringify(text)));
    rows.push(`| ${side} | ${flashAttention ? "on" : "off"} | ${JSON.stringify(alone)} | ${cells.join(" | ")} |`);
  }
}
console.log(`${values.recipe}, 4 slots, "${values.prompt}", greedy, ${request.maxTokens} tokens\n`);
console.log("| side | flash attention | alone | with 1 other request | with 3 other requests |\n|---|---|---|---|---|");
console.log(rows.join("\n"));
