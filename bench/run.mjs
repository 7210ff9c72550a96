// npm run bench: MultimodalLM side by side with llama-mtmd-cli (built from the same vendored
// llama.cpp) and, for text only, node-llama-cpp, on a realistic-shape random-weight model; and
// `multimodal-lm serve` side by side with llama-server under N concurrent clients. Every run is
// a fresh child process. `npm run bench -- --help` for the options; README.md beside this file
// says what is measured and how.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Command, InvalidArgumentError, Option } from "commander";

import { contextFor, DEFAULT_CLIENTS, DEFAULT_SECONDS, imageDataUrl, requestsPerClient, runConcurrentSide } from "./concurrent.mjs";
import { referenceAudio, referenceDescribe, referenceText } from "./reference.mjs";
import {
  AUDIO_METRICS,
  concurrentSummary,
  concurrentTables,
  median,
  medians,
  ratio,
  sideBySide,
  target,
  targetLine,
  twoRequestSummary,
  twoRequestTable,
} from "./report.mjs";
import { cleanUp, rssMethod, runNodeScript, scratchDir } from "./spawn.mjs";

const MIB = 1024 * 1024;
/** The isolation scenario's numbers: each process's own peak RSS (the runner reads both). */
const ISOLATION_METRICS = [
  { key: "e2eMs", get: (r) => r.e2eMs },
  { key: "genTps", get: (r) => (r.genSpanMs > 0 ? ((r.genTokens - 1) / r.genSpanMs) * 1000 : null) },
  { key: "selfRssMiB", get: (r) => (r.selfRssBytes == null ? null : r.selfRssBytes / MIB) },
  { key: "engineRssMiB", get: (r) => (r.engineRssBytes == null ? null : r.engineRssBytes / MIB) },
];
const fmtNumber = (value, digits) => (value == null ? "n/a" : digits !== undefined ? value.toFixed(digits) : Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(1));

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const SCENARIOS = ["describe", "audio", "text", "repeat", "chat", "concurrent", "isolation"];
const MODELS = { small: "smolvlm-256m-bench", large: "qwen2vl-2b-bench", audio: "ultravox-bench" };
const PROMPTS = {
  describe: "Describe this image in detail.",
  audio: "Describe this audio clip in detail.",
  followUp: "What colors stand out the most, and where are they?",
  text:
    "You are reviewing a design document for a small library that runs vision-language models locally. " +
    "The library loads a text model and a projector, decodes images in JavaScript, and evaluates the prompt " +
    "chunk by chunk, caching image embeddings and reusing the key-value cache between requests. " +
    "List the three risks you would check first, and explain for each one how you would measure it.",
};
const CONTEXT_SIZE = 4096;
// llama-mtmd-cli's defaults (-b 2048; the micro-batch is 512 on both sides).
const BATCH_SIZE = 2048;
const TARGETS = {
  e2eRatio: 1.03,
  // Issue 19: the audio scenario, ours / llama-mtmd-cli.
  audioE2eRatio: 1.03,
  tokensPerSecondRatio: 0.97,
  rssExtraMiB: 80,
  repeatTtft: 0.2,
  chatTtft: 0.1,
  textVsNodeLlamaCpp: 1.0,
  // Issue 17, at 8 concurrent clients, ours / llama-server.
  concurrentClients: 8,
  concurrentTpsRatio: 0.95,
  concurrentTtftP95Ratio: 1.1,
  // Issue 20: isolation: "process" over in process, on the describe and text requests.
  isolationE2eRatio: 1.02,
  isolationGenTpsRatio: 0.98,
  isolationRestartMs: 10_000,
};
// The isolation scenario's crash: a bounded recursion, one level per character of each message,
// overflows the native stack of llama.cpp's Jinja engine on a 300 000-character message.
const CRASH_TEMPLATE =
  "{% macro r(n) %}{% if n > 0 %}{{ r(n - 1) }}{% endif %}{% endmacro %}" +
  "{% for m in messages %}{{ r(m['content'] | length) }}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
// The audio scenario's clip when --audio is not given: CLIP_SECONDS of a tone sweeping from 150 Hz
// to 3 kHz, with a 0.4 s burst of white noise every 3 s, made with ffmpeg's lavfi into the bench's
// temp folder as a mono 16-bit WAV at the model's sample rate (so neither side resamples it, and
// both get the same samples). 15 s is one 30 s Whisper window (187 audio tokens for Ultravox).
const CLIP_SECONDS = 15;
const clipSource = (rate) =>
  `aevalsrc=0.4*sin(2*PI*(150*t+(3000-150)/(2*${CLIP_SECONDS})*t*t))+0.5*lt(mod(t\\,3)\\,0.4)*(2*random(0)-1):s=${rate}:d=${CLIP_SECONDS}`;
// A concurrent run during which other processes used more CPU than this (cores, on average) is flagged.
const OTHER_CPU_WARNING = 0.1;
// The concurrent scenario's two sides, in the order of its first run.
const SERVERS = ["llama-server", "MultimodalLM"];

function positiveInteger(value) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("Expected a positive integer.");
  return n;
}

function clientList(value) {
  const list = value.split(",").map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1 || n > 64)) {
    throw new InvalidArgumentError("Expected a comma-separated list of client counts from 1 to 64.");
  }
  return [...new Set(list)].sort((a, b) => a - b);
}

