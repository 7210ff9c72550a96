#!/usr/bin/env node
// Per-slot prefix reuse, timed: two conversations, each with its own image, interleaved (A1, B1,
// A2, B2) on one MultimodalLM with two slots, on the bench model (SmolVLM-256M's dimensions).
// Prints each conversation's second-turn time to first token over its first (issue 17: ≤ 0.1×).
//
//   node scripts/interleaved-chats.mjs [--threads 2]
// Needs lib/ (npm run build:ts); generates the bench model on first use (about 330 MB).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({ options: { threads: { type: "string", default: "2" } } });
const { MultimodalLM } = await import(path.join(root, "lib/index.js"));
const { ensureTestModel, encodePng, testPattern } = await import(path.join(root, "lib/test-models/index.js"));

const { model, mmproj } = await ensureTestModel("smolvlm-256m-bench");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-interleaved-"));
const lm = await MultimodalLM.load({ model, mmproj, parallel: 2, threads: Number(values.threads), contextSize: 4096 });
try {
  const pictures = [1, 2].map((seed) => {
    const file = path.join(tmp, `picture-${seed}.png`);
    fs.writeFileSync(file, encodePng(160, 120, testPattern(160, 120, seed)));
    return file;
  });
  const options = { temperature: 0, maxTokens: 32, ignoreEos: true };
  const turn1 = (i) => [{ role: "user", content: [{ type: "image", image: pictures[i] }, { type: "text", text: `Describe picture ${i + 1}.` }] }];
  const first = [];
  for (const i of [0, 1]) first.push(await lm.chat({ messages: turn1(i), ...options }));
  const second = [];
  for (const i of [0, 1]) {
    const messages = [...turn1(i), { role: "assistant", content: first[i].text }, { role: "user", content: "And the colours?" }];
    second.push(await lm.chat({ messages, ...options }));
  }
  for (const i of [0, 1]) {
    const [a, b] = [first[i].timings.timeToFirstTokenMs, second[i].timings.timeToFirstTokenMs];
    console.log(
      `conversation ${i + 1}: time to first token ${a.toFixed(0)} ms, then ${b.toFixed(0)} ms: ${(b / a).toFixed(3)}x ` +
        `(second turn: ${second[i].cache.reusedPositions} positions reused, ${second[i].cache.evaluatedPositions} evaluated)`,
    );
  }
} finally {
  await lm.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
}
