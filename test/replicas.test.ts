// Two `multimodal-lm serve` replicas behind HAProxy (Debian's package), with deploy/haproxy.cfg as
// shipped: a conversation keyed by X-Conversation-Id comes back to the replica that holds its KV
// cache (the second turn reports cached tokens), and when that replica dies the balancer sends the
// conversation to the other one without the client seeing an error.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ensureTestModel, type TestModelFiles } from "../src/test-models/index.js";
import { freePort } from "./helpers/ports.js";

const root = path.resolve(import.meta.dirname, "..");
const CLI = path.join(root, "lib", "cli", "index.js");
const CONFIG = path.join(root, "deploy", "haproxy.cfg");

interface Replica {
  child: ChildProcess;
  url: string;
  log: () => string;
}

let qwen: TestModelFiles;
const replicas: Replica[] = [];
let balancer: ChildProcess | undefined;
let balancerLog = "";
let url: string;

function startReplica(): Promise<Replica> {
  const child = spawn(process.execPath, [CLI, "serve", qwen.model, "--port", "0", "--parallel", "2"], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      const m = /serving \S+ at (http:\/\/\S+)\/v1/.exec(stdout);
      if (m) resolve({ child, url: m[1]!, log: () => stderr });
    });
    child.once("exit", (code) => reject(new Error(`a replica exited early (${code}): ${stderr}`)));
  });
}

async function healthy(target: string, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      if ((await fetch(`${target}/health`)).status === 200) return true;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

interface Completion {
  status: number;
  content: string;
  cached: number;
}

async function chat(conversation: string, messages: unknown[]): Promise<Completion> {
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-conversation-id": conversation },
    body: JSON.stringify({ messages, temperature: 0, max_tokens: 12 }),
  });
  const body = (await r.json()) as { choices?: Array<{ message: { content: string } }>; usage?: { prompt_tokens_details?: { cached_tokens: number } } };
  return { status: r.status, content: body.choices?.[0]?.message.content ?? "", cached: body.usage?.prompt_tokens_details?.cached_tokens ?? -1 };
}

const counts = () => replicas.map((r) => (r.log().match(/^POST \/v1\/chat\/completions 200/gm) ?? []).length);

/** The replica whose access log has one more completion than `before` counted (the line follows the response closely). */
async function servedBy(before: number[]): Promise<number> {
  let changed: number[] = [];
  for (let i = 0; i < 100; i++) {
    changed = counts().map((n, k) => n - before[k]!);
    if (changed.reduce((a, b) => a + b, 0) > 0) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  expect(changed.reduce((a, b) => a + b, 0)).toBe(1);
  return changed.indexOf(1);
}

// Skipped without HAProxy, except under CI (where .ci/run installs it), as the browser test does without Chromium.
const hasHaproxy = spawnSync("haproxy", ["-v"]).status === 0;
if (!hasHaproxy && process.env.CI) throw new Error("The replica test needs HAProxy on PATH (Debian/Ubuntu: apt-get install haproxy).");

beforeAll(async () => {
  if (!hasHaproxy) return;
  qwen = await ensureTestModel("qwen2vl-tiny");
  replicas.push(...(await Promise.all([startReplica(), startReplica()])));
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  balancer = spawn("haproxy", ["-db", "-f", CONFIG], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, LISTEN: `127.0.0.1:${port}`, REPLICA_1: new URL(replicas[0]!.url).host, REPLICA_2: new URL(replicas[1]!.url).host },
  });
  balancer.stdout!.setEncoding("utf8").on("data", (d: string) => (balancerLog += d));
  balancer.stderr!.setEncoding("utf8").on("data", (d: string) => (balancerLog += d));
  if (!(await healthy(url, 15_000))) throw new Error(`HAProxy did not come up: ${balancerLog}`);
  // Both replicas pass HAProxy's health check (rise 2, every 500 ms) before the test starts.
  await new Promise((resolve) => setTimeout(resolve, 1500));
}, 120_000);

afterAll(async () => {
  for (const child of [balancer, ...replicas.map((r) => r.child)]) {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
    }
  }
});

describe.skipIf(!hasHaproxy)("replicas behind HAProxy, routed by conversation", () => {
  it("sends every turn of a conversation to the same replica (its second turn comes from the KV cache), and fails over when that replica dies", async () => {
    // Several conversations: each stays on its replica, and both replicas get some.
    const homes = new Map<string, number>();
    for (let i = 0; i < 8; i++) {
      const id = `conversation-${i}`;
      const first = [{ role: "user", content: `Hello, this is conversation ${i}. Tell me something.` }];
      const before = counts();
      const turn1 = await chat(id, first);
      expect(turn1.status).toBe(200);
      const home = await servedBy(before);
      homes.set(id, home);
      const again = counts();
      const turn2 = await chat(id, [...first, { role: "assistant", content: turn1.content }, { role: "user", content: "And then?" }]);
      expect(turn2.status).toBe(200);
      expect(await servedBy(again), id).toBe(home);
      // The whole first turn was reused from that replica's KV cache.
      expect(turn2.cached, id).toBeGreaterThan(0);
    }
    expect(new Set(homes.values()).size).toBe(2);

    // The replica holding conversation-0 dies; its next turn is answered by the other one.
    const lost = homes.get("conversation-0")!;
    replicas[lost]!.child.kill("SIGKILL");
    await new Promise((resolve) => replicas[lost]!.child.once("exit", resolve));
    const survivor = 1 - lost;
    const before = counts();
    const after = await chat("conversation-0", [{ role: "user", content: "Hello, this is conversation 0. Tell me something." }]);
    expect(after.status, balancerLog).toBe(200);
    expect(await servedBy(before)).toBe(survivor);
    // Conversations of the survivor are still where they were, with their caches.
    const kept = [...homes].find(([, home]) => home === survivor)![0];
    const i = Number(kept.split("-")[1]);
    const first = [{ role: "user", content: `Hello, this is conversation ${i}. Tell me something.` }];
    const turn1 = await chat(kept, first);
    const turn2 = await chat(kept, [...first, { role: "assistant", content: turn1.content }, { role: "user", content: "And then?" }]);
    expect(turn2.status).toBe(200);
    expect(turn2.cached).toBeGreaterThan(0);
  }, 120_000);
});