function scenarioList(value) {
  const list = value.split(",").map((s) => s.trim()).filter(Boolean);
  const unknown = list.filter((s) => !SCENARIOS.includes(s));
  if (list.length === 0 || unknown.length > 0) throw new InvalidArgumentError(`Expected a comma-separated list of ${SCENARIOS.join(", ")}.`);
  return list;
}

const program = new Command("npm run bench --")
  .description(
    "Benchmarks MultimodalLM side by side with llama-mtmd-cli (same vendored llama.cpp) and, for text only, " +
      "node-llama-cpp, and `multimodal-lm serve` side by side with llama-server under concurrent clients, on a " +
      "random-weight model with a real model's dimensions. Prints markdown tables with medians and ratios to " +
      "stdout and writes every run as JSON to bench/results/. Missed targets are reported, not failed: the exit " +
      "status is non-zero only when something could not run (a scenario that fails does not stop the others).",
  )
  .option("--rounds <n>", "rounds per scenario except concurrent; the order of the sides changes every round", positiveInteger, 5)
  .option("--threads <n>", "CPU threads on every side", positiveInteger, 2)
  .option("-n, --tokens <n>", "tokens to generate per request (EOS ignored)", positiveInteger, 128)
  .option("--image <path>", "the image for every request (default: assets/sample.png)")
  .option(
    "--audio <path>",
    `audio: the clip for every request (default: a ${CLIP_SECONDS} s tone sweep with noise bursts, made with ffmpeg); llama-mtmd-cli reads WAV, MP3 and FLAC only`,
  )
  .option("--large", "use the Qwen2-VL-2B-shape model (about 3 GB, generated on first use) instead of SmolVLM-256M")
  .addOption(new Option("--only <list>", `scenarios to run, comma-separated: ${SCENARIOS.join(",")}`).argParser(scenarioList).default(SCENARIOS, "all"))
  .addOption(
    new Option("--clients <list>", "concurrent: client counts, comma-separated (one server per count and side)")
      .argParser(clientList)
      .default(DEFAULT_CLIENTS, DEFAULT_CLIENTS.join(",")),
  )
  .option("--requests <n>", "concurrent: requests per client in the timed phase (default: max(3, ceil(16 / clients)))", positiveInteger)
  .option("--seconds <n>", "concurrent: no client starts a request after this many seconds of the timed phase", positiveInteger, DEFAULT_SECONDS)
  .option("--concurrent-rounds <n>", "concurrent: rounds (each runs every client count on both sides)", positiveInteger, 1)
  .option(
    "--llama-server-args <args>",
    'concurrent: more llama-server arguments, space-separated; give it with "=" when it starts with a dash (--llama-server-args=--no-cache-idle-slots)',
    (value) => value.split(/\s+/).filter(Boolean),
    [],
  )
  .option("--json", "print the JSON report to stdout instead of the tables (the tables go to stderr)")
  .addHelpText(
    "after",
    `
Scenarios (each run is a fresh process, so load time and peak RSS are per run):
  describe  one image + question: llama-mtmd-cli vs MultimodalLM
  audio     one audio clip + question on ${MODELS.audio} (Ultravox v0.5 Llama-3.2-1B shape, about 2.4 GB,
            generated on first use): llama-mtmd-cli --audio vs MultimodalLM
  text      text-only prompt: llama-mtmd-cli (chat mode) vs node-llama-cpp vs MultimodalLM
  repeat    same image, new question, in one MultimodalLM: with the embedding cache only, and with both caches
  chat      second chat turn after an image message, in one MultimodalLM
  concurrent  N clients (--clients, default ${DEFAULT_CLIENTS.join(",")}) against \`multimodal-lm serve --parallel N\` and against
            llama-server -np N: after warm-up requests that put the image into every slot, each
            client streams image + question chat completions (-n tokens, EOS ignored) one after
            another; aggregate tok/s, TTFT p50/p95 and time per output token p50, measured at the
            client. About 10 minutes on 2 cores.
  isolation the describe and text requests of MultimodalLM in process and with isolation: "process" (the
            engine in a supervised child process): the overhead, and both processes' peak RSS

Targets (from issue 7): describe end-to-end ratio <= ${TARGETS.e2eRatio}; prompt-eval and generation tok/s >= ${TARGETS.tokensPerSecondRatio}x
the reference; peak RSS <= reference + ${TARGETS.rssExtraMiB} MiB; repeated image TTFT <= ${TARGETS.repeatTtft}x the first request's; second
chat turn TTFT <= ${TARGETS.chatTtft}x; text-only generation (and, from issue 21, prompt eval) >= ${TARGETS.textVsNodeLlamaCpp}x node-llama-cpp's tok/s. From issue 17, at
${TARGETS.concurrentClients} clients: aggregate tok/s >= ${TARGETS.concurrentTpsRatio}x llama-server's, TTFT p95 <= ${TARGETS.concurrentTtftP95Ratio}x llama-server's.
From issue 19: audio end-to-end ratio <= ${TARGETS.audioE2eRatio}. From issue 20, isolated over in process on describe and
text: end-to-end <= ${TARGETS.isolationE2eRatio}, generation tok/s >= ${TARGETS.isolationGenTpsRatio}.

A scenario that fails is reported and the others still run; the exit status is then 1.`,
  );

