// The server's security defaults, end to end over HTTP: local media only inside the allowed
// directory, remote media only from allowed domains and never from private addresses, API keys,
// body limits, a bounded queue, and a client disconnect aborting its generation.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM, startServer, type RequestLog, type RunningServer, type ServeOptions } from "../src/index.js";
import { ensureTestModel } from "../src/test-models/index.js";
import { fakeDns, startMediaServer, type MediaServer } from "./helpers/server.js";

const root = path.resolve(import.meta.dirname, "..");
let tmp: string;
let mediaDir: string;
let lm: MultimodalLM;
let exempt: MediaServer; // 127.0.0.2, allowed through allowedPrivateNetworks
let blocked: MediaServer; // 127.0.0.1: must never be asked for anything
const servers: RunningServer[] = [];
const logs: RequestLog[] = [];

async function serve(options: ServeOptions): Promise<RunningServer> {
  const server = await startServer(lm, { port: 0, onRequest: (log) => logs.push({ ...log }), ...options });
  servers.push(server);
  return server;
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-server-security-"));
  mediaDir = path.join(tmp, "media");
  fs.mkdirSync(mediaDir);
  fs.mkdirSync(path.join(tmp, "media-evil"));
  const png = fs.readFileSync(path.join(root, "assets", "sample.png"));
  fs.writeFileSync(path.join(mediaDir, "image.png"), png);
  fs.writeFileSync(path.join(tmp, "secret.png"), png);
  fs.writeFileSync(path.join(tmp, "media-evil", "secret.png"), png);
  fs.symlinkSync(path.join(tmp, "secret.png"), path.join(mediaDir, "escape.png"));
  fs.symlinkSync(path.join(mediaDir, "image.png"), path.join(mediaDir, "inside.png"));
  execFileSync("mkfifo", [path.join(mediaDir, "pipe.png")]);
  const files = await ensureTestModel("qwen2vl-tiny");
  // A large context, so an unbounded generation runs long enough to be cut by a disconnect.
  lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, contextSize: 32768 });
  exempt = await startMediaServer(mediaDir, "127.0.0.2");
  blocked = await startMediaServer(mediaDir, "127.0.0.1");
}, 600_000);

