// The reference side: llama-mtmd-cli built from the same vendored llama.cpp, timed from its own
// log. With --log-jsonl --log-timestamps every log entry is one JSON line
// {"type":"log","time":<µs since start>,"level":...,"msg":...}, and every generated token is
// printed as its own entry of level "none", so the times need no output parsing heuristics.
import { killGroup, spawnMeasured } from "./spawn.mjs";

// Logged once the model, the projector and the warm-up are done: the end of loading.
const LOAD_DONE = "WARN: This is an experimental CLI";
const ENCODE_START = "encoding mtmd batch";
const ENCODE_DONE = "mtmd batch encoding done";
const CHAT_PROMPT = "\n> ";
// llama.cpp's logger is asynchronous and not flushed at exit: a run can lose its last entries.
const ATTEMPTS = 3;
// Chat mode prints "\n> " right after the last token (and its decode). When it has not shown up
// (on stdout or stderr) this long after the last token, or 10 token times on a machine so slow
// that that is longer, the run is ended with /quit and tried again.
const IDLE_AFTER_GENERATION_MS = 5_000;
// How long /quit may take (or 10 token times) before the process group is killed (and the run
// tried again).
const QUIT_GRACE_MS = 10_000;
const SLOW_MACHINE_TOKENS = 10;
// Chat mode that prints nothing for this long before the answer is complete (seen once: the
// prompt read, the tokens never logged, the process idle on stdin) is ended the same way.
const STALL_MS = 60_000;

function commonArgs(s) {
  return [
    ["-m", s.model, "--mmproj", s.mmproj, "-n", s.tokens, "--temp", 0, "-t", s.threads, "-c", s.contextSize, "-b", s.batchSize],
    ["--jinja", "--ignore-eos", "--log-jsonl", "--log-timestamps"],
  ]
    .flat()
    .map(String);
}

/** The log entries of a run's output, in time order. */
function logEntries(...outputs) {
  const entries = [];
  for (const line of outputs.join("\n").split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line);
      if (entry.type === "log") entries.push(entry);
    } catch {
      // a line cut short at exit
    }
  }
  return entries.sort((a, b) => a.time - b.time);
}

const ms = (fromUs, toUs) => (toUs - fromUs) / 1000;

/**
 * Single-turn run with an image (or an audio clip). After loading: media load and tokenization, then one
 * "encoding ... / done" pair per encoded batch with the decodes of text and embeddings in
 * between, a "\n" when the prompt is evaluated, one entry per token, and "\n\n" at the end.
 * Returns undefined when the log came out incomplete.
 */
function describeTimings(entries, n) {
  const load = entries.find((e) => e.msg.startsWith(LOAD_DONE));
  if (!load) return undefined;
  let encodeMs = 0;
  let firstEncode;
  let encoding;
  let lastEncodeDone = load.time;
  for (const e of entries) {
    if (e.msg.startsWith(ENCODE_START)) {
      encoding = e.time;
      firstEncode ??= e.time;
    } else if (e.msg.startsWith(ENCODE_DONE) && encoding !== undefined) {
      encodeMs += ms(encoding, e.time);
      lastEncodeDone = e.time;
      encoding = undefined;
    }
  }
  const printed = entries.filter((e) => e.level === "none" && e.time >= lastEncodeDone);
  if (firstEncode === undefined || printed.length < n + 2 || printed[0].msg !== "\n" || printed[n + 1].msg !== "\n\n") return undefined;
  const [, ...rest] = printed; // the first is the "\n" printed once the prompt is evaluated
  const tokens = rest.slice(0, n);
  return {
    loadMs: load.time / 1000,
    encodeMs,
    ttftMs: ms(load.time, tokens[0].time),
    genTokens: n,
    genSpanMs: ms(tokens[0].time, tokens[n - 1].time),
    e2eMs: ms(load.time, printed[n + 1].time),
    text: tokens.map((e) => e.msg).join(""),
  };
}

/**
 * Chat-mode run without images: "\n> " when it waits for input (the prompt is already in
 * the pipe, so it reads it at once), "\n" when the prompt is evaluated, one entry per token,
 * then "\n> " again.
 */
function textTimings(entries, n) {
  const load = entries.find((e) => e.msg.startsWith(LOAD_DONE));
  const prompts = entries.filter((e) => e.level === "none" && e.msg === CHAT_PROMPT);
  if (!load || prompts.length < 2) return undefined;
  const [asked, answered] = prompts;
  const printed = entries.filter((e) => e.level === "none" && e.time > asked.time && e.time < answered.time);
  if (printed.length !== n + 1 || printed[0].msg !== "\n") return undefined;
  const [, ...tokens] = printed; // the first is the "\n" printed once the prompt is evaluated
  return {
    loadMs: load.time / 1000,
    encodeMs: 0,
    // Includes applying the chat template and tokenizing, which take well under a millisecond.
    ttftMs: ms(asked.time, tokens[0].time),
    genTokens: n,
    genSpanMs: ms(tokens[0].time, tokens[n - 1].time),
    e2eMs: ms(asked.time, answered.time),
    text: tokens.map((e) => e.msg).join(""),
  };
}

