// llama.cpp's RPC backend: two `multimodal-lm rpc-server` workers on loopback take the tiny
// models' layers, with the same greedy output as a local run; systemInfo() lists their devices; a
// server that cannot be reached is a typed error before llama.cpp connects; and a worker lost in
// the middle of a request ends that request with E_ENGINE_CRASHED (ggml aborts the engine process
// when a connection drops), never the caller's process.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM, systemInfo } from "../src/index.js";
import { ensureTestModel, type TestModelFiles } from "../src/test-models/index.js";
import { freePort } from "./helpers/ports.js";
import { rejection } from "./helpers/rejection.js";

const CLI = path.join(import.meta.dirname, "..", "lib", "cli", "index.js");
const PNG = path.join(import.meta.dirname, "..", "assets", "sample.png");
const greedy = { temperature: 0, seed: 42, maxTokens: 16 } as const;

interface Worker {
  child: ChildProcess;
  endpoint: string;
  stderr: () => string;
}

async function startWorker(args: string[] = []): Promise<Worker> {
  const port = await freePort();
  const child = spawn(process.execPath, [CLI, "rpc-server", "--port", String(port), "--threads", "1", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdout!.resume();
  await new Promise<void>((resolve, reject) => {
    const check = setInterval(() => {
      if (/rpc-server serving this machine's CPU at /.test(stderr)) {
        clearInterval(check);
        resolve();
      }
    }, 20);
    child.once("exit", (code) => {
      clearInterval(check);
      reject(new Error(`rpc-server exited (${code}): ${stderr}`));
    });
  });
  return { child, endpoint: `127.0.0.1:${port}`, stderr: () => stderr };
}

async function stop(worker: Worker): Promise<void> {
  if (worker.child.exitCode !== null || worker.child.signalCode !== null) return;
  worker.child.kill("SIGTERM");
  await new Promise((resolve) => worker.child.once("exit", resolve));
}

let qwen: TestModelFiles;
let smol: TestModelFiles;
const workers: Worker[] = [];

beforeAll(async () => {
  [qwen, smol] = await Promise.all([ensureTestModel("qwen2vl-tiny"), ensureTestModel("smolvlm-tiny")]);
  workers.push(await startWorker(), await startWorker());
}, 60_000);
afterAll(async () => {
  for (const worker of workers) await stop(worker);
});

describe("a model split over two loopback rpc-servers", () => {
  it.each(["qwen2vl-tiny", "smolvlm-tiny"] as const)("%s gives the local greedy output, for text and an image", async (recipe) => {
    const files = recipe === "qwen2vl-tiny" ? qwen : smol;
    const expected: string[] = [];
    {
      await using local = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });
      expected.push((await local.generate({ prompt: "Tell me a story.", ...greedy })).text, await local.describeImage(PNG, greedy));
    }
    await using lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, rpc: workers.map((w) => w.endpoint) });
    // ggml aborts the process when an RPC connection drops, so rpc defaults to isolation: "process".
    expect(lm.engine.isolation).toBe("process");
    expect([(await lm.generate({ prompt: "Tell me a story.", ...greedy })).text, await lm.describeImage(PNG, greedy)]).toEqual(expected);
    // Both workers did work.
    for (const worker of workers) expect(worker.stderr()).not.toMatch(/error/i);
  }, 120_000);

  it("systemInfo() lists the RPC devices, one per server", () => {
    const rpc = systemInfo().devices.filter((d) => d.backend === "RPC");
    expect(rpc.map((d) => d.description).sort()).toEqual(workers.map((w) => w.endpoint).sort());
    for (const device of rpc) expect(device.memoryTotal).toBeGreaterThan(0);
  });

  it("a server that cannot be reached is E_MODEL_LOAD naming it, before llama.cpp connects", async () => {
    const closed = `127.0.0.1:${await freePort()}`;
    for (const isolation of ["none", "process"] as const) {
      const error = await rejection(MultimodalLM.load({ model: qwen.model, mmproj: qwen.mmproj, rpc: [workers[0]!.endpoint, closed], isolation }));
      expect(error).toMatchObject({ code: "E_MODEL_LOAD", param: "rpc[1]" });
      expect(error.message).toMatch(new RegExp(`The RPC server at ${closed} cannot be reached \\(ECONNREFUSED\\)\\. Start it on that machine with \`multimodal-lm rpc-server`));
    }
    expect((await rejection(MultimodalLM.load({ model: qwen.model, mmproj: qwen.mmproj, rpc: ["no-port"] }))).message).toMatch(/"host:port" endpoint.*for rpc\[0\] but received "no-port"/);
  });

  it("a worker lost mid-request ends that request with E_ENGINE_CRASHED; later calls say the server is gone", async () => {
    const extra = await startWorker();
    const lm = await MultimodalLM.load({ model: qwen.model, mmproj: qwen.mmproj, rpc: [workers[0]!.endpoint, extra.endpoint] });
    try {
      let pieces = 0;
      const stream = lm.generateStream({ prompt: "Go on", maxTokens: 100_000, ignoreEos: true });
      const drained = (async () => {
        for await (const _ of stream) if (++pieces === 3) extra.child.kill("SIGKILL");
      })();
      const error = await rejection(stream.result);
      await drained.catch(() => {});
      expect(error.code).toBe("E_ENGINE_CRASHED");
      expect(error.message).toMatch(/killed by SIGABRT while running this request/);
      expect((error as unknown as { logTail: string[] }).logTail.join("\n")).toMatch(/Remote RPC server crashed or returned malformed response/);
      // The supervisor does not restart onto a server that is gone: it says so.
      for (let i = 0; i < 100 && lm.engine.state === "restarting"; i++) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(lm.engine.state).toBe("failed");
      const after = await rejection(lm.generate({ prompt: "Hi", maxTokens: 1 }));
      expect(after.code).toBe("E_ENGINE_CRASHED");
      expect(after.message).toMatch(new RegExp(`cannot be restarted: The RPC server at ${extra.endpoint} cannot be reached`));
    } finally {
      await lm.dispose();
      await stop(extra);
    }
  }, 60_000);
});