afterAll(async () => {
  for (const server of servers) await server.close();
  await exempt?.close();
  await blocked?.close();
  await lm?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const imageRequest = (url: string) => ({
  model: "default",
  messages: [{ role: "user", content: [{ type: "image_url", image_url: { url } }, { type: "text", text: "Describe this image." }] }],
  max_tokens: 2,
});

async function post(server: RunningServer, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", headers, body: JSON.stringify(body) });
  const json = (await response.json()) as { error?: { message: string; code: string; type: string; param: string | null }; choices?: unknown[] };
  return { status: response.status, json };
}

describe("local media", () => {
  let server: RunningServer;
  let closed: RunningServer;
  beforeAll(async () => {
    server = await serve({ allowedLocalMediaPath: mediaDir });
    closed = await serve({});
  });

  it("a file inside the allowed directory (a path, a relative path, a file:// URL, a symlink that stays inside) is read", async () => {
    for (const url of [path.join(mediaDir, "image.png"), "image.png", pathToFileURL(path.join(mediaDir, "image.png")).href, "inside.png"]) {
      const r = await post(server, imageRequest(url));
      expect(r.status, url).toBe(200);
    }
  });

  it.each([
    ["../ in a path", () => `${mediaDir}/../secret.png`],
    ["../ relative to the directory", () => "../secret.png"],
    ["../ in a file:// URL", () => `file://${mediaDir}/../secret.png`],
    ["%2e%2e in a file:// URL", () => `file://${mediaDir}/%2e%2e/secret.png`],
    ["%2E%2E in a file:// URL", () => `file://${mediaDir}/%2E%2E/secret.png`],
    ["an absolute path outside", () => path.join(tmp, "secret.png")],
    ["a sibling directory sharing the prefix", () => path.join(tmp, "media-evil", "secret.png")],
    ["a symlink escaping the directory", () => path.join(mediaDir, "escape.png")],
    ["a FIFO", () => path.join(mediaDir, "pipe.png")],
    ["the directory itself", () => mediaDir],
  ])("refuses %s with 400 E_MEDIA_NOT_ALLOWED", async (_, url) => {
    const r = await post(server, imageRequest(url()));
    expect(r.status).toBe(400);
    expect(r.json.error!.code).toBe("E_MEDIA_NOT_ALLOWED");
    expect(r.json.error!.param).toBe("messages[0].content[0].image_url");
  });

  it("%2e%2e in a plain path is a file name, not a way out", async () => {
    const r = await post(server, imageRequest(`${mediaDir}/%2e%2e/secret.png`));
    expect(r.status).toBe(400);
    expect(r.json.error!.code).toBe("E_FILE_NOT_FOUND");
  });

  it("refuses every local file when no directory is allowed, and says which flag allows it", async () => {
    for (const url of [pathToFileURL(path.join(mediaDir, "image.png")).href, path.join(mediaDir, "image.png"), "image.png"]) {
      const r = await post(closed, imageRequest(url));
      expect(r.status).toBe(400);
      expect(r.json.error!.code).toBe("E_MEDIA_NOT_ALLOWED");
      expect(r.json.error!.message).toMatch(/--allowed-local-media-path/);
    }
  });
});

describe("remote media", () => {
  let listed: RunningServer;
  let open: RunningServer;
  let MEDIA: string;
  const lookup = fakeDns({ "media.test": "127.0.0.2", "evil.test": "127.0.0.1" });
  beforeAll(async () => {
    listed = await serve({ allowedMediaDomains: ["media.test"], allowedPrivateNetworks: ["127.0.0.2"], lookup });
    open = await serve({ allowAllMediaDomains: true, allowedPrivateNetworks: ["127.0.0.2"], lookup });
    MEDIA = `http://media.test:${exempt.port}`;
  });

  it("fetches from an allowed domain", async () => {
    expect((await post(listed, imageRequest(`${MEDIA}/image.png`))).status).toBe(200);
    expect((await post(open, imageRequest(`${MEDIA}/image.png`))).status).toBe(200);
  });

  it("refuses remote URLs by default, naming the flags", async () => {
    const server = await serve({});
    const r = await post(server, imageRequest(`${MEDIA}/image.png`));
    expect(r.status).toBe(400);
    expect(r.json.error!.code).toBe("E_MEDIA_NOT_ALLOWED");
    expect(r.json.error!.message).toMatch(/--allowed-media-domains/);
  });

  it.each([
    ["a domain not on the list", "listed", () => `http://other.test:${exempt.port}/image.png`],
    ["a redirect to 127.0.0.1", "open", () => `${MEDIA}/redirect?to=${encodeURIComponent(`http://127.0.0.1:${blocked.port}/image.png`)}`],
    ["a redirect to a domain not on the list", "listed", () => `${MEDIA}/redirect?to=${encodeURIComponent(`http://evil.test:${blocked.port}/image.png`)}`],
    ["a name that resolves to 127.0.0.1", "open", () => `http://evil.test:${blocked.port}/image.png`],
    ["localhost", "open", () => `http://localhost:${blocked.port}/image.png`],
    ["127.0.0.1 written as an address", "open", () => `http://127.0.0.1:${blocked.port}/image.png`],
    ["[::1]", "open", () => `http://[::1]:${blocked.port}/image.png`],
    ["http://127.0.0.1:port\\@allowed (listed domains)", "listed", () => `http://127.0.0.1:${blocked.port}\\@media.test/image.png`],
    ["http://127.0.0.1:port\\@allowed (any domain)", "open", () => `http://127.0.0.1:${blocked.port}\\@media.test/image.png`],
  ])("refuses %s", async (_, which, url) => {
    const r = await post(which === "open" ? open : listed, imageRequest(url()));
    expect(r.status).toBe(400);
    expect(r.json.error!.code).toBe("E_MEDIA_NOT_ALLOWED");
    expect(blocked.requests).toEqual([]);
  });
});

describe("API key, body limit, queue", () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await serve({ apiKey: "sekret-key", maxBodyBytes: 1024 * 1024, maxQueue: 0, allowedLocalMediaPath: mediaDir });
  });
  const auth = { authorization: "Bearer sekret-key" };

  it("refuses a missing or wrong key with 401, accepts the right one, and leaves /health open", async () => {
    for (const headers of [{}, { authorization: "Bearer wrong" }, { authorization: "Bearer sekret-key-and-more" }, { authorization: "sekret-key" }] as Array<Record<string, string>>) {
      const r = await post(server, imageRequest("image.png"), headers);
      expect(r.status).toBe(401);
      expect(r.json.error!.code).toBe("E_UNAUTHORIZED");
      expect(r.json.error!.type).toBe("authentication_error");
    }
    expect((await fetch(`${server.url}/v1/models`)).status).toBe(401);
    expect((await post(server, imageRequest("image.png"), auth)).status).toBe(200);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "wrong", maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    const right = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "sekret-key", maxRetries: 0 });
    expect((await right.models.list()).data[0]!.id).toBe("qwen2vl-tiny");
  });

  it("answers a body over the limit with 413, with or without Content-Length", async () => {
    const big = imageRequest(`data:image/png;base64,${Buffer.alloc(2 * 1024 * 1024).toString("base64")}`);
    const r = await post(server, big, auth);
    expect(r.status).toBe(413);
    expect(r.json.error!.code).toBe("E_BODY_TOO_LARGE");
    const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(`${server.url}/v1/chat/completions`, { method: "POST", headers: { ...auth, "transfer-encoding": "chunked" } }, (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode!, body }));
      });
      req.on("error", reject);
      const piece = Buffer.alloc(64 * 1024, "a");
      for (let i = 0; i < 24; i++) req.write(piece);
      req.end();
    });
    expect(chunked.status).toBe(413);
    expect(JSON.parse(chunked.body).error.code).toBe("E_BODY_TOO_LARGE");
    expect((await post(server, imageRequest("image.png"), auth)).status).toBe(200);
  });

  it("answers 429 when every slot is busy and the queue (maxQueue 0) is full, and a disconnect during streaming aborts the generation", async () => {
    const before = server.handler.stats;
    const long = { model: "default", messages: [{ role: "user", content: "Go on forever." }], max_tokens: 30000, ignore_eos: true, temperature: 0, stream: true };
    // Each streams until its client goes away: the first chunk proves it is generating. One per
    // slot: maxQueue counts only the requests waiting beyond them.
    const slots = lm.stats.slots?.total ?? 1;
    const streams = await Promise.all(
      Array.from(
        { length: slots },
        () =>
          new Promise<http.ClientRequest>((resolve, reject) => {
            const req = http.request(`${server.url}/v1/chat/completions`, { method: "POST", headers: auth }, (res) => {
              res.once("data", () => resolve(req));
            });
            req.on("error", reject);
            req.end(JSON.stringify(long));
          }),
      ),
    );
    const busy = await post(server, imageRequest("image.png"), auth);
    expect(busy.status).toBe(429);
    expect(busy.json.error!.code).toBe("E_QUEUE_FULL");
    expect(busy.json.error!.message).toMatch(/^The server is busy: \d+ requests are running or waiting \(\d+ slots?, and a queue of 0\)/);
    expect(server.handler.stats.rejected).toBe(before.rejected + 1);

    for (const stream of streams) stream.destroy();
    await expect.poll(() => server.handler.stats.active, { timeout: 10_000 }).toBe(0);
    const after = server.handler.stats;
    expect(after.aborted).toBe(before.aborted + slots);
    expect(after.completed).toBe(before.completed);
    const log = logs.find((l) => l.aborted);
    expect(log).toMatchObject({ path: "/v1/chat/completions", aborted: true, code: "E_ABORTED", stream: true });
    // The engine is free again at once.
    expect((await post(server, imageRequest("image.png"), auth)).status).toBe(200);
  });
});
