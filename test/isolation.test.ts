// isolation: "process" under real crashes of the pinned llama.cpp. The crash used is in its Jinja
// engine: a chat template with a legal, bounded recursion (one level per character of a message)
// overflows the native stack when a message is long enough, a SIGSEGV that no check on the model
// file can see coming (the template is valid and works for every normal message). Another
// template recurses whenever the real BOS token is set, so it loads (llama.cpp's capability probe
// renders with an empty one) and then crashes on every request.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM, type ChatMessage, type CrashEvent, type RestartEvent } from "../src/index.js";
import { ensureTestModel, type TestModelFiles } from "../src/test-models/index.js";
import { ALWAYS_TEMPLATE, DEEP_TEMPLATE, LOAD_CRASH_TEMPLATE, POISON } from "./helpers/isolation.js";
import { rejection } from "./helpers/rejection.js";

let qwen: TestModelFiles;
let tmp: string;

/** Whether a process with this pid is alive (and not a zombie). */
function alive(pid: number): boolean {
  const r = spawnSync("ps", ["-o", "stat=", "-p", String(pid)], { encoding: "utf8" });
  return r.status === 0 && r.stdout.trim() !== "" && !r.stdout.trim().startsWith("Z");
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return check();
}

beforeAll(async () => {
  qwen = await ensureTestModel("qwen2vl-tiny");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-isolation-"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("a crash while 8 requests are in flight", () => {
  it("fails the running ones with E_ENGINE_CRASHED, runs the waiting ones on the restarted engine with their normal output", async () => {
    const options = { model: qwen.model, mmproj: qwen.mmproj, chatTemplate: DEEP_TEMPLATE, parallel: 4, flashAttention: false, contextSize: 1024 } as const;
    const request = (i: number) => ({
      messages: [{ role: "user", content: `Tell me about the number ${i}.` }] as ChatMessage[],
      temperature: 0,
      maxTokens: 300,
      ignoreEos: true,
    });
    // The normal outputs, in process.
    const expected: string[] = [];
    {
      await using reference = await MultimodalLM.load({ ...options, isolation: "none" });
      for (let i = 0; i < 7; i++) expected.push((await reference.chat(request(i))).text);
    }

    await using lm = await MultimodalLM.load({ ...options, isolation: "process" });
    const crashes: CrashEvent[] = [];
    const restarts: RestartEvent[] = [];
    lm.on("crash", (crash) => crashes.push(crash));
    lm.on("restart", (restart) => restarts.push(restart));
    const firstPid = lm.engine.pid!;

    // 7 requests: 4 take the slots, 3 wait for one. Once the 4 are generating, the poisoned one arrives.
    const started = new Set<number>();
    const streams = Array.from({ length: 7 }, (_, i) => {
      const stream = lm.chatStream(request(i));
      void (async () => {
        try {
          for await (const _ of stream) started.add(i);
        } catch {
          // settled below
        }
      })();
      return stream;
    });
    expect(await waitFor(() => started.size === 4, 30_000)).toBe(true);
    expect(lm.stats.queued).toBe(3);
    const running = [...started];
    const poisoned = lm.chat({ messages: [{ role: "user", content: POISON }], maxTokens: 1 });
    const results = await Promise.allSettled([...streams.map((s) => s.result), poisoned]);
    const crashedAt = Date.now();

    expect(running).toHaveLength(4);
    for (const [i, result] of results.entries()) {
      if (i < 7 && !running.includes(i)) {
        // Waiting when the engine died: run afterwards, with the output they would have had.
        expect(result.status, `request ${i}`).toBe("fulfilled");
        expect((result as PromiseFulfilledResult<{ text: string }>).value.text, `request ${i}`).toBe(expected[i]);
        continue;
      }
      expect(result.status, `request ${i}`).toBe("rejected");
      const error = (result as PromiseRejectedResult).reason as { code: string; signal: string | null; exitCode: number | null; logTail: string[]; message: string };
      expect(error.code, `request ${i}`).toBe("E_ENGINE_CRASHED");
      expect(error.signal).toBe("SIGSEGV");
      expect(error.message).toMatch(/killed by SIGSEGV while running this request/);
      expect(Array.isArray(error.logTail)).toBe(true);
    }
    expect(crashes).toHaveLength(1);
    expect(crashes[0]).toMatchObject({ signal: "SIGSEGV", failedRequests: 5, waitingRequests: 3, willRestart: true, recentCrashes: 1 });
    expect(restarts).toHaveLength(1);
    // Serving again well within 10 s (the SmolVLM-256M-shape figure is in the bench).
    expect(restarts[0]!.downtimeMs).toBeLessThan(10_000);
    expect(lm.engine).toMatchObject({ isolation: "process", state: "ready" });
    expect(lm.engine.pid).not.toBe(firstPid);
    expect(alive(firstPid)).toBe(false);
    expect(crashedAt).toBeGreaterThan(0);
    // And it keeps serving.
    expect((await lm.chat(request(0))).text).toBe(expected[0]);
  }, 120_000);
});

