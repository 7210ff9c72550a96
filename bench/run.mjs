// npm run bench: MultimodalLM side by side with llama-mtmd-cli (built from the same vendored
// llama.cpp) and, for text only, node-llama-cpp, on a realistic-shape random-weight model.
// Every run is a fresh child process. `npm run bench -- --help` for the options; README.md
// beside this file says what is measured and how.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Command, InvalidArgumentError, Option } from "commander";

import { referenceDescribe, referenceText } from "./reference.mjs";
import { medians, ratio, sideBySide, target, targetLine, twoRequestSummary, twoRequestTable } from "./report.mjs";
import { cleanUp, rssMethod, runNodeScript } from "./spawn.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const SCENARIOS = ["describe", "text", "repeat", "chat"];
const MODELS = { small: "smolvlm-256m-bench", large: "qwen2vl-2b-bench" };
const PROMPTS = {
  describe: "Describe this image in detail.",
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
  tokensPerSecondRatio: 0.97,
  rssExtraMiB: 80,
  repeatTtft: 0.2,
  chatTtft: 0.1,
  textVsNodeLlamaCpp: 1.0,
};

function positiveInteger(value) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("Expected a positive integer.");
  return n;
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
      "node-llama-cpp, on a random-weight model with a real model's dimensions. Prints markdown tables with " +
      "medians and ratios to stdout and writes every run as JSON to bench/results/. Missed targets are reported, " +
      "not failed: the exit status is non-zero only when something could not run.",
  )
  .option("--rounds <n>", "rounds per scenario; the order of the sides changes every round", positiveInteger, 5)
  .option("--threads <n>", "CPU threads on every side", positiveInteger, 2)
  .option("-n, --tokens <n>", "tokens to generate per request (EOS ignored)", positiveInteger, 128)
  .option("--image <path>", "the image for every request (default: assets/sample.png)")
  .option("--large", "use the Qwen2-VL-2B-shape model (about 3 GB, generated on first use) instead of SmolVLM-256M")
  .addOption(new Option("--only <list>", `scenarios to run, comma-separated: ${SCENARIOS.join(",")}`).argParser(scenarioList).default(SCENARIOS, "all"))
  .option("--json", "print the JSON report to stdout instead of the tables (the tables go to stderr)")
  .addHelpText(
    "after",
    `
Scenarios (each run is a fresh process, so load time and peak RSS are per run):
  describe  one image + question: llama-mtmd-cli vs MultimodalLM
  text      text-only prompt: llama-mtmd-cli (chat mode) vs node-llama-cpp vs MultimodalLM
  repeat    same image, new question, in one MultimodalLM: with the embedding cache only, and with both caches
  chat      second chat turn after an image message, in one MultimodalLM

Targets (from issue 7): describe end-to-end ratio <= ${TARGETS.e2eRatio}; prompt-eval and generation tok/s >= ${TARGETS.tokensPerSecondRatio}x
the reference; peak RSS <= reference + ${TARGETS.rssExtraMiB} MiB; repeated image TTFT <= ${TARGETS.repeatTtft}x the first request's; second
chat turn TTFT <= ${TARGETS.chatTtft}x; text-only generation >= ${TARGETS.textVsNodeLlamaCpp}x node-llama-cpp's tok/s.`,
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

function ensureReferenceCli(referenceCliPath) {
  const cli = referenceCliPath();
  if (fs.existsSync(cli)) return cli;
  log(`${shown(cli)} is missing: building it (node scripts/build-native.mjs --reference) ...`);
  // The build's output goes to stderr, so that stdout stays the report.
  const r = spawnSync(process.execPath, [path.join(root, "scripts", "build-native.mjs"), "--reference"], {
    cwd: root,
    stdio: ["ignore", process.stderr, process.stderr],
  });
  if (r.status !== 0 || !fs.existsSync(cli)) {
    fail(`could not build ${shown(cli)}: run \`npm run build:reference\` and fix what it reports, then run the bench again.`);
  }
  return cli;
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
  const lib = await importLib();
  const recipe = opts.large ? MODELS.large : MODELS.small;
  // npm run starts scripts in the package root; a path the user typed is relative to where they typed it.
  const image = opts.image ? path.resolve(process.env.INIT_CWD ?? process.cwd(), opts.image) : path.join(root, "assets", "sample.png");
  if (!fs.existsSync(image)) fail(`--image ${opts.image}: no such file.`);
  const needsReference = only.has("describe") || only.has("text");
  const cli = needsReference ? ensureReferenceCli(lib.referenceCliPath) : undefined;
  if (only.has("text")) checkNodeLlamaCpp();
  const { model, mmproj } = await ensureModel(lib.ensureTestModel, recipe);

  const load = os.loadavg()[0];
  if (load > 0.5) log(`warning: load average ${load.toFixed(2)}: other processes are using the CPU, so the numbers will be noisy.`);

  const settings = {
    recipe,
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
  const ours = (mode, loadOptions = {}) => runNodeScript(path.join(here, "node-runner.mjs"), { mode, loadOptions, ...settings });

  log("counting prompt tokens ...");
  const prepared = await ours("prepare");
  // The other sides are credited with the prepared counts: ours must have evaluated the same.
  const oursWith = async (mode, promptTokens) => {
    const r = await ours(mode);
    if (r.promptTokens !== promptTokens) fail(`MultimodalLM (${mode}) evaluated ${r.promptTokens} prompt tokens, not the ${promptTokens} counted first.`);
    return r;
  };
  const runs = { describe: [], text: [], repeat: [], chat: [] };
  const R = opts.rounds;

  if (only.has("describe")) {
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
  }

  if (only.has("text")) {
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
  }

  const variants = {
    "embedding cache only (reusePrefix: false)": { reusePrefix: false },
    "both caches (defaults)": {},
  };
  if (only.has("repeat")) {
    for (let round = 1; round <= R; round++) {
      for (const variant of rotate(Object.keys(variants), round)) {
        log(`repeat, round ${round}/${R}: ${variant}`);
        runs.repeat.push({ round, variant, ...(await ours("repeat", variants[variant])) });
      }
    }
  }

  if (only.has("chat")) {
    for (let round = 1; round <= R; round++) {
      log(`chat, round ${round}/${R}`);
      runs.chat.push({ round, ...(await ours("chat")) });
    }
  }

  // --- report ---
  const of = (scenario, side) => runs[scenario].filter((r) => r.side === side);
  const sideMedians = (scenario, side) => ({ name: side, medians: medians(of(scenario, side)) });
  const sameText = (scenario, a, b) => of(scenario, a).every((r, i) => r.text === of(scenario, b)[i]?.text);
  const sections = [];
  const summary = {};
  const targets = [];
  const nodeLlamaCpp = runs.text.find((r) => r.side === "node-llama-cpp");

  if (runs.describe.length) {
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

  if (runs.text.length) {
    const sides = ["llama-mtmd-cli", "node-llama-cpp", "MultimodalLM"].map((s) => sideMedians("text", s));
    const [, nlc, our] = sides.map((s) => s.medians);
    summary.text = {
      medians: Object.fromEntries(sides.map((s) => [s.name, s.medians])),
      sameText: { "llama-mtmd-cli": sameText("text", "llama-mtmd-cli", "MultimodalLM"), "node-llama-cpp": sameText("text", "node-llama-cpp", "MultimodalLM") },
    };
    sections.push(
      `### text only (${prepared.textTokens.length} prompt tokens, ${opts.tokens} generated; median of ${R})\n\n` +
        `${sideBySide(sides, ["llama-mtmd-cli", "node-llama-cpp"], { skip: ["encodeMs"] })}\n\n` +
        `llama-mtmd-cli and MultimodalLM also load the projector; node-llama-cpp loads the text model only.\n` +
        `Same text as MultimodalLM in every round: llama-mtmd-cli ${summary.text.sameText["llama-mtmd-cli"] ? "yes" : "no"}, ` +
        `node-llama-cpp ${summary.text.sameText["node-llama-cpp"] ? "yes" : "no"}.\n` +
        `CPU code: ours ${lib.systemInfo().llamaSystemInfo.trim()}\n` +
        `node-llama-cpp ${nodeLlamaCpp.version} (prebuilt, picks its CPU variant at run time): ${nodeLlamaCpp.systemInfo.trim()}`,
    );
    targets.push(target("text-only generation tok/s, ours / node-llama-cpp", ratio(our.genTps, nlc.genTps), ">=", TARGETS.textVsNodeLlamaCpp));
  }

  if (runs.repeat.length) {
    const rows = Object.keys(variants).map((name) => ({
      name,
      summary: twoRequestSummary(runs.repeat.filter((r) => r.variant === name)),
      target: TARGETS.repeatTtft,
    }));
    summary.repeat = Object.fromEntries(rows.map((r) => [r.name, r.summary]));
    sections.push(`### repeat: same image, new question, one process (median of ${R})\n\n${twoRequestTable(rows)}`);
    for (const row of rows) targets.push(target(`repeated image TTFT 2 / TTFT 1, ${row.name}`, row.summary.ratio, "<=", TARGETS.repeatTtft));
  }

  if (runs.chat.length) {
    const row = { name: "second turn (defaults)", summary: twoRequestSummary(runs.chat), target: TARGETS.chatTtft };
    summary.chat = row.summary;
    sections.push(`### chat: second turn after an image message, one process (median of ${R})\n\n${twoRequestTable([row])}`);
    targets.push(target("second chat turn TTFT 2 / TTFT 1", row.summary.ratio, "<=", TARGETS.chatTtft));
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
    llamaCppCommit: info.llamaCppCommit,
    backend: info.backend,
    cpuFeatures: info.cpuFeatures,
    nodeLlamaCpp: nodeLlamaCpp ? { version: nodeLlamaCpp.version, systemInfo: nodeLlamaCpp.systemInfo } : undefined,
    rssMethod,
    git: gitState(),
  };
  const totalSeconds = (performance.now() - started) / 1000;
  const report = { date: new Date().toISOString(), settings, machine, prepared, runs, summary, targets, totalSeconds };

  const resultsDir = path.join(here, "results");
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${report.date.replace(/[:.]/g, "-")}-${recipe}.json`);
  fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);

  const header =
    `## multimodal-lm bench: ${recipe}, ${opts.threads} threads, context ${CONTEXT_SIZE}, ${opts.tokens} tokens, ${R} rounds\n\n` +
    `${machine.cpu} (${machine.cores} cores), Node ${process.version}, llama.cpp ${info.llamaCppCommit.slice(0, 12)}, ` +
    `image ${shown(image)}, peak RSS via ${rssMethod}`;
  const text = [header, ...sections, `### targets\n\n\`\`\`\n${targets.map(targetLine).join("\n")}\n\`\`\``, `total ${totalSeconds.toFixed(0)} s; raw runs: ${shown(file)}`].join("\n\n");
  if (opts.json) {
    process.stderr.write(`${text}\n`);
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write(`${text}\n`);
  }
}

main()
  .catch((error) => {
    process.stderr.write(`[bench] error: ${error.benchSetup ? error.message : (error.stack ?? error)}\n`);
    process.exitCode = 1;
  })
  .finally(cleanUp);
