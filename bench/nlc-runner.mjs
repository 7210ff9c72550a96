// One node-llama-cpp text-only run in its own process, on the same text GGUF, threads, context
// size and prompt token ids as MultimodalLM's text run.
//   node bench/nlc-runner.mjs '<job JSON>'   (run.mjs writes the job; see runNodeLlamaCpp there)
// Prints one JSON line on stdout, with the same fields and definitions as node-runner.mjs.
import { getLlama, getModuleVersion } from "node-llama-cpp";

const job = JSON.parse(process.argv[2]);

const tLoad = performance.now();
// build: "never": use the prebuilt binary from npm, never try to download or compile llama.cpp.
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error", maxThreads: job.threads });
const model = await llama.loadModel({ modelPath: job.model });
const context = await model.createContext({
  contextSize: job.contextSize,
  batchSize: job.batchSize,
  threads: { ideal: job.threads, min: job.threads },
});
const sequence = context.getSequence();
const loadMs = performance.now() - tLoad;

// The low-level evaluate loop: the first token comes after the whole prompt is evaluated, each
// later one after one decode. node-llama-cpp ignores a "never" bias on end-of-generation tokens,
// so ignoring EOS means yielding them and going on (the same work per token as a banned EOS).
const generated = [];
let firstMs;
let lastMs;
const t0 = performance.now();
for await (const token of sequence.evaluate(job.promptTokens, { temperature: 0, yieldEogToken: true })) {
  lastMs = performance.now() - t0;
  firstMs ??= lastMs;
  generated.push(token);
  if (generated.length === job.tokens) break;
}
const e2eMs = performance.now() - t0;

process.stdout.write(
  `${JSON.stringify({
    loadMs,
    promptTokens: job.promptTokens.length,
    ttftMs: firstMs,
    genTokens: generated.length,
    genSpanMs: lastMs - firstMs,
    e2eMs,
    text: model.detokenize(generated),
    version: await getModuleVersion(),
    flashAttention: context.flashAttention,
    systemInfo: llama.systemInfo,
  })}\n`,
);
await context.dispose();
await model.dispose();
await llama.dispose();
