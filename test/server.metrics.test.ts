// GET /metrics on the tiny Qwen2-VL model: Prometheus text that a third-party parser reads, whose
// counters match the requests sent; the API key guards it; `metrics: false` removes it; the
// slots and the queue (maxQueue counts only requests waiting for a slot); and the chat page's
// routes answering while a completion streams.
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

import express from "express";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { checkServeOptions, createOpenAIHandler, MultimodalLM, startServer, type OpenAIHandlerOptions, type RunningServer, type ServeOptions } from "../src/index.js";
import { ensureTestModel } from "../src/test-models/index.js";

const root = path.resolve(import.meta.dirname, "..");
const PNG_URL = `data:image/png;base64,${fs.readFileSync(path.join(root, "assets", "sample.png")).toString("base64")}`;

let lm: MultimodalLM;
const servers: RunningServer[] = [];

beforeAll(async () => {
  const files = await ensureTestModel("qwen2vl-tiny");
  // A large context, so an unbounded generation runs until its client goes away.
  lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: 32768 });
}, 600_000);

afterAll(async () => {
  for (const server of servers) await server.close();
  await lm?.dispose();
});

async function serve(options: ServeOptions = {}): Promise<RunningServer> {
  const server = await startServer(lm, { port: 0, ...options });
  servers.push(server);
  return server;
}

/** The model's slots; 1 until the engine reports them. */
const slots = () => lm.stats.slots?.total ?? 1;

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

async function complete(server: RunningServer, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  const response = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: response.status, json: (await response.json()) as { usage?: Usage; error?: { code: string } } };
}