const opts = program.parse().opts();
const only = new Set(opts.only);
const log = (message) => process.stderr.write(`[bench] ${message}\n`);

function fail(message) {
  throw Object.assign(new Error(message), { benchSetup: true });
}

async function importLib() {
  if (!fs.existsSync(path.join(root, "lib", "index.js"))) fail("lib/ is missing: run `npm run build:ts` (npm install runs it).");
  const [lib, testModels] = await Promise.all([import("../lib/index.js"), import("../lib/test-models/index.js")]);
  return { ...lib, ...testModels };
}

/** The reference tools (build/bin/llama-mtmd-cli, llama-server), built first when one is missing. */
function ensureReferenceTools(tools) {
  const missing = tools.filter((file) => !fs.existsSync(file));
  if (missing.length === 0) return;
  log(`${missing.map(shown).join(", ")} missing: building the reference tools (node scripts/build-native.mjs --reference) ...`);
  // The build's output goes to stderr, so that stdout stays the report.
  const r = spawnSync(process.execPath, [path.join(root, "scripts", "build-native.mjs"), "--reference"], {
    cwd: root,
    stdio: ["ignore", process.stderr, process.stderr],
  });
  const still = missing.filter((file) => !fs.existsSync(file));
  if (r.status !== 0 || still.length > 0) {
    fail(`could not build ${(still.length ? still : missing).map(shown).join(", ")}: run \`npm run build:reference\` and fix what it reports, then run the bench again.`);
  }
}

/** A path as the user would type it: relative inside the package, absolute outside. */
function shown(file) {
  const relative = path.relative(root, file);
  return relative.startsWith("..") ? file : relative;
}

async function ensureModel(ensureTestModel, recipe) {
  let reported = -1;
  const files = await ensureTestModel(recipe, {
    onProgress: ({ file, bytesWritten, totalBytes }) => {
      const percent = Math.floor((bytesWritten / totalBytes) * 10) * 10;
      if (percent === reported) return;
      if (reported < 0) log(`generating the ${recipe} test model (${(totalBytes / 1e9).toFixed(2)} GB, once; cached in ${shown(path.dirname(file))}) ...`);
      reported = percent;
      log(`  ${percent}%`);
    },
  });
  log(`model: ${shown(files.model)} (+ ${path.basename(files.mmproj)})`);
  return files;
}

/** ffmpeg as the library finds it (MULTIMODAL_LM_FFMPEG, ffmpeg-static, PATH), else plain "ffmpeg". */
function ffmpegBinary(lib) {
  try {
    return lib.findFfmpeg().ffmpeg;
  } catch {
    return process.env.MULTIMODAL_LM_FFMPEG || "ffmpeg";
  }
}

/** Writes the default clip (see clipSource) to `file`. */
function makeClip(lib, file) {
  const rate = lib.WHISPER_SAMPLE_RATE;
  const args = ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", clipSource(rate), "-ac", "1", "-ar", String(rate), "-c:a", "pcm_s16le"];
  const r = spawnSync(ffmpegBinary(lib), [...args, "-fflags", "+bitexact", "-flags:a", "+bitexact", file], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    fail(`could not make the audio clip with ffmpeg (${r.error?.message ?? r.stderr.trim()}): install ffmpeg, or pass --audio FILE.wav`);
  }
  return file;
}

const sha256 = (file) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");

function checkNodeLlamaCpp() {
  try {
    import.meta.resolve("node-llama-cpp");
  } catch {
    fail("node-llama-cpp is not installed: it is a devDependency of this package; run `npm install` (without --omit=dev).");
  }
}

function gitState() {
  const git = (...args) => spawnSync("git", args, { cwd: root, encoding: "utf8" });
  const head = git("rev-parse", "HEAD");
  if (head.status !== 0) return null;
  return { commit: head.stdout.trim(), dirty: git("status", "--porcelain").stdout.trim().length > 0 };
}

/** The sides in the order of round `round` (1-based): rotated by one each round, so each goes first in turn. */
function rotate(sides, round) {
  const k = (round - 1) % sides.length;
  return [...sides.slice(k), ...sides.slice(0, k)];
}