async function runUntilComplete(what, cli, args, timings, s, spawnOptions = () => ({})) {
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const options = spawnOptions();
    const r = await spawnMeasured(cli, args, options);
    const stopped = options.stoppedByUs?.() ?? false;
    if (r.code !== 0 && !stopped) {
      throw new Error(`llama-mtmd-cli (${what}) exited with ${r.code ?? r.signal}:\n${(r.stderr || r.stdout).trim().slice(-3000)}`);
    }
    const t = stopped ? undefined : timings(logEntries(r.stdout, r.stderr), s.tokens);
    if (t) return { ...t, attempts: attempt, peakRssBytes: r.peakRssBytes };
    const why = stopped ? "did not end after /quit and was stopped" : `incomplete log${options.gaveUp?.() ? ` (${options.gaveUp()})` : ""}`;
    process.stderr.write(
      `[bench]   llama-mtmd-cli (${what}): ${why}` +
        `${attempt < ATTEMPTS ? `; running it again (attempt ${attempt + 1}/${ATTEMPTS})` : ""}\n`,
    );
  }
  throw new Error(
    `llama-mtmd-cli (${what}) gave no complete run ${ATTEMPTS} times in a row (an incomplete log: its logger is not flushed ` +
      "at exit; or, in chat mode, no exit after /quit); run the bench again, and if it keeps happening, run the command by " +
      "hand with --log-jsonl --log-timestamps",
  );
}

/** `llama-mtmd-cli --image IMAGE -p PROMPT`: single turn with an image. */
export function referenceDescribe(cli, s) {
  const args = [...commonArgs(s), "--image", s.image, "-p", s.prompts.describe];
  return runUntilComplete("describe", cli, args, describeTimings, s);
}

/**
 * `llama-mtmd-cli --audio CLIP -p PROMPT`: single turn with an audio clip (the same code path as
 * --image: the clip is read with miniaudio, then one "encoding mtmd batch" pair per batch of 30 s
 * windows). `s.model` and `s.mmproj` are the audio model's.
 */
export function referenceAudio(cli, s) {
  const args = [...commonArgs(s), "--audio", s.audioClip, "-p", s.prompts.audio];
  return runUntilComplete("audio", cli, args, describeTimings, s);
}

/**
 * Text only: without --image, llama-mtmd-cli answers in its chat mode, so the prompt goes in
 * on stdin and /quit follows once the second "\n> " shows that the answer is complete. stdin
 * stays open until then: at the end of its input, chat mode spins on an empty read.
 *
 * The second "\n> " can come on either stream (the logger picks one per entry), so both are
 * watched. When it has not come IDLE_AFTER_GENERATION_MS (or 10 token times) after the last of
 * the n tokens, the run is ended anyway; its log is then incomplete and runUntilComplete runs it
 * again.
 */
export function referenceText(cli, s) {
  return runUntilComplete("text", cli, commonArgs(s), textTimings, s, () => {
    const output = { stdout: "", stderr: "" };
    let quit = false;
    let stopped = false;
    let idle;
    let tokenMs = 0; // the mean time per generated token, from the log's own timestamps
    let gaveUp;
    const end = (child) => {
      if (quit) return;
      quit = true;
      clearTimeout(idle);
      clearTimeout(stall);
      child.stdin.end("/quit\n");
      setTimeout(
        () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          stopped = true;
          killGroup(child);
        },
        Math.max(QUIT_GRACE_MS, SLOW_MACHINE_TOKENS * tokenMs),
      ).unref();
    };
    let stall;
    const watch = (stream) => (chunk, child) => {
      output[stream] += chunk;
      if (quit) return;
      clearTimeout(stall);
      stall = setTimeout(() => {
        gaveUp = `no output for ${STALL_MS / 1000} s before the answer was complete: ended with /quit`;
        end(child);
      }, STALL_MS);
      stall.unref();
      const printed = logEntries(output.stdout, output.stderr).filter((e) => e.level === "none");
      const prompts = printed.filter((e) => e.msg === CHAT_PROMPT);
      if (prompts.length >= 2) {
        end(child);
      } else if (prompts.length === 1) {
        const [, ...tokens] = printed.filter((e) => e.time > prompts[0].time); // after the "\n"
        if (tokens.length < s.tokens) return;
        // The "\n" and all n tokens are out: only the prompt is missing. Wait a little for it.
        tokenMs = tokens.length > 1 ? ms(tokens[0].time, tokens.at(-1).time) / (tokens.length - 1) : 0;
        clearTimeout(idle);
        const waitMs = Math.max(IDLE_AFTER_GENERATION_MS, SLOW_MACHINE_TOKENS * tokenMs);
        idle = setTimeout(() => {
          gaveUp = `no "\\n> " ${(waitMs / 1000).toFixed(1)} s after the last token: ended with /quit`;
          end(child);
        }, waitMs);
        idle.unref();
      }
    };
    return {
      input: `${s.prompts.text}\n`,
      onStdout: watch("stdout"),
      onStderr: watch("stderr"),
      stoppedByUs: () => stopped,
      gaveUp: () => gaveUp,
    };
  });
}
