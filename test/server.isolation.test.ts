// The server over an isolated engine: a request that crashes llama.cpp gets 503 with Retry-After,
// /health says "restarting" until the engine is back, /metrics counts crashes and restarts, and
// the server process never goes down. `multimodal-lm serve` isolates by default and leaves no
// engine process behind when it is stopped.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM } from "../src/index.js";
import { startServer, type RunningServer } from "../src/server/serve.js";
import { ensureTestModel, type TestModelFiles } from "../src/test-models/index.js";
import { DEEP_TEMPLATE, POISON } from "./helpers/isolation.js";

let qwen: TestModelFiles;
beforeAll(async () => {
  qwen = await ensureTestModel("qwen2vl-tiny");
});

const CLI = path.join(import.meta.dirname, "..", "lib", "cli", "index.js");

interface Served {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  /** The engine processes serve started (its children). */
  engines: () => number[];
}

/** Starts `multimodal-lm serve` on the tiny model and waits for its "serving" line. */
async function startServe(args: string[], options: { detached?: boolean } = {}): Promise<Served> {
  const child = spawn(process.execPath, [CLI, "serve", qwen.model, "--port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"], detached: options.detached ?? false });
  let stdout = "";
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      const m = /serving .* at (http:\/\/\S+)\/v1/.exec(stdout);
      if (m) resolve(m[1]!);
    });
    child.once("exit", (code) => reject(new Error(`serve exited early (${code}): ${stderr}`)));
  });
  const engines = () =>
    spawnSync("ps", ["-o", "pid=", "--ppid", String(child.pid)], { encoding: "utf8" })
      .stdout.split("\n")
      .map((l) => Number(l.trim()))
      .filter((pid) => pid > 0);
  return { child, url, stderr: () => stderr, engines };
}

function gone(pid: number): boolean {
  const stat = spawnSync("ps", ["-o", "stat=", "-p", String(pid)], { encoding: "utf8" }).stdout.trim();
  return stat === "" || stat.startsWith("Z");
}

function post(url: string, content: string, maxTokens = 4): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content }], temperature: 0, max_tokens: maxTokens }),
  });
}

describe("a server on an isolated engine", () => {
  let lm: MultimodalLM;
  let server: RunningServer;
  beforeAll(async () => {
    lm = await MultimodalLM.load({ model: qwen.model, mmproj: qwen.mmproj, chatTemplate: DEEP_TEMPLATE, isolation: "process" });
    server = await startServer(lm, { port: 0 });
  });
  afterAll(async () => {
    await server?.close();
    await lm?.dispose();
  });

  it("answers a crash with 503 and Retry-After, reports restarting, counts it, and serves again", async () => {
    const before = await post(server.url, "Hello there.");
    expect(before.status).toBe(200);
    const expected = ((await before.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content;

    const crashed = await post(server.url, POISON);
    expect(crashed.status).toBe(503);
    expect(crashed.headers.get("retry-after")).toBe("2");
    const body = (await crashed.json()) as { error: { code: string; type: string; message: string } };
    expect(body.error).toMatchObject({ code: "E_ENGINE_CRASHED", type: "service_unavailable_error" });
    expect(body.error.message).toMatch(/SIGSEGV/);

    // Right after the crash the engine is coming back.
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: "restarting" });
    expect(health.headers.get("retry-after")).toBe("2");
    // A request sent meanwhile waits for it.
    const meanwhile = post(server.url, "Hello there.");
    let ok = false;
    for (let i = 0; i < 200 && !ok; i++) {
      ok = (await fetch(`${server.url}/health`)).status === 200;
      if (!ok) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(ok).toBe(true);
    const after = await meanwhile;
    expect(after.status).toBe(200);
    expect(((await after.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content).toBe(expected);

    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toContain("multimodal_lm_engine_crashes_total 1\n");
    expect(metrics).toContain("multimodal_lm_engine_restarts_total 1\n");
    expect(metrics).toContain("multimodal_lm_engine_up 1\n");
    expect(metrics).toContain('multimodal_lm_requests_total{status="503",code="E_ENGINE_CRASHED"} 1\n');
  }, 60_000);
});

describe("multimodal-lm serve", () => {
  it("runs the engine in a child process by default (--isolation none opts out) and leaves none behind on SIGTERM or SIGINT", async () => {
    for (const [args, signal, isolated] of [
      [[], "SIGTERM", true],
      [[], "SIGINT", true],
      [["--isolation", "none"], "SIGTERM", false],
    ] as const) {
      const served = await startServe([...args]);
      const engines = served.engines();
      expect(engines.length, args.join(" ")).toBe(isolated ? 1 : 0);
      served.child.kill(signal);
      const code = await new Promise((resolve) => served.child.once("exit", resolve));
      expect(code).toBe(0);
      for (const pid of engines) expect(gone(pid), `engine ${pid} after ${signal}`).toBe(true);
    }
  }, 120_000);

  it("Ctrl-C in a terminal (SIGINT to the whole process group) shuts down cleanly: no crash, no engine left", async () => {
    // detached: serve leads its own process group, as a shell's foreground job does.
    const served = await startServe([], { detached: true });
    const engines = served.engines();
    expect(engines).toHaveLength(1);
    process.kill(-served.child.pid!, "SIGINT");
    const code = await new Promise((resolve) => served.child.once("exit", resolve));
    expect(code).toBe(0);
    expect(served.stderr()).not.toMatch(/E_ENGINE_CRASHED|killed by/);
    expect(gone(engines[0]!)).toBe(true);
  }, 60_000);

  it("logs the engine's crash and its return on stderr", async () => {
    const template = path.join(os.tmpdir(), `mmlm-deep-${process.pid}.jinja`);
    fs.writeFileSync(template, DEEP_TEMPLATE);
    const served = await startServe(["--chat-template-file", template]);
    try {
      expect((await post(served.url, POISON)).status).toBe(503);
      for (let i = 0; i < 200 && !/serving again/.test(served.stderr()); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(served.stderr()).toMatch(/^multimodal-lm: the engine process was killed by SIGSEGV; 1 running request\(s\) failed, 0 waiting; restarting it$/m);
      expect(served.stderr()).toMatch(/^multimodal-lm: the engine is serving again \(\d+ ms after the crash\)$/m);
      expect(served.stderr()).toMatch(/^POST \/v1\/chat\/completions 503 \d+ms E_ENGINE_CRASHED$/m);
      expect((await post(served.url, "Hello there.")).status).toBe(200);
    } finally {
      served.child.kill("SIGTERM");
      await new Promise((resolve) => served.child.once("exit", resolve));
      fs.rmSync(template, { force: true });
    }
  }, 60_000);

  it("rejects a bad --isolation before loading", () => {
    const r = spawnSync(process.execPath, [CLI, "serve", qwen.model, "--isolation", "thread"], { encoding: "utf8" });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--isolation.*thread.*process, none|Allowed choices are process, none/);
  });
});