async function main() {
  const started = performance.now();
  const date = new Date().toISOString();
  const lib = await importLib();
  const recipe = opts.large ? MODELS.large : MODELS.small;
  // npm run starts scripts in the package root; a path the user typed is relative to where they typed it.
  const image = opts.image ? path.resolve(process.env.INIT_CWD ?? process.cwd(), opts.image) : path.join(root, "assets", "sample.png");
  if (!fs.existsSync(image)) fail(`--image ${opts.image}: no such file.`);
  const audioClip = opts.audio ? path.resolve(process.env.INIT_CWD ?? process.cwd(), opts.audio) : undefined;
  if (audioClip && !fs.existsSync(audioClip)) fail(`--audio ${opts.audio}: no such file.`);
  const cli = lib.referenceCliPath();
  const server = path.join(path.dirname(cli), path.basename(cli).replace("llama-mtmd-cli", "llama-server"));
  ensureReferenceTools([...(["describe", "audio", "text"].some((s) => only.has(s)) ? [cli] : []), ...(only.has("concurrent") ? [server] : [])]);
  if (only.has("text")) checkNodeLlamaCpp();
  // Every scenario but audio runs on the vision model; audio has its own (generated in its scenario).
  const vision = SCENARIOS.some((s) => s !== "audio" && only.has(s));
  const { model, mmproj } = vision ? await ensureModel(lib.ensureTestModel, recipe) : {};

  const load = os.loadavg()[0];
  if (load > 0.5) log(`warning: load average ${load.toFixed(2)}: other processes are using the CPU, so the numbers will be noisy.`);

  const settings = {
    recipe: vision ? recipe : undefined,
    model,
    mmproj,
    image,
    threads: opts.threads,
    tokens: opts.tokens,
    contextSize: CONTEXT_SIZE,
    batchSize: BATCH_SIZE,
    rounds: opts.rounds,
    scenarios: SCENARIOS.filter((s) => only.has(s)),
    prompts: PROMPTS,
  };
  if (only.has("concurrent")) {
    settings.concurrent = {
      clients: opts.clients,
      requestsPerClient: Object.fromEntries(opts.clients.map((n) => [n, opts.requests ?? requestsPerClient(n)])),
      seconds: opts.seconds,
      rounds: opts.concurrentRounds,
      llamaServerArgs: opts.llamaServerArgs,
    };
  }
  const ours = (mode, loadOptions = {}) => runNodeScript(path.join(here, "node-runner.mjs"), { mode, loadOptions, ...settings });

  if (vision) log("counting prompt tokens ...");
  const prepared = vision ? await ours("prepare") : {};
  // The other sides are credited with the prepared counts: ours must have evaluated the same.
  const oursWith = async (mode, promptTokens) => {
    const r = await ours(mode);
    if (r.promptTokens !== promptTokens) fail(`MultimodalLM (${mode}) evaluated ${r.promptTokens} prompt tokens, not the ${promptTokens} counted first.`);
    return r;
  };
  const runs = { describe: [], audio: [], text: [], repeat: [], chat: [], concurrent: [], isolation: [], restart: [] };
  const R = opts.rounds;
  const resultsDir = path.join(here, "results");
  const stamp = date.replace(/[:.]/g, "-");

  // Each scenario on its own: one that fails is reported, and the others still run and report.
  const failed = [];
  const scenario = async (name, body) => {
    if (!only.has(name)) return;
    try {
      await body();
    } catch (error) {
      const message = error.benchSetup ? error.message : String(error.stack ?? error);
      failed.push({ scenario: name, message });
      log(`${name} failed; going on with the other scenarios. ${message}`);
    }
  };
  const completed = (name) => runs[name].length > 0 && !failed.some((f) => f.scenario === name);

  await scenario("describe", async () => {
    const sides = {
      "llama-mtmd-cli": async () => ({ ...(await referenceDescribe(cli, settings)), promptTokens: prepared.describeTokens }),
      MultimodalLM: () => oursWith("describe", prepared.describeTokens),
    };
    for (let round = 1; round <= R; round++) {
      for (const side of rotate(Object.keys(sides), round)) {
        log(`describe, round ${round}/${R}: ${side}`);
        runs.describe.push({ round, side, ...(await sides[side]()) });
      }
    }
  });

  await scenario("audio", async () => {
    const files = await ensureModel(lib.ensureTestModel, MODELS.audio);
    const clip = audioClip ?? makeClip(lib, path.join(scratchDir(), "clip.wav"));
    settings.audio = {
      recipe: MODELS.audio,
      model: files.model,
      mmproj: files.mmproj,
      clip: audioClip ? { file: clip } : { generated: `ffmpeg -f lavfi -i "${clipSource(lib.WHISPER_SAMPLE_RATE)}"`, seconds: CLIP_SECONDS },
      clipSha256: sha256(clip),
    };
    // The same job as the other scenarios' but on the audio model, with the clip.
    const job = { ...settings, model: files.model, mmproj: files.mmproj, audioClip: clip, loadOptions: {} };
    log("counting audio prompt tokens ...");
    const counted = await runNodeScript(path.join(here, "node-runner.mjs"), { ...job, mode: "prepare-audio" });
    Object.assign(prepared, { audioTokens: counted.audioTokens, audioPositions: counted.audioPositions });
    const sides = {
      "llama-mtmd-cli": async () => ({ ...(await referenceAudio(cli, job)), promptTokens: prepared.audioTokens }),
      MultimodalLM: async () => {
        const r = await runNodeScript(path.join(here, "node-runner.mjs"), { ...job, mode: "audio" });
        if (r.promptTokens !== prepared.audioTokens) fail(`MultimodalLM (audio) evaluated ${r.promptTokens} prompt tokens, not the ${prepared.audioTokens} counted first.`);
        return r;
      },
    };
    for (let round = 1; round <= R; round++) {
      for (const side of rotate(Object.keys(sides), round)) {
        log(`audio, round ${round}/${R}: ${side}`);
        runs.audio.push({ round, side, ...(await sides[side]()) });
      }
    }
  });

  await scenario("text", async () => {
    const sides = {
      "llama-mtmd-cli": async () => ({ ...(await referenceText(cli, settings)), promptTokens: prepared.textTokens.length }),
      "node-llama-cpp": () =>
        runNodeScript(path.join(here, "nlc-runner.mjs"), { ...settings, promptTokens: prepared.textTokens }),
      MultimodalLM: () => oursWith("text", prepared.textTokens.length),
    };
    for (let round = 1; round <= R; round++) {
      for (const side of rotate(Object.keys(sides), round)) {
        log(`text, round ${round}/${R}: ${side}`);
        runs.text.push({ round, side, ...(await sides[side]()) });
      }
    }
  });

  const variants = {
    "embedding cache only (reusePrefix: false)": { reusePrefix: false },
    "both caches (defaults)": {},
  };
  await scenario("repeat", async () => {
    for (let round = 1; round <= R; round++) {
      for (const variant of rotate(Object.keys(variants), round)) {
        log(`repeat, round ${round}/${R}: ${variant}`);
        runs.repeat.push({ round, variant, ...(await ours("repeat", variants[variant])) });
      }
    }
  });

  await scenario("chat", async () => {
    for (let round = 1; round <= R; round++) {
      log(`chat, round ${round}/${R}`);
      runs.chat.push({ round, ...(await ours("chat")) });
    }
  });

  // The cost of isolation: the same describe and text requests with the engine in this process
  // and in a supervised child process (two processes: each one's peak RSS is reported).
  const isolations = { "in process": { isolation: "none" }, "isolation: process": { isolation: "process" } };
  await scenario("isolation", async () => {
    for (let round = 1; round <= R; round++) {
      for (const request of ["describe", "text"]) {
        for (const side of rotate(Object.keys(isolations), round)) {
          log(`isolation, round ${round}/${R}: ${request}, ${side}`);
          runs.isolation.push({ round, request, side, ...(await ours(request, isolations[side])) });
        }
      }
    }
    // A real crash (a chat template whose recursion is as deep as a message is long) and the restart.
    for (let round = 1; round <= R; round++) {
      log(`isolation, round ${round}/${R}: crash and restart`);
      runs.restart.push({ round, ...(await ours("crash-restart", { isolation: "process", chatTemplate: CRASH_TEMPLATE })) });
    }
  });

  const logDir = path.join(resultsDir, `${stamp}-${recipe}-servers`);
  await scenario("concurrent", async () => {
    const c = settings.concurrent;
    // Room per slot: the image prompt (the describe prompt's positions), a question that may be
    // longer than that prompt's, and the generated tokens.
    const positionsPerRequest = prepared.describePositions + 64 + opts.tokens;
    const imageUrl = imageDataUrl(image);
    fs.mkdirSync(logDir, { recursive: true });
    for (let round = 1; round <= c.rounds; round++) {
      for (const [i, clients] of c.clients.entries()) {
        // The side that goes first changes from one client count (and round) to the next.
        for (const side of rotate(SERVERS, round + i)) {
          log(`concurrent, round ${round}/${c.rounds}, ${clients} client(s): ${side}`);
          const run = await runConcurrentSide(side, {
            root,
            model,
            mmproj,
            server,
            clients,
            contextSize: contextFor(clients, positionsPerRequest),
            threads: opts.threads,
            tokens: opts.tokens,
            requests: c.requestsPerClient[clients],
            seconds: c.seconds,
            extraArgs: c.llamaServerArgs,
            imageUrl,
            logFile: path.join(logDir, `${side}-${clients}-round${round}.log`),
          });
          runs.concurrent.push({ round, clients, side, ...run });
          const m = concurrentSummary([{ clients, side, ...run }])[clients][side];
          log(
            `  ${m.requests} requests, ${m.tokensPerSecond.toFixed(1)} tok/s, TTFT p50 ${m.ttftP50Ms.toFixed(0)} / p95 ${m.ttftP95Ms.toFixed(0)} ms, ` +
              `TPOT p50 ${m.tpotP50Ms.toFixed(1)} ms (warm-up ${m.warmupS.toFixed(1)} s)`,
          );
          if (m.otherCpuCores > OTHER_CPU_WARNING) {
            log(`  warning: other processes used ${m.otherCpuCores.toFixed(2)} cores on average meanwhile: this run's numbers are not reliable.`);
          }
        }
      }
    }
  });

  // --- report ---
  const of = (scenario, side) => runs[scenario].filter((r) => r.side === side);
  const sideMedians = (scenario, side, metrics) => ({ name: side, medians: medians(of(scenario, side), metrics) });
  const sameText = (scenario, a, b, norm = (text) => text) => of(scenario, a).every((r, i) => norm(r.text) === norm(of(scenario, b)[i]?.text ?? ""));
  const sections = [];
  const summary = {};
  const targets = [];
  const nodeLlamaCpp = runs.text.find((r) => r.side === "node-llama-cpp");

  if (completed("describe")) {
    const sides = [sideMedians("describe", "llama-mtmd-cli"), sideMedians("describe", "MultimodalLM")];
    const [ref, our] = sides.map((s) => s.medians);
    summary.describe = { medians: Object.fromEntries(sides.map((s) => [s.name, s.medians])), sameText: sameText("describe", "llama-mtmd-cli", "MultimodalLM") };
    sections.push(
      `### describe: one image + question (${prepared.describeTokens} prompt tokens, ${opts.tokens} generated; median of ${R})\n\n` +
        `${sideBySide(sides, ["llama-mtmd-cli"])}\n\n` +
        `Same text as llama-mtmd-cli in every round: ${summary.describe.sameText ? "yes" : "NO (the settings differ, or parity is broken)"}`,
    );
    const rssExtra = our.peakRssMiB == null || ref.peakRssMiB == null ? null : our.peakRssMiB - ref.peakRssMiB;
    targets.push(
      target("describe end-to-end, ours / llama-mtmd-cli", ratio(our.e2eMs, ref.e2eMs), "<=", TARGETS.e2eRatio),
      target("describe prompt eval tok/s, ours / llama-mtmd-cli", ratio(our.promptTps, ref.promptTps), ">=", TARGETS.tokensPerSecondRatio),
      target("describe generation tok/s, ours / llama-mtmd-cli", ratio(our.genTps, ref.genTps), ">=", TARGETS.tokensPerSecondRatio),
      target("describe peak RSS, ours - llama-mtmd-cli", rssExtra, "<=", TARGETS.rssExtraMiB, "MiB"),
    );
  }

  if (completed("isolation")) {
    summary.isolation = {};
    const rows = [];
    for (const request of ["describe", "text"]) {
      const side = (name) => medians(runs.isolation.filter((r) => r.request === request && r.side === name), ISOLATION_METRICS);
      const [here, apart] = [side("in process"), side("isolation: process")];
      summary.isolation[request] = { "in process": here, "isolation: process": apart };
      const e2e = ratio(apart.e2eMs, here.e2eMs);
      const gen = ratio(apart.genTps, here.genTps);
      rows.push(
        `| ${request} | ${fmtNumber(here.e2eMs)} / ${fmtNumber(apart.e2eMs)} | ${fmtNumber(e2e, 3)} | ${fmtNumber(here.genTps)} / ${fmtNumber(apart.genTps)} | ${fmtNumber(gen, 3)} | ` +
          `${fmtNumber(here.selfRssMiB)} | ${fmtNumber(apart.selfRssMiB)} + ${fmtNumber(apart.engineRssMiB)} |`,
      );
      targets.push(
        target(`isolation ${request} end-to-end, process / in process`, e2e, "<=", TARGETS.isolationE2eRatio),
        target(`isolation ${request} generation tok/s, process / in process`, gen, ">=", TARGETS.isolationGenTpsRatio),
      );
    }
    const restarts = runs.restart.filter((r) => r.code === "E_ENGINE_CRASHED");
    summary.isolation.restart = { runs: runs.restart.length, crashed: restarts.length, downtimeMs: median(restarts.map((r) => r.downtimeMs)), reloadMs: median(restarts.map((r) => r.reloadMs)) };
    targets.push(target("isolation restart after a crash, downtime", summary.isolation.restart.downtimeMs, "<=", TARGETS.isolationRestartMs, "ms"));
    sections.push(
      `### isolation: the same requests in process and with isolation: "process" (median of ${R})\n\n` +
        `Crash and restart (${restarts.length} of ${runs.restart.length} runs crashed with ${runs.restart[0]?.signal ?? "n/a"} as intended): ` +
        `serving again ${fmtNumber(summary.isolation.restart.downtimeMs)} ms after the crash (the reload ${fmtNumber(summary.isolation.restart.reloadMs)} ms).\n\n` +
        "| request | end-to-end ms, in process / isolated | ratio | generation tok/s, in process / isolated | ratio | peak RSS MiB, in process | peak RSS MiB, isolated: parent + engine |\n" +
        "|---|---:|---:|---:|---:|---:|---:|\n" +
        rows.join("\n"),
    );
  }

  if (completed("audio")) {
    const sides = [sideMedians("audio", "llama-mtmd-cli", AUDIO_METRICS), sideMedians("audio", "MultimodalLM", AUDIO_METRICS)];
    const [ref, our] = sides.map((s) => s.medians);
    summary.audio = {
      medians: Object.fromEntries(sides.map((s) => [s.name, s.medians])),
      sameText: sameText("audio", "llama-mtmd-cli", "MultimodalLM"),
      sameTextAscii: sameText("audio", "llama-mtmd-cli", "MultimodalLM", asciiSkeleton),
    };
    const a = settings.audio;
    const clip = a.clip.file ? shown(a.clip.file) : `a ${a.clip.seconds} s generated clip`;
    sections.push(
      `### audio: one clip + question on ${a.recipe} (${clip}; ${prepared.audioTokens} prompt tokens, ${opts.tokens} generated; median of ${R})\n\n` +
        `${sideBySide(sides, ["llama-mtmd-cli"], { metrics: AUDIO_METRICS })}\n\n` +
        `Same text as llama-mtmd-cli in every round: ${
          summary.audio.sameText
            ? "yes"
            : summary.audio.sameTextAscii
              ? "yes, but for characters split over byte tokens (llama-mtmd-cli logs every token on its own, so each byte of such a " +
                "character comes out as U+FFFD; compared with every run of non-ASCII characters as one)"
              : "NO (the settings differ, or parity is broken)"
        }\n` +
        `"audio decode": ours decodes the clip with ffmpeg in a child process; llama-mtmd-cli decodes it with miniaudio in process and ` +
        `logs no time for it (it is in its time to first token and end-to-end).`,
    );
    targets.push(target("audio end-to-end, ours / llama-mtmd-cli", ratio(our.e2eMs, ref.e2eMs), "<=", TARGETS.audioE2eRatio));
  }

  if (completed("text")) {
    const sides = ["llama-mtmd-cli", "node-llama-cpp", "MultimodalLM"].map((s) => sideMedians("text", s));
    const [, nlc, our] = sides.map((s) => s.medians);
    summary.text = {
      medians: Object.fromEntries(sides.map((s) => [s.name, s.medians])),
      sameText: { "llama-mtmd-cli": sameText("text", "llama-mtmd-cli", "MultimodalLM"), "node-llama-cpp": sameText("text", "node-llama-cpp", "MultimodalLM") },
    };
    const attempts = of("text", "llama-mtmd-cli").map((r) => r.attempts);
    sections.push(
      `### text only (${prepared.textTokens.length} prompt tokens, ${opts.tokens} generated; median of ${R})\n\n` +
        `${sideBySide(sides, ["llama-mtmd-cli", "node-llama-cpp"], { skip: ["encodeMs"] })}\n\n` +
        `llama-mtmd-cli and MultimodalLM also load the projector; node-llama-cpp loads the text model only.\n` +
        `Same text as MultimodalLM in every round: llama-mtmd-cli ${summary.text.sameText["llama-mtmd-cli"] ? "yes" : "no"}, ` +
        `node-llama-cpp ${summary.text.sameText["node-llama-cpp"] ? "yes" : "no"}.\n` +
        (attempts.some((a) => a > 1) ? `llama-mtmd-cli runs repeated for an incomplete log: attempts per round ${attempts.join(", ")}.\n` : "") +
        `CPU code: ours ${lib.systemInfo().cpuVariant ? `(variant ${lib.systemInfo().cpuVariant.name}) ` : ""}${lib.systemInfo().llamaSystemInfo.trim()}\n` +
        `node-llama-cpp ${nodeLlamaCpp.version} (prebuilt, picks its CPU variant at run time): ${nodeLlamaCpp.systemInfo.trim()}`,
    );
    // Issue 21: prompt eval too, now that both sides run the CPU variant this CPU calls for.
    targets.push(target("text-only prompt eval tok/s, ours / node-llama-cpp", ratio(our.promptTps, nlc.promptTps), ">=", TARGETS.textVsNodeLlamaCpp));
    targets.push(target("text-only generation tok/s, ours / node-llama-cpp", ratio(our.genTps, nlc.genTps), ">=", TARGETS.textVsNodeLlamaCpp));
  }

  if (completed("repeat")) {
    const rows = Object.keys(variants).map((name) => ({
      name,
      summary: twoRequestSummary(runs.repeat.filter((r) => r.variant === name)),
      target: TARGETS.repeatTtft,
    }));
    summary.repeat = Object.fromEntries(rows.map((r) => [r.name, r.summary]));
    sections.push(`### repeat: same image, new question, one process (median of ${R})\n\n${twoRequestTable(rows)}`);
    for (const row of rows) targets.push(target(`repeated image TTFT 2 / TTFT 1, ${row.name}`, row.summary.ratio, "<=", TARGETS.repeatTtft));
  }

  if (completed("chat")) {
    const row = { name: "second turn (defaults)", summary: twoRequestSummary(runs.chat), target: TARGETS.chatTtft };
    summary.chat = row.summary;
    sections.push(`### chat: second turn after an image message, one process (median of ${R})\n\n${twoRequestTable([row])}`);
    targets.push(target("second chat turn TTFT 2 / TTFT 1", row.summary.ratio, "<=", TARGETS.chatTtft));
  }

  // The concurrent table also shows the client counts done before a failure.
  if (runs.concurrent.length) {
    const [reference, our] = SERVERS;
    const bySize = concurrentSummary(runs.concurrent);
    const counts = Object.keys(bySize).map(Number);
    const lo = Math.min(...counts);
    const hi = Math.max(...counts);
    const scaling = (side) => ratio(bySize[hi]?.[side]?.tokensPerSecond, bySize[lo]?.[side]?.tokensPerSecond);
    // Request by request (same question), does ours write what llama-server writes?
    const sameTextAt = (n) => {
      const theirs = new Map(runs.concurrent.filter((r) => r.clients === n && r.side === reference).flatMap((r) => r.requests.map((q) => [`${r.round}:${q.question}`, q.text])));
      const pairs = runs.concurrent
        .filter((r) => r.clients === n && r.side === our)
        .flatMap((r) => r.requests.map((q) => [q.text, theirs.get(`${r.round}:${q.question}`)]))
        .filter(([, t]) => t !== undefined);
      return { same: pairs.filter(([a, b]) => a === b).length, compared: pairs.length };
    };
    summary.concurrent = {
      bySize,
      scaling: { from: lo, to: hi, [our]: scaling(our), [reference]: scaling(reference) },
      sameText: Object.fromEntries(counts.map((n) => [n, sameTextAt(n)])),
    };
    const { perSide, ratios } = concurrentTables(bySize, SERVERS, our, reference);
    const c = settings.concurrent;
    sections.push(
      `### concurrent: N clients, each streaming image + question chat completions one after another ` +
        `(${opts.tokens} tokens each, requests per client ${counts.map((n) => `${n}: ${c.requestsPerClient[n]}`).join(", ")}, ` +
        `at most ${c.seconds} s; ${c.rounds === 1 ? "one round" : `median of ${c.rounds} rounds`})\n\n` +
        `${perSide}\n\n${ratios}\n\n` +
        `Aggregate tok/s at ${hi} clients / at ${lo}: ${our} ${fmtRatio(summary.concurrent.scaling[our])}, ${reference} ${fmtRatio(summary.concurrent.scaling[reference])}.\n` +
        `Same text as ${reference}, request by request: ${counts.map((n) => `${n}: ${summary.concurrent.sameText[n].same}/${summary.concurrent.sameText[n].compared}`).join(", ")}.\n` +
        `"prompt tokens evaluated": per request, prompt_tokens - usage.prompt_tokens_details.cached_tokens; "image evaluated ` +
        `again": timed requests that evaluated more than half their prompt, so the image too (0: every one found it cached).\n` +
        `"other processes": the CPU everything but the server and the bench used during the timed phase, in cores on ` +
        `average; above ${OTHER_CPU_WARNING} the run competed for the CPU and its numbers are not reliable.\n` +
        `Server logs: ${shown(logDir)}` +
        (failed.some((f) => f.scenario === "concurrent") ? "\n\n(incomplete: the scenario failed part way, see below)" : ""),
    );
    const at = bySize[TARGETS.concurrentClients];
    targets.push(
      target(
        `concurrent ${TARGETS.concurrentClients} clients aggregate tok/s, ours / llama-server`,
        ratio(at?.[our]?.tokensPerSecond, at?.[reference]?.tokensPerSecond),
        ">=",
        TARGETS.concurrentTpsRatio,
      ),
      target(`concurrent ${TARGETS.concurrentClients} clients TTFT p95, ours / llama-server`, ratio(at?.[our]?.ttftP95Ms, at?.[reference]?.ttftP95Ms), "<=", TARGETS.concurrentTtftP95Ratio),
    );
  }

  const info = lib.systemInfo();
  const machine = {
    cpu: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    availableParallelism: os.availableParallelism(),
    memoryBytes: os.totalmem(),
    platform: `${process.platform}-${process.arch} ${os.release()}`,
    node: process.version,
    loadAverageAtStart: load,
    loadAverageAtEnd: os.loadavg()[0],
    llamaCppCommit: info.llamaCppCommit,
    backend: info.backend,
    cpuFeatures: info.cpuFeatures,
    nodeLlamaCpp: nodeLlamaCpp ? { version: nodeLlamaCpp.version, systemInfo: nodeLlamaCpp.systemInfo } : undefined,
    rssMethod,
    git: gitState(),
  };
  const totalSeconds = (performance.now() - started) / 1000;
  const report = { date, settings, machine, prepared, runs, summary, targets, failed, totalSeconds };

  fs.mkdirSync(resultsDir, { recursive: true });
  const models = [...(vision ? [recipe] : []), ...(only.has("audio") ? [MODELS.audio] : [])];
  const file = path.join(resultsDir, `${stamp}-${models.join("+")}.json`);
  fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);

  // Context and rounds of the one-process scenarios (concurrent has its own, in its heading).
  const perProcess = settings.scenarios.some((s) => s !== "concurrent") ? `, context ${CONTEXT_SIZE}, ${R} rounds` : "";
  const header =
    `## multimodal-lm bench: ${models.join(", ")}, ${opts.threads} threads, ${opts.tokens} tokens${perProcess}\n\n` +
    `${machine.cpu} (${machine.cores} cores), Node ${process.version}, llama.cpp ${info.llamaCppCommit.slice(0, 12)}, ` +
    `${vision ? `image ${shown(image)}, ` : ""}peak RSS via ${rssMethod}, load average ${load.toFixed(2)} at the start and ` +
    `${machine.loadAverageAtEnd.toFixed(2)} at the end`;
  const failures = failed.length
    ? [`### failed\n\n${failed.map((f) => `- ${f.scenario}: ${f.message.split("\n")[0]}`).join("\n")}\n\n(the whole messages are in the JSON report, under "failed")`]
    : [];
  const text = [
    header,
    ...sections,
    `### targets\n\n\`\`\`\n${targets.map(targetLine).join("\n")}\n\`\`\``,
    ...failures,
    `total ${totalSeconds.toFixed(0)} s; raw runs: ${shown(file)}`,
  ].join("\n\n");
  if (opts.json) {
    process.stderr.write(`${text}\n`);
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write(`${text}\n`);
  }
  if (failed.length) {
    log(`error: ${failed.length === 1 ? "a scenario" : "scenarios"} failed: ${failed.map((f) => f.scenario).join(", ")} (the others are reported above)`);
    process.exitCode = 1;
  }
}

/**
 * The text with every run of non-ASCII characters as one "?". llama-mtmd-cli logs each token as
 * its own entry, so a character whose UTF-8 bytes are split over two byte tokens arrives as two
 * U+FFFD, where ours streams the character whole: the random-weight audio model, with its small
 * byte-heavy vocabulary, picks such tokens.
 */
const asciiSkeleton = (text) => text.replace(/[\u0080-\u{10ffff}]+/gu, "?");

const fmtRatio = (r) => (r == null ? "n/a" : `${r.toFixed(2)}×`);

main()
  .catch((error) => {
    process.stderr.write(`[bench] error: ${error.benchSetup ? error.message : (error.stack ?? error)}\n`);
    process.exitCode = 1;
  })
  .finally(cleanUp);
