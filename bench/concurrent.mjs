// The concurrent scenario: N clients against one server, over HTTP, the same way on both sides:
// `multimodal-lm serve --parallel N` and llama.cpp's llama-server -np N, built from the same
// vendored tree. Every client sends OpenAI chat-completion requests with the image and its own
// question, streamed (SSE), one after another (a closed loop), so time to first token and the
// token times are taken at the client. README.md beside this file says why the workload is what
// it is.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";

import { killGroup, readVmHwmBytes, track } from "./spawn.mjs";

const HOST = "127.0.0.1";
// A server has this long to answer /health with 200 after it starts (load, warm-up at load).
const READY_TIMEOUT_MS = 5 * 60_000;
// After SIGTERM, a server has this long to exit before it is killed.
const STOP_GRACE_MS = 15_000;
// A request that sends nothing for this long fails (only a hung server gets there).
const REQUEST_IDLE_MS = 10 * 60_000;
// The warm-up requests only need to put the image into the server's caches.
const WARMUP_TOKENS = 4;
// Both sides: llama-mtmd-cli's and the addon's defaults.
const BATCH = 2048;
const MICRO_BATCH = 512;

export const DEFAULT_CLIENTS = [1, 2, 4, 8];
export const DEFAULT_SECONDS = 120;

/** Requests each client sends in the timed phase: at least 3, and 16 in all when N is small. */
export function requestsPerClient(clients) {
  return Math.max(3, Math.ceil(16 / clients));
}

/**
 * Each slot's context on both sides: room for one request (image, question, reply), and at least
 * 2048. Both keep one KV stream per slot (llama-server -np N without --kv-unified, which splits -c
 * between the slots; multimodal-lm's --ctx-size is per slot), so both hold slots x this.
 */
export function contextFor(clients, positionsPerRequest) {
  return Math.max(2048, Math.ceil(positionsPerRequest / 256) * 256);
}

const SUBJECTS = [
  "the colors",
  "the shapes",
  "the main object",
  "the background",
  "the lighting",
  "the textures",
  "the composition",
  "the edges",
  "the brightest part",
  "the darkest part",
  "the left half",
  "the right half",
  "the top",
  "the bottom",
  "the center",
  "any text or symbols",
];
const ASKS = ["Describe {} in this image.", "What stands out about {}?", "Explain {} in two sentences.", "What would you change about {}?"];

/** The k-th question (0-based): every request of a run has its own. */
export function question(k) {
  const ask = ASKS[Math.floor(k / SUBJECTS.length) % ASKS.length];
  return `${ask.replace("{}", SUBJECTS[k % SUBJECTS.length])} (question ${k + 1})`;
}
/**
 * The k-th warm-up request's question. They differ: llama-server keeps one copy of identical
 * prompts in its prompt cache, so with one question all but one slot would lose the image.
 */
export function warmupQuestion(k) {
  return `Describe this image. (warm-up ${k + 1})`;
}

function chatBody(imageUrl, text, maxTokens) {
  return {
    model: "default",
    messages: [
      {
        role: "user",
        content: [
          { type: "image_url", image_url: { url: imageUrl } },
          { type: "text", text },
        ],
      },
    ],
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
  };
}