/** A streamed completion, read to the end; its usage comes in the last chunk (include_usage). */
async function completeStreaming(server: RunningServer, body: Record<string, unknown>): Promise<Usage> {
  const response = await fetch(`${server.url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  expect(response.status).toBe(200);
  const events = (await response.text()).split("\n\n").filter((e) => e.startsWith("data: {"));
  return (JSON.parse(events.at(-1)!.slice("data: ".length)) as { usage: Usage }).usage;
}

/** Starts a generation that streams until its request is destroyed, and resolves once its first chunk arrived. */
function startEndlessStream(server: RunningServer, headers: Record<string, string> = {}): Promise<http.ClientRequest> {
  const body = { messages: [{ role: "user", content: "Go on forever." }], max_tokens: 30000, ignore_eos: true, temperature: 0, stream: true };
  return new Promise((resolve, reject) => {
    const req = http.request(`${server.url}/v1/chat/completions`, { method: "POST", headers }, (res) => {
      res.once("data", () => resolve(req));
    });
    req.on("error", (error) => {
      // Destroying it later is expected.
      if ((error as NodeJS.ErrnoException).code !== "ECONNRESET") reject(error);
    });
    req.end(JSON.stringify(body));
  });
}

/** Starts a completion without waiting for anything; the promise settles with its status. */
function startRequest(server: RunningServer, headers: Record<string, string> = {}): { req: http.ClientRequest; status: Promise<number> } {
  const body = { messages: [{ role: "user", content: "Go on forever." }], max_tokens: 30000, ignore_eos: true, temperature: 0, stream: true };
  let req!: http.ClientRequest;
  const status = new Promise<number>((resolve) => {
    req = http.request(`${server.url}/v1/chat/completions`, { method: "POST", headers }, (res) => {
      resolve(res.statusCode!);
      res.resume();
    });
    req.on("error", () => resolve(0));
    req.end(JSON.stringify(body));
  });
  return { req, status };
}

async function scrape(server: RunningServer, headers: Record<string, string> = {}) {
  const response = await fetch(`${server.url}/metrics`, { headers });
  expect(response.status).toBe(200);
  const text = await response.text();
  const families = parsePrometheusTextFormat(text);
  const family = (name: string) => {
    const found = families.find((f) => f.name === `multimodal_lm_${name}`);
    if (!found) throw new Error(`no metric multimodal_lm_${name} in:\n${text}`);
    return found;
  };
  /** The value of a counter or gauge with exactly these labels (0 when that series does not exist yet). */
  const value = (name: string, labels: Record<string, string> = {}) => {
    const same = (a: Record<string, string>) => Object.keys(a).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => a[k] === v);
    const series = family(name).metrics.find((m) => same(m.labels ?? {}));
    return series === undefined ? 0 : Number(series.value);
  };
  return { response, text, families, family, value };
}

describe("GET /metrics", () => {
  it("is Prometheus text whose counters match the requests sent", async () => {
    const server = await serve();
    const before = lm.stats;
    const ask = (text: string, extra: Record<string, unknown> = {}) => ({ messages: [{ role: "user", content: text }], max_tokens: 6, temperature: 0, ...extra });
    const usages: Usage[] = [];
    // Three good requests (one streamed, one with an image) and one bad one.
    const first = await complete(server, ask("Say something."));
    expect(first.status).toBe(200);
    usages.push(first.json.usage!);
    usages.push(await completeStreaming(server, ask("Say something.")));
    const image = await complete(server, {
      ...ask(""),
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: PNG_URL } }, { type: "text", text: "What is this?" }] }],
    });
    expect(image.status).toBe(200);
    usages.push(image.json.usage!);
    const bad = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", body: "{not json" });
    expect(bad.status).toBe(400);

    const { response, family, value, families } = await scrape(server);
    expect(response.headers.get("content-type")).toBe(server.handler.metrics!.contentType);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const f of families) expect(f.help.length, f.name).toBeGreaterThan(10);

    expect(family("requests_total").type).toBe("COUNTER");
    expect(family("requests_total").metrics.map((m) => m.labels).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))).toEqual([
      { status: "200", code: "" },
      { status: "400", code: "E_INVALID_JSON" },
    ]);
    expect(value("requests_total", { status: "200", code: "" })).toBe(3);
    expect(value("requests_total", { status: "400", code: "E_INVALID_JSON" })).toBe(1);
    expect(value("prompt_tokens_total")).toBe(usages.reduce((sum, u) => sum + u.prompt_tokens, 0));
    expect(value("generation_tokens_total")).toBe(usages.reduce((sum, u) => sum + u.completion_tokens, 0));
    expect(value("generation_tokens_total")).toBeGreaterThan(0);

    for (const name of ["time_to_first_token_seconds", "request_duration_seconds"]) {
      const histogram = family(name);
      expect(histogram.type).toBe("HISTOGRAM");
      const [series] = histogram.metrics;
      expect(Number(series!.count), name).toBe(3);
      expect(Number(series!.sum), name).toBeGreaterThan(0);
      // (The object's own key order puts the integer bounds first; sort by the bound.)
      const bounds = Object.entries(series!.buckets!).map(([le, count]) => [le === "+Inf" ? Infinity : Number(le), Number(count)] as const);
      const counts = bounds.sort(([a], [b]) => a - b).map(([, count]) => count);
      // Cumulative buckets, ending with every observation in +Inf.
      expect(counts).toEqual([...counts].sort((a, b) => a - b));
      expect(series!.buckets!["+Inf"]).toBe("3");
    }
    // Time to first token is part of each request's duration.
    expect(Number(family("time_to_first_token_seconds").metrics[0]!.sum)).toBeLessThan(Number(family("request_duration_seconds").metrics[0]!.sum));

    // Nothing runs now; the slots are the model's.
    expect(family("slots").type).toBe("GAUGE");
    expect(value("slots")).toBe(slots());
    expect(value("slots_busy")).toBe(0);
    expect(value("requests_waiting")).toBe(0);

    // The caches' counters are the model's.
    const after = lm.stats;
    expect(value("image_cache_misses_total")).toBe(after.imageCache.misses);
    expect(value("image_cache_misses_total")).toBeGreaterThan(before.imageCache.misses);
    expect(value("image_cache_hits_total")).toBe(after.imageCache.hits);
    expect(value("image_cache_evictions_total")).toBe(after.imageCache.evictions);
    expect(value("image_cache_bytes")).toBe(after.imageCache.bytes);
    expect(value("image_cache_bytes")).toBeGreaterThan(0);
    expect(value("prompt_positions_evaluated_total")).toBe(after.prefix.evaluatedPositions);
    // The streamed request repeated the first one's prompt: its prefix came from the KV cache.
    expect(value("prompt_positions_reused_total")).toBe(after.prefix.reusedPositions);
    expect(value("prompt_positions_reused_total")).toBeGreaterThan(before.prefix.reusedPositions);

    // A scrape is no chat completion: the counters stay as they were.
    expect((await scrape(server)).value("requests_total", { status: "200", code: "" })).toBe(3);
    // HEAD answers the headers only.
    const head = await fetch(`${server.url}/metrics`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    const post = await fetch(`${server.url}/metrics`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET");
  });

  it("keeps each handler's counts in its own registry", async () => {
    const a = await serve();
    const b = await serve({ modelName: "other" });
    expect(a.handler.metrics).not.toBe(b.handler.metrics);
    expect((await complete(a, { messages: [{ role: "user", content: "Hi." }], max_tokens: 2 })).status).toBe(200);
    expect((await scrape(a)).value("requests_total", { status: "200", code: "" })).toBe(1);
    expect((await scrape(b)).value("requests_total", { status: "200", code: "" })).toBe(0);
    expect((await scrape(b)).value("prompt_tokens_total")).toBe(0);
  });

  it("needs the API key when one is set", async () => {
    const server = await serve({ apiKey: "sekret" });
    for (const headers of [{}, { authorization: "Bearer wrong" }] as Array<Record<string, string>>) {
      const response = await fetch(`${server.url}/metrics`, { headers });
      expect(response.status).toBe(401);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe("E_UNAUTHORIZED");
    }
    expect((await scrape(server, { authorization: "Bearer sekret" })).value("slots")).toBe(slots());
    // /health stays open.
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it("metrics: false answers 404 (or leaves /metrics to the app); a bad value is refused", async () => {
    const server = await serve({ metrics: false });
    expect(server.handler.metrics).toBeUndefined();
    const response = await fetch(`${server.url}/metrics`);
    expect(response.status).toBe(404);
    const body = (await response.json()) as { error: { code: string; type: string; message: string } };
    expect(body.error).toMatchObject({ code: "E_NOT_FOUND", type: "not_found_error" });
    expect(body.error.message).toBe("No endpoint GET /metrics. This server serves POST /v1/chat/completions, GET /v1/models, GET /health and the chat page at GET /.");
    // With metrics on, the 404 of an unknown path lists it.
    const on = await serve({ ui: false });
    expect(((await (await fetch(`${on.url}/nope`)).json()) as { error: { message: string } }).error.message).toBe(
      "No endpoint GET /nope. This server serves POST /v1/chat/completions, GET /v1/models, GET /health and GET /metrics.",
    );

    const app = express();
    const handler = createOpenAIHandler(lm, { metrics: false });
    app.use(handler);
    app.get("/metrics", (_req, res) => void res.send("the app's own metrics"));
    const listener = app.listen(0, "127.0.0.1");
    await new Promise((resolve) => listener.once("listening", resolve));
    try {
      const { port } = listener.address() as AddressInfo;
      expect(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).toBe("the app's own metrics");
    } finally {
      listener.close();
      await handler.close();
    }

    expect(() => createOpenAIHandler(lm, { metrics: "no" } as unknown as OpenAIHandlerOptions)).toThrow('Expected a boolean for metrics but received "no" of type string');
    await expect(checkServeOptions({ metrics: 0 } as unknown as ServeOptions)).rejects.toMatchObject({ code: "E_INVALID_ARGUMENT" });
  });
});

describe("slots and queue", () => {
  it("maxQueue counts only the requests waiting for a slot: slots + maxQueue run or wait, the next gets 429", async () => {
    const server = await serve({ maxQueue: 1 });
    const before = server.handler.stats;
    const n = slots();
    // Fill every slot with a generation that runs until its client goes away.
    const running = await Promise.all(Array.from({ length: n }, () => startEndlessStream(server)));
    // One more waits for a slot.
    const waiting = startRequest(server);
    await expect.poll(() => server.handler.stats.active, { timeout: 10_000 }).toBe(n + 1);
    await expect.poll(async () => (await scrape(server)).value("requests_waiting"), { timeout: 10_000 }).toBe(1);
    const { value } = await scrape(server);
    expect(value("slots_busy")).toBe(n);
    // The queue is full now.
    const refused = await complete(server, { messages: [{ role: "user", content: "Hi." }], max_tokens: 2 });
    expect(refused.status).toBe(429);
    expect(refused.json.error!.code).toBe("E_QUEUE_FULL");
    expect(server.handler.stats.rejected).toBe(before.rejected + 1);

    // Once the running ones go away, the waiting one gets a slot and streams.
    for (const req of running) req.destroy();
    expect(await waiting.status).toBe(200);
    waiting.req.destroy();
    await expect.poll(() => server.handler.stats.active, { timeout: 10_000 }).toBe(0);
    const after = await scrape(server);
    expect(after.value("requests_total", { status: "429", code: "E_QUEUE_FULL" })).toBe(1);
    // A stream whose client left: its status was already sent, its code says why it ended.
    expect(after.value("requests_total", { status: "200", code: "E_ABORTED" })).toBe(n + 1);
    expect(after.value("slots_busy")).toBe(0);
    expect(after.value("requests_waiting")).toBe(0);
    // Aborted requests add no tokens and no latency samples.
    expect(after.value("prompt_tokens_total")).toBe(0);
    expect(Number(after.family("time_to_first_token_seconds").metrics[0]!.count)).toBe(0);
  });

  it("the chat page's routes answer while a completion streams", async () => {
    const server = await serve({ apiKey: "k" });
    const auth = { authorization: "Bearer k" };
    const stream = await startEndlessStream(server, auth);
    try {
      // Each must answer well before the generation ends (it never does by itself).
      const quick = (url: string, headers: Record<string, string> = {}) => fetch(`${server.url}${url}`, { headers, signal: AbortSignal.timeout(5000) });
      const page = await quick("/");
      expect(page.status).toBe(200);
      expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
      expect(await page.text()).toContain("<title>multimodal-lm</title>");
      const models = await quick("/v1/models", auth);
      expect(models.status).toBe(200);
      expect(((await models.json()) as { data: Array<{ id: string }> }).data[0]!.id).toBe("qwen2vl-tiny");
      expect((await quick("/health")).status).toBe(200);
      const metrics = await quick("/metrics", auth);
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toContain("multimodal_lm_slots_busy");
      expect(server.handler.stats.active).toBe(1);
      expect((await scrape(server, auth)).value("slots_busy")).toBe(1);
    } finally {
      stream.destroy();
    }
    await expect.poll(() => server.handler.stats.active, { timeout: 10_000 }).toBe(0);
  });
});