describe("a model that crashes on every request", () => {
  it("stops restarting after maxRestarts crashes in the window, and says why", async () => {
    await using lm = await MultimodalLM.load({
      model: qwen.model,
      mmproj: qwen.mmproj,
      chatTemplate: ALWAYS_TEMPLATE,
      isolation: "process",
      supervisor: { maxRestarts: 2, backoffMs: 10 },
    });
    const crashes: CrashEvent[] = [];
    lm.on("crash", (crash) => crashes.push(crash));
    for (let i = 0; i < 3; i++) {
      const error = await rejection(lm.chat({ messages: [{ role: "user", content: "hi" }], maxTokens: 1 }));
      expect(error.code).toBe("E_ENGINE_CRASHED");
    }
    expect(crashes.map((c) => c.willRestart)).toEqual([true, true, false]);
    expect(lm.engine.state).toBe("failed");
    const after = await rejection(lm.describeImage(path.join(import.meta.dirname, "..", "assets", "sample.png"), { maxTokens: 1 }));
    expect(after.code).toBe("E_ENGINE_CRASHED");
    expect(after.message).toMatch(/crashed 3 times within 60 s .*stopped restarting it.*load the model again/);
    // Synchronous calls still answer (they run in this process); nothing else is running.
    expect(lm.tokenize("hello").length).toBeGreaterThan(0);
  }, 60_000);
});

describe("crashes and hangs while loading", () => {
  it("a template that crashes llama.cpp at load is a typed E_MODEL_LOAD, and this process lives", async () => {
    const error = await rejection(MultimodalLM.load({ model: qwen.model, mmproj: qwen.mmproj, chatTemplate: LOAD_CRASH_TEMPLATE, isolation: "process" }));
    expect(error.code).toBe("E_MODEL_LOAD");
    expect(error.message).toMatch(/The engine process killed by SIGSEGV while loading .*qwen2vl-tiny\.gguf: llama\.cpp cannot load this model/);
  }, 60_000);

  it("a load that stops making progress is stopped after loadStallMs, and no process is left", async () => {
    // Two nested loops of 100 000: each range is short enough to pass the template check, together they never end.
    const template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ messages[0]['content'] }}";
    const started = Date.now();
    const error = await rejection(
      MultimodalLM.load({ model: qwen.model, mmproj: qwen.mmproj, chatTemplate: template, isolation: "process", supervisor: { loadStallMs: 1500 } }),
    );
    expect(error.code).toBe("E_MODEL_LOAD");
    expect(error.message).toMatch(/stopped responding while loading .*no progress for 1500 ms/);
    expect(Date.now() - started).toBeLessThan(30_000);
    const children = spawnSync("ps", ["-o", "pid=,comm=", "--ppid", String(process.pid)], { encoding: "utf8" }).stdout;
    expect(children).not.toMatch(/node/);
  }, 60_000);
});

describe("isolation options", () => {
  it("are checked before anything is started", async () => {
    const base = { model: qwen.model, mmproj: qwen.mmproj };
    const bad = [
      [{ isolation: "thread" }, /Expected "none" or "process" for isolation but received "thread"/],
      [{ supervisor: { maxRestarts: -1 } }, /supervisor\.maxRestarts/],
      [{ supervisor: { loadStallMs: "soon" } }, /supervisor\.loadStallMs/],
      [{ supervisor: { restarts: 2 } }, /Unknown option restarts/],
      [{ supervisor: 5 }, /an object for supervisor/],
    ] as const;
    for (const [options, message] of bad) {
      const error = await rejection(MultimodalLM.load({ ...base, ...(options as object) }));
      expect(error.code, JSON.stringify(options)).toBe("E_INVALID_ARGUMENT");
      expect(error.message).toMatch(message);
    }
  });
});

describe("the engine process's log", () => {
  it("reaches the logger at the level asked for, and no lower", async () => {
    const seen = async (logLevel: "warn" | "error") => {
      const lines: string[] = [];
      const lm = await MultimodalLM.load({ model: qwen.model, mmproj: qwen.mmproj, isolation: "process", logLevel, logger: (level, line) => lines.push(`${level}: ${line}`) });
      await lm.dispose();
      return lines;
    };
    // Qwen-VL projectors warn at load about grounding and image tokens.
    expect((await seen("warn")).some((l) => /^warn: .*Qwen-VL models require/.test(l))).toBe(true);
    expect((await seen("error")).filter((l) => l.startsWith("warn:"))).toEqual([]);
  }, 60_000);
});

describe("no engine process is left behind", () => {
  it("dispose() ends it", async () => {
    const lm = await MultimodalLM.load({ model: qwen.model, mmproj: qwen.mmproj, isolation: "process" });
    const pid = lm.engine.pid!;
    expect(alive(pid)).toBe(true);
    await lm.dispose();
    expect(await waitFor(() => !alive(pid), 5000)).toBe(true);
  });

  it.each(["exits", "is killed with SIGKILL"])("a parent that %s takes its engine with it", async (how) => {
    const script = path.join(tmp, `parent-${how.length}.mjs`);
    const index = path.join(import.meta.dirname, "..", "lib", "index.js");
    fs.writeFileSync(
      script,
      `import { MultimodalLM } from ${JSON.stringify(index)};\n` +
        `const lm = await MultimodalLM.load({ model: ${JSON.stringify(qwen.model)}, mmproj: ${JSON.stringify(qwen.mmproj)}, isolation: "process" });\n` +
        `console.log(lm.engine.pid);\n` +
        (how === "exits" ? "process.exit(0);\n" : "setInterval(() => {}, 1000);\n"),
    );
    const parent = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "inherit"] });
    const pid = await new Promise<number>((resolve, reject) => {
      parent.stdout.setEncoding("utf8").once("data", (line: string) => resolve(Number(line.trim())));
      parent.once("exit", (code) => reject(new Error(`the parent exited early (${code})`)));
    });
    expect(pid).toBeGreaterThan(0);
    if (how !== "exits") parent.kill("SIGKILL");
    await new Promise((resolve) => parent.once("exit", resolve));
    expect(await waitFor(() => !alive(pid), 5000)).toBe(true);
  }, 60_000);
});