/** The image as a data: URL, which both servers take without any media flag. */
export function imageDataUrl(file) {
  const ext = path.extname(file).slice(1).toLowerCase();
  const mime = ext === "jpg" ? "image/jpeg" : `image/${ext || "png"}`;
  return `data:${mime};base64,${fs.readFileSync(file).toString("base64")}`;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, HOST, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The server commands. Same model, projector, slots, context, threads, batch on both sides. */
export function serverCommand(side, s) {
  const common = { model: s.model, mmproj: s.mmproj };
  if (side === "MultimodalLM") {
    return {
      command: process.execPath,
      args: [
        path.join(s.root, "lib", "cli", "index.js"),
        "serve",
        common.model,
        ["--mmproj", common.mmproj, "--parallel", s.clients, "--ctx-size", s.contextSize, "--threads", s.threads],
        ["--host", HOST, "--port", s.port, "--no-ui"],
      ]
        .flat()
        .map(String),
    };
  }
  return {
    command: s.server,
    args: [
      ["-m", common.model, "--mmproj", common.mmproj, "-np", s.clients, "-c", s.contextSize * s.clients, "-t", s.threads],
      ["-b", BATCH, "-ub", MICRO_BATCH, "--jinja", "--host", HOST, "--port", s.port, "--no-webui"],
      s.extraArgs ?? [],
    ]
      .flat()
      .map(String),
  };
}

function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

function get(port, route) {
  return new Promise((resolve) => {
    const req = http.get({ host: HOST, port, path: route, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(0));
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts a server in its own process group, its output in `logFile`, and resolves once
 * GET /health answers 200. The returned stop() sends SIGTERM, then SIGKILL after STOP_GRACE_MS.
 */
async function startServer(name, { command, args }, port, logFile) {
  const fd = fs.openSync(logFile, "w");
  fs.writeSync(fd, `$ ${[command, ...args].join(" ")}\n`);
  let child;
  try {
    child = spawn(command, args, { detached: true, stdio: ["ignore", fd, fd] });
  } finally {
    fs.closeSync(fd);
  }
  track(child);
  let exited = null;
  const closed = new Promise((resolve) => {
    child.once("error", (error) => {
      exited = `could not start: ${error.message}`;
      resolve();
    });
    child.once("close", (code, signal) => {
      exited ??= `exited with ${code ?? signal}`;
      resolve();
    });
  });
  const stop = async () => {
    if (exited) return;
    killGroup(child, "SIGTERM");
    const timer = setTimeout(() => killGroup(child, "SIGKILL"), STOP_GRACE_MS);
    await closed;
    clearTimeout(timer);
  };
  const deadline = performance.now() + READY_TIMEOUT_MS;
  try {
    for (;;) {
      if (exited) throw new Error(`${name} ${exited} before it was ready; the end of its log (${logFile}):\n${tail(logFile)}`);
      if ((await get(port, "/health")) === 200) break;
      if (performance.now() > deadline) throw new Error(`${name} did not answer /health with 200 within ${READY_TIMEOUT_MS / 1000} s; its log: ${logFile}`);
      await sleep(250);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { child, stop, exited: () => exited };
}

/**
 * One streamed chat completion. Times are performance.now() values: sent, the first and the
 * last non-empty content piece, and the end of the response. Tokens are the usage's
 * completion_tokens (both servers send usage with stream_options.include_usage).
 */
export function streamChat(port, agent, body) {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const fail = (message) => reject(new Error(message));
    const sent = performance.now();
    const req = http.request(
      {
        host: HOST,
        port,
        path: "/v1/chat/completions",
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload), accept: "text/event-stream" },
      },
      (res) => {
        res.setEncoding("utf8");
        if (res.statusCode !== 200) {
          let text = "";
          res.on("data", (chunk) => (text += chunk));
          res.on("end", () => fail(`HTTP ${res.statusCode}: ${text.slice(0, 1000)}`));
          return;
        }
        let buffer = "";
        let first;
        let last;
        let pieces = 0;
        let text = "";
        let usage;
        let finishReason;
        let done = false;
        let error;
        res.on("data", (chunk) => {
          const now = performance.now();
          buffer += chunk.replace(/\r\n/g, "\n");
          for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
            const event = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            for (const line of event.split("\n")) {
              if (!line.startsWith("data:")) continue;
              const data = line.slice(5).trim();
              if (data === "[DONE]") {
                done = true;
                continue;
              }
              let message;
              try {
                message = JSON.parse(data);
              } catch {
                error ??= `a data line that is not JSON: ${data.slice(0, 200)}`;
                continue;
              }
              if (message.error) error ??= JSON.stringify(message.error).slice(0, 1000);
              const choice = message.choices?.[0];
              const content = choice?.delta?.content;
              if (typeof content === "string" && content.length > 0) {
                first ??= now;
                last = now;
                pieces++;
                text += content;
              }
              if (choice?.finish_reason) finishReason = choice.finish_reason;
              if (message.usage) usage = message.usage;
            }
          }
        });
        res.on("error", (e) => fail(`the response broke off: ${e.message}`));
        res.on("end", () => {
          const end = performance.now();
          if (error) return fail(`the stream reported an error: ${error}`);
          if (!done) return fail("the stream ended without [DONE]");
          if (first === undefined) return fail("the stream had no content");
          const tokens = usage?.completion_tokens;
          if (tokens !== body.max_tokens) {
            return fail(`generated ${tokens ?? "an unreported number of"} tokens, not max_tokens ${body.max_tokens} (finish_reason ${finishReason}): is ignore_eos honoured?`);
          }
          // Prompt tokens taken from the KV or prompt cache rather than evaluated (both servers report it).
          const cachedTokens = usage.prompt_tokens_details?.cached_tokens ?? null;
          resolve({ sent, first, last, end, tokens, promptTokens: usage.prompt_tokens, cachedTokens, pieces, text });
        });
      },
    );
    req.setTimeout(REQUEST_IDLE_MS, () => req.destroy(new Error(`no data for ${REQUEST_IDLE_MS / 1000} s`)));
    req.on("error", (e) => fail(`${e.message}${e.code ? ` (${e.code})` : ""} after ${(performance.now() - sent).toFixed(0)} ms`));
    req.end(payload);
  });
}

const range = (n) => Array.from({ length: n }, (_, i) => i);

// --- CPU used by other processes ---------------------------------------------
// This machine is shared, and a core taken by another process slows llama.cpp's OpenMP threads
// down a lot. So each run reports how much CPU everything else used meanwhile: the machine's
// busy time (/proc/stat) minus the server's and this process's own.
const CLOCK_TICKS = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout?.trim()) || 100;

function busySeconds() {
  try {
    const [user, nice, system, , , irq, softirq, steal] = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

function processSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS; // utime + stime
  } catch {
    return undefined;
  }
}

/** A CPU meter for one run: stop() gives the cores that other processes used on average. */
function otherCpuMeter(pid) {
  const start = { busy: busySeconds(), server: processSeconds(pid), self: process.cpuUsage(), at: performance.now() };
  return () => {
    const busy = busySeconds();
    const server = processSeconds(pid);
    if ([start.busy, start.server, busy, server].some((v) => v === undefined)) return null;
    const self = process.cpuUsage(start.self);
    const other = busy - start.busy - (server - start.server) - (self.user + self.system) / 1e6;
    return Math.max(0, other) / ((performance.now() - start.at) / 1000);
  };
}

/**
 * One side at one N: start the server, warm it up (one request, then N at once: one per slot),
 * then N clients each send `requests` requests in a closed loop, starting no new one after
 * `seconds`. Returns the raw requests (times in ms from the start of the timed phase) and the
 * server's peak RSS; the server is stopped in every case.
 */
export async function runConcurrentSide(side, s) {
  const port = await freePort();
  const spec = serverCommand(side, { ...s, port });
  const server = await startServer(side, spec, port, s.logFile);
  // A connection per request ("Connection: close"): llama-server closes a kept-alive connection
  // after a streamed response, and the next request sent on it fails ("socket hang up"). A loopback
  // connect costs well under a millisecond. (An agent with a finite maxSockets keeps connections
  // alive even without keepAlive, so it stays at the default, Infinity.)
  const agent = new http.Agent({ keepAlive: false });
  const failed = (error) => {
    const state = server.exited() ? `; the server ${server.exited()}` : "";
    return new Error(`${side}, ${s.clients} client(s): ${error.message}${state}. The end of its log (${s.logFile}):\n${tail(s.logFile)}`);
  };
  try {
    // Warm-up: one request alone (the image's first encode), then one per slot at once, so that
    // every slot holds the image (llama-server encodes it again per slot; an embedding cache need not).
    const warm = (k) => streamChat(port, agent, chatBody(s.imageUrl, warmupQuestion(k), WARMUP_TOKENS));
    const w0 = performance.now();
    const warmup = await warm(0)
      .then(async (first) => [first, ...(await Promise.all(range(s.clients).map((k) => warm(k + 1))))])
      .catch((e) => {
        throw failed(e);
      });
    const warmupMs = performance.now() - w0;

    const requests = [];
    const otherCpu = otherCpuMeter(server.child.pid);
    const t0 = performance.now();
    const deadline = t0 + s.seconds * 1000;
    const client = async (c) => {
      for (let i = 0; i < s.requests && performance.now() < deadline; i++) {
        const k = i * s.clients + c;
        const r = await streamChat(port, agent, chatBody(s.imageUrl, question(k), s.tokens));
        requests.push({
          client: c,
          question: k,
          startMs: r.sent - t0,
          ttftMs: r.first - r.sent,
          // Per output token after the first: (last token - first token) / (n - 1).
          tpotMs: r.tokens > 1 ? (r.last - r.first) / (r.tokens - 1) : null,
          e2eMs: r.end - r.sent,
          tokens: r.tokens,
          promptTokens: r.promptTokens,
          cachedTokens: r.cachedTokens,
          pieces: r.pieces,
          text: r.text,
        });
      }
    };
    await Promise.all(range(s.clients).map(client)).catch((e) => {
      throw failed(e);
    });
    const wallMs = performance.now() - t0;
    const otherCpuCores = otherCpu();
    const peakRssBytes = readVmHwmBytes(server.child.pid) ?? null;
    requests.sort((a, b) => a.startMs - b.startMs);
    return {
      command: [spec.command, ...spec.args].join(" ").replace(s.root + path.sep, ""),
      contextSize: s.contextSize,
      requestsPerClient: s.requests,
      warmup: { ms: warmupMs, ttftMs: warmup.map((r) => r.first - r.sent), cachedTokens: warmup.map((r) => r.cachedTokens) },
      wallMs,
      peakRssBytes,
      otherCpuCores,
      requests,
    };
  } finally {
    agent.destroy();
    await server.stop();
  }
}