describe("multimodal-lm --rpc and rpc-server", () => {
  it("--rpc on describe loads over the workers (same output as local); an unreachable one is one line naming it", async () => {
    const local = spawnSync(process.execPath, [CLI, "describe", PNG, "-m", qwen.model, "--temperature", "0", "-n", "8"], { encoding: "utf8", timeout: 60_000 });
    expect(local.status, local.stderr).toBe(0);
    const remote = spawnSync(process.execPath, [CLI, "describe", PNG, "-m", qwen.model, "--temperature", "0", "-n", "8", "--rpc", workers.map((w) => w.endpoint).join(",")], {
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(remote.status, remote.stderr).toBe(0);
    expect(remote.stdout).toBe(local.stdout);
    const closed = `127.0.0.1:${await freePort()}`;
    const refused = spawnSync(process.execPath, [CLI, "describe", PNG, "-m", qwen.model, "--rpc", closed], { encoding: "utf8", timeout: 60_000 });
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    expect(refused.stderr).toMatch(new RegExp(`The RPC server at ${closed} cannot be reached`));
  }, 120_000);

  it("--cache keeps tensors in $XDG_CACHE_HOME/multimodal-lm/rpc", async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-rpc-cache-"));
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, "rpc-server", "--port", String(port), "--cache"], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, XDG_CACHE_HOME: home } });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
    try {
      for (let i = 0; i < 100 && !/local cache/.test(out); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      const dir = path.join(home, "multimodal-lm", "rpc");
      expect(fs.statSync(dir).isDirectory()).toBe(true);
      expect(out).toContain(`local cache    : ${dir}`);
    } finally {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
      fs.rmSync(home, { recursive: true, force: true });
    }
  }, 30_000);
});

describe("multimodal-lm rpc-server", () => {
  it("warns loudly beyond loopback (no authentication), and refuses a port in use", async () => {
    const open = await startWorker(["--host", "0.0.0.0"]);
    try {
      expect(open.stderr()).toMatch(/^WARNING: listening on 0\.0\.0\.0: llama\.cpp's RPC protocol has no authentication/m);
    } finally {
      await stop(open);
    }
    const port = workers[0]!.endpoint.split(":")[1]!;
    const busy = spawnSync(process.execPath, [CLI, "rpc-server", "--port", port], { encoding: "utf8", timeout: 30_000 });
    expect(busy.status).toBe(1);
    expect(busy.stderr).toMatch(new RegExp(`Port ${port} on 127\\.0\\.0\\.1 is already in use\\. Pick another with --port\\.`));
  }, 60_000);
});
