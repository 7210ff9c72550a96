// The server over an isolated engine: a request that crashes llama.cpp gets 503 with Retry-After,
// /health says "restarting" until the engine is back, /metrics counts crashes and restarts, and
// the server process never goes down. `multimodal-lm serve` isolates by default and leaves no
// engine process behind when it is stopped.
import { spawn, spawnSync } from "node:child_process";
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
    const cli = path.join(import.meta.dirname, "..", "lib", "cli", "index.js");
    for (const [args, signal, isolated] of [
      [[], "SIGTERM", true],
      [[], "SIGINT", true],
      [["--isolation", "none"], "SIGTERM", false],
    ] as const) {
      const child = spawn(process.execPath, [cli, "serve", qwen.model, "--port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      await new Promise<void>((resolve, reject) => {
        child.stdout.setEncoding("utf8").on("data", (d: string) => {
          stdout += d;
          if (/serving .* at http/.test(stdout)) resolve();
        });
        child.once("exit", (code) => reject(new Error(`serve exited early (${code})`)));
      });
      const engines = spawnSync("ps", ["-o", "pid=", "--ppid", String(child.pid)], { encoding: "utf8" })
        .stdout.split("\n")
        .map((l) => Number(l.trim()))
        .filter((pid) => pid > 0);
      expect(engines.length, args.join(" ")).toBe(isolated ? 1 : 0);
      child.kill(signal);
      const code = await new Promise((resolve) => child.once("exit", resolve));
      expect(code).toBe(0);
      for (const pid of engines) {
        const gone = spawnSync("ps", ["-o", "stat=", "-p", String(pid)], { encoding: "utf8" }).stdout.trim();
        expect(gone === "" || gone.startsWith("Z"), `engine ${pid} after ${signal}`).toBe(true);
      }
    }
  }, 120_000);

  it("rejects a bad --isolation before loading", () => {
    const cli = path.join(import.meta.dirname, "..", "lib", "cli", "index.js");
    const r = spawnSync(process.execPath, [cli, "serve", qwen.model, "--isolation", "thread"], { encoding: "utf8" });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--isolation.*thread.*process, none|Allowed choices are process, none/);
  });
});
