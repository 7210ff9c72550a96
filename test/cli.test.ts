// The built CLI (lib/cli/index.js, compiled by `npm run build:ts`) run as a subprocess on the tiny
// Qwen2-VL model (audio on the tiny Qwen2.5-Omni model): describe, chat and serve, each compared
// with the same call made in-process.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM, type ChatMessage } from "../src/index.js";
import { ensureTestModel, writeTestImage, type TestModelFiles } from "../src/test-models/index.js";
import { ffmpegAvailable, withSoundTrack } from "./helpers/clips.js";

const root = path.resolve(import.meta.dirname, "..");
const CLI = path.join(root, "lib", "cli", "index.js");
const PNG = path.join(root, "assets", "sample.png");
const MP4 = path.join(root, "assets", "sample.mp4");
const greedy = { temperature: 0, maxTokens: 16 } as const;
const GREEDY_FLAGS = ["--temperature", "0", "--max-tokens", "16"];

let files: TestModelFiles;
let lm: MultimodalLM;
let tmp: string;
const children = new Set<ChildProcess>();

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment without the CLI's own variables, plus `extra`. */
function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of ["MULTIMODAL_LM_MODEL", "MULTIMODAL_LM_API_KEY", "MULTIMODAL_LM_LOG"]) delete env[name];
  return { ...env, ...extra };
}

function start(args: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: root, env: cliEnv(env), stdio: ["pipe", "pipe", "pipe"] });
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** Runs the CLI to the end, with `input` as stdin. A hang fails the test rather than the run. */
function cli(
  args: string[],
  options: { input?: string; env?: Record<string, string>; timeoutMs?: number; onFirstOutput?: (child: ChildProcess) => void } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = start(args, options.env);
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      if (stdout === "") options.onFirstOutput?.(child);
      stdout += d;
    });
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`multimodal-lm ${args.join(" ")} did not exit within ${options.timeoutMs ?? 60_000} ms. stderr: ${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin!.end(options.input ?? "");
  });
}

/** An error run: exit 1, and one line on stderr that is not a stack trace. */
function expectOneLineError(run: Run, pattern: RegExp): void {
  expect(run.code, run.stderr).toBe(1);
  expect(run.stdout).toBe("");
  expect(run.stderr).toMatch(pattern);
  expect(run.stderr.trimEnd().split("\n")).toHaveLength(1);
  expect(run.stderr).not.toMatch(/^\s+at /m);
}

/** A directory holding links to the test model under `names`, for the mmproj search. */
function modelDir(name: string, links: Record<string, string>): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const [link, target] of Object.entries(links)) fs.symlinkSync(target, path.join(dir, link));
  return dir;
}

beforeAll(async () => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build:ts first (npm test does it in pretest).`);
  if (!ffmpegAvailable()) throw new Error("The CLI tests need ffmpeg and ffprobe on PATH (Debian/Ubuntu: apt-get install ffmpeg).");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-cli-"));
  files = await ensureTestModel("qwen2vl-tiny");
  lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });
});
afterEach(() => {
  for (const child of children) child.kill("SIGKILL");
});
afterAll(async () => {
  await lm?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe("help and version", () => {
  it("--help lists the commands and --version prints package.json's version", async () => {
    const help = await cli(["--help"]);
    expect(help.code).toBe(0);
    for (const word of ["describe", "chat", "serve", "--version", "mmproj"]) expect(help.stdout).toContain(word);
    const version = await cli(["--version"]);
    expect(version.code).toBe(0);
    const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { version: string };
    expect(version.stdout.trim()).toBe(pkg.version);
  });

  const sampling = ["--max-tokens", "--temperature", "--top-k", "--top-p", "--seed"];
  const load = ["--mmproj", "--ctx-size", "--threads", "--gpu-layers", "--image-cache-mb", "--no-reuse-prefix", "--chat-template-file"];
  const video = ["--fps", "--max-frames", "--num-frames"];
  it.each([
    ["describe", ["--model", "MULTIMODAL_LM_MODEL", "--prompt", "--json", "--verbose", ...load, ...sampling, ...video]],
    ["chat", ["--model", "--system", "/image", "/video", "/reset", "/exit", ...load, ...sampling, ...video]],
    [
      "serve",
      [
        "--host",
        "--port",
        "--model-name",
        "--api-key",
        "MULTIMODAL_LM_API_KEY",
        "--allowed-local-media-path",
        "--allowed-media-domains",
        "--allow-all-media-domains",
        "--allowed-private-networks",
        "--max-body-mb",
        "--max-queue",
        "--no-ui",
        "--no-metrics",
        ...load,
      ],
    ],
  ])("%s --help lists its flags", async (command, flags) => {
    const run = await cli([command, "--help"]);
    expect(run.code).toBe(0);
    for (const flag of flags) expect(run.stdout).toContain(flag);
    expect((await cli(["help", command])).stdout).toBe(run.stdout);
  });
});

describe("describe", () => {
  it("streams the same text as generate() for an image, and prints nothing else when piped", async () => {
    const expected = await lm.generate({ prompt: "Describe this image.", images: [PNG], ...greedy });
    const run = await cli(["describe", PNG, "-m", files.model, "--mmproj", files.mmproj, ...GREEDY_FLAGS]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${expected.text}\n`);
    expect(run.stderr).toBe("");
  });

  it("a video with --fps/--max-frames equals describeVideo() with the same options; no progress bar when piped", async () => {
    const expected = await lm.describeVideo(MP4, { fps: 1, maxFrames: 3, ...greedy });
    const run = await cli(["describe", MP4, "-m", files.model, "--fps", "1", "--max-frames", "3", ...GREEDY_FLAGS]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${expected}\n`);
    expect(run.stderr).toBe("");
  });

  it("--num-frames and a prompt", async () => {
    const expected = await lm.generate({ prompt: "What moves?", videos: [MP4], video: { numFrames: 2 }, ...greedy });
    const run = await cli(["describe", MP4, "-m", files.model, "--num-frames", "2", "-p", "What moves?", ...GREEDY_FLAGS]);
    expect(run.stdout).toBe(`${expected.text}\n`);
  });

  it("two images go into one request, in order", async () => {
    const second = await writeTestImage(path.join(tmp, "second.png"), { width: 56, height: 42, seed: 3 });
    const expected = await lm.generate({ prompt: "Describe these images.", images: [second, PNG], ...greedy });
    const run = await cli(["describe", second, PNG, "-m", files.model, ...GREEDY_FLAGS]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${expected.text}\n`);
  });

  it("a video before an image keeps that order", async () => {
    const expected = await lm.chat({
      messages: [{ role: "user", content: [{ type: "video", video: MP4 }, { type: "image", image: PNG }, { type: "text", text: "Describe these images and videos." }] }],
      video: { fps: 1 },
      ...greedy,
    });
    const imageFirst = await lm.generate({ prompt: "Describe these images and videos.", images: [PNG], videos: [MP4], video: { fps: 1 }, ...greedy });
    expect(imageFirst.text).not.toBe(expected.text);
    const run = await cli(["describe", MP4, PNG, "-m", files.model, "--fps", "1", ...GREEDY_FLAGS]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${expected.text}\n`);
  });

  it("--json prints one object with the text, usage and timings", async () => {
    const expected = await lm.generate({ prompt: "Describe this image.", images: [PNG], ...greedy });
    const run = await cli(["describe", PNG, "-m", files.model, "--json", ...GREEDY_FLAGS]);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(result).toMatchObject({ text: expected.text, stopReason: "length", usage: expected.usage, videos: [] });
    expect(Object.keys(result.timings as object)).toEqual(Object.keys(expected.timings));
  });

  it("--verbose prints a summary on stderr; the model may come from MULTIMODAL_LM_MODEL", async () => {
    const run = await cli(["describe", PNG, "--verbose", ...GREEDY_FLAGS], { env: { MULTIMODAL_LM_MODEL: files.model } });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^\d+ prompt tokens \(\d+ from media\), 16 generated \(length\); .* tok\/s.*total \d+ ms\n$/);
  });

  it("finds the projector beside the model: the only one, or the one named after the model", async () => {
    const expected = await lm.generate({ prompt: "Describe this image.", images: [PNG], ...greedy });
    const dir = modelDir("named", {
      "qwen2vl-tiny.gguf": files.model,
      "mmproj-qwen2vl-tiny.gguf": files.mmproj,
      "mmproj-other-model.gguf": files.mmproj,
    });
    const run = await cli(["describe", PNG, "-m", path.join(dir, "qwen2vl-tiny.gguf"), ...GREEDY_FLAGS]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${expected.text}\n`);
  });

  it("asks for --mmproj when there are several projectors or none", async () => {
    const several = modelDir("several", { "model.gguf": files.model, "mmproj-a.gguf": files.mmproj, "mmproj-b.gguf": files.mmproj });
    expectOneLineError(
      await cli(["describe", PNG, "-m", path.join(several, "model.gguf")]),
      /^multimodal-lm: Several projectors found beside .*model\.gguf: mmproj-a\.gguf, mmproj-b\.gguf\. Pick one with --mmproj/,
    );
    const none = modelDir("none", { "model.gguf": files.model });
    expectOneLineError(await cli(["describe", PNG, "-m", path.join(none, "model.gguf")]), /^multimodal-lm: No projector \(mmproj\*\.gguf\) found beside .*--mmproj/);
  });

  it("a missing model or input exits 1 with one line and no stack", async () => {
    expectOneLineError(await cli(["describe", PNG, "-m", path.join(tmp, "missing.gguf")]), /^multimodal-lm: The model file .*missing\.gguf does not exist\. Check the path\.\n$/);
    expectOneLineError(await cli(["describe", path.join(tmp, "missing.png"), "-m", files.model]), /^multimodal-lm: The input .*missing\.png does not exist\. Check the path\.\n$/);
    // A file that is neither an image nor a video: the library's error, still one line.
    const text = path.join(tmp, "notes.txt");
    fs.writeFileSync(text, "not media");
    expectOneLineError(await cli(["describe", text, "-m", files.model]), /^multimodal-lm: /);
  });

  it("--chat-template-file replaces the model's template; a missing one is one line naming the flag", async () => {
    const template = path.join(tmp, "plain.jinja");
    fs.writeFileSync(template, "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] ");
    const custom = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj, chatTemplate: fs.readFileSync(template, "utf8") });
    try {
      const run = await cli(["describe", PNG, "-m", files.model, "--chat-template-file", template, "--prompt", "hi", "--temperature", "0", "-n", "4", "--json"]);
      expect(run.code, run.stderr).toBe(0);
      const viaCli = await custom.generate({ prompt: "hi", images: [PNG], temperature: 0, maxTokens: 4 });
      expect(JSON.parse(run.stdout).text).toBe(viaCli.text);
      expect(custom.formatChat([{ role: "user", content: "hi" }])).toBe("[user] hi\n[assistant] ");
    } finally {
      await custom.dispose();
    }
    expectOneLineError(
      await cli(["describe", PNG, "-m", files.model, "--chat-template-file", path.join(tmp, "none.jinja")]),
      /^multimodal-lm: The chat template file .*none\.jinja \(--chat-template-file\) could not be read: .*Check the path\.\n$/,
    );
  });

  it("rejects bad flags before loading anything", async () => {
    const fps = await cli(["describe", PNG, "-m", files.model, "--fps", "abc"]);
    expect(fps.code).toBe(1);
    expect(fps.stderr).toMatch(/^error: --fps expects a number greater than 0, got "abc"\n/);
    expect((await cli(["describe", PNG, "-m", files.model, "--max-tokens", "1.5"])).stderr).toMatch(/^error: --max-tokens expects an integer of at least 0, got "1.5"/);
    expect((await cli(["describe", PNG, "-m", files.model, "--gpu-layers", "lots"])).stderr).toMatch(/^error: --gpu-layers expects an integer of at least 0 or "auto"/);
    expect((await cli(["describe", PNG, "-m", files.model, "--top-p", "2"])).stderr).toMatch(/^error: --top-p expects a number from 0 to 1, got "2"/);
    expect((await cli(["describe", PNG, "-m", files.model, "--temperature", "3"])).stderr).toMatch(/^error: --temperature expects a number from 0 to 2, got "3"/);
    expect((await cli(["describe", PNG, "-m", files.model, "--image-cache-mb", "-1"])).stderr).toMatch(/^error: --image-cache-mb expects a number of at least 0, got "-1"/);
    const noModel = await cli(["describe", PNG]);
    expect(noModel.code).toBe(1);
    expect(noModel.stderr).toMatch(/required option '-m, --model <gguf>' not specified/);
    const unknown = await cli(["describe", PNG, "-m", files.model, "--bogus"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/unknown option '--bogus'/);
  });
});

// Seconds of generation, so the signal sent at the first output lands mid-reply (greedy, these
// prompts reach no end token within 16000 tokens).
const ENDLESS = ["--temperature", "0", "--max-tokens", "16000", "--ctx-size", "16384"];

describe("interrupts", () => {
  it("SIGINT (Ctrl-C) stops describe: exit 130, promptly", async () => {
    const run = await cli(["describe", PNG, "-m", files.model, ...ENDLESS], { onFirstOutput: (child) => child.kill("SIGINT"), timeoutMs: 30_000 });
    expect(run.code, run.stderr).toBe(130);
    expect(run.stdout.endsWith("\n")).toBe(true);
    expect(run.stderr).toBe("");
  });

  it("chat: SIGINT during a reply stops only that reply and the script goes on; SIGTERM ends the chat", async () => {
    const stopped = await cli(["chat", "-m", files.model, ...ENDLESS], {
      input: "Hello?\n/help\n/exit\n",
      onFirstOutput: (child) => child.kill("SIGINT"),
      timeoutMs: 30_000,
    });
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stderr).toMatch(/^\(stopped; this message and its reply are not kept\)\nCommands:/);
    const ended = await cli(["chat", "-m", files.model, ...ENDLESS], {
      input: "Hello?\nSecond question\n",
      onFirstOutput: (child) => child.kill("SIGTERM"),
      timeoutMs: 30_000,
    });
    expect(ended.code, ended.stderr).toBe(0);
    expect(ended.stderr).toBe("(stopped; this message and its reply are not kept)\n");
    expect(ended.stdout.split("\n")).toHaveLength(2);
  });
});

describe("chat", () => {
  const sampling = { temperature: 0, maxTokens: 8 } as const;
  const flags = ["--temperature", "0", "--max-tokens", "8"];

  it("answers a piped script like chat() with the same growing history", async () => {
    const first: ChatMessage = { role: "user", content: [{ type: "image", image: PNG }, { type: "text", text: "What is in the picture?" }] };
    const a1 = (await lm.chat({ messages: [first], ...sampling })).text;
    const a2 = (await lm.chat({ messages: [first, { role: "assistant", content: a1 }, { role: "user", content: "And the colours?" }], ...sampling })).text;
    const run = await cli(["chat", "-m", files.model, ...flags], {
      input: `/image ${PNG}\nWhat is in the picture?\nAnd the colours?\n/exit\nnot read\n`,
    });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${a1}\n${a2}\n`);
    expect(run.stderr).toBe(`attached image ${PNG}\n`);
  });

  it("reports a bad /image path and goes on; /reset forgets; --system starts the history; EOF ends", async () => {
    const system: ChatMessage = { role: "system", content: "You are terse." };
    const expected = (await lm.chat({ messages: [system, { role: "user", content: "Hello?" }], ...sampling })).text;
    const run = await cli(["chat", "-m", files.model, "--system", "You are terse.", ...flags], {
      input: `/image ${path.join(tmp, "nope.png")}\nHello?\n/reset\n/help\n/unknown\nHello?\n`,
    });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${expected}\n${expected}\n`);
    expect(run.stderr).toMatch(/^multimodal-lm: The input .*nope\.png does not exist\. Check the path\.\n/);
    expect(run.stderr).toContain("conversation cleared\n");
    expect(run.stderr).toContain("/image <path|url>");
    expect(run.stderr).toContain("multimodal-lm: unknown command /unknown; /help lists the commands\n");
  });

  it("a /video is sent with the video flags", async () => {
    const message: ChatMessage = { role: "user", content: [{ type: "video", video: MP4 }, { type: "text", text: "What happens?" }] };
    const expected = (await lm.chat({ messages: [message], video: { numFrames: 2 }, ...sampling })).text;
    const run = await cli(["chat", "-m", files.model, "--num-frames", "2", ...flags], { input: `/video ${MP4}\nWhat happens?\n/quit\n` });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${expected}\n`);
    expect(run.stderr).toBe(`attached video ${MP4}\n`);
  });
});

describe("serve", () => {
  interface Served {
    child: ChildProcess;
    url: string;
    name: string;
    stderr: () => string;
    exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  }

  /** Starts `serve` and waits for its "serving" line. */
  function serve(args: string[], env: Record<string, string> = {}): Promise<Served> {
    const child = start(["serve", files.model, "--port", "0", ...args], env);
    let stdout = "";
    let stderr = "";
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    return new Promise((resolve, reject) => {
      child.stdout!.setEncoding("utf8").on("data", (d: string) => {
        stdout += d;
        const line = /^multimodal-lm: serving (\S+) at (http:\/\/\S+)\/v1\n/m.exec(stdout);
        if (line) resolve({ child, name: line[1]!, url: line[2]!, stderr: () => stderr, exit });
      });
      void exit.then(({ code }) => reject(new Error(`serve exited (${code}) before listening: ${stderr}`)));
    });
  }

  async function stop(served: Served, signal: NodeJS.Signals = "SIGTERM"): Promise<number> {
    const started = performance.now();
    served.child.kill(signal);
    const { code } = await served.exit;
    expect(code, served.stderr()).toBe(0);
    return performance.now() - started;
  }

  it("serves /v1/models, /health, chat completions and /metrics, logs each request, and exits 0 on SIGTERM", async () => {
    const served = await serve([]);
    expect(served.name).toBe("qwen2vl-tiny");
    expect(served.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const models = (await (await fetch(`${served.url}/v1/models`)).json()) as { data: Array<{ id: string }> };
    expect(models.data.map((m) => m.id)).toEqual(["qwen2vl-tiny"]);
    expect((await fetch(`${served.url}/health`)).status).toBe(200);
    const page = await fetch(`${served.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(await page.text()).toContain("<title>multimodal-lm</title>");

    const messages: ChatMessage[] = [{ role: "user", content: "Say something." }];
    const expected = await lm.chat({ messages, temperature: 0, maxTokens: 8 });
    const response = await fetch(`${served.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "qwen2vl-tiny", messages, temperature: 0, max_tokens: 8 }),
    });
    expect(response.status).toBe(200);
    const completion = (await response.json()) as { choices: Array<{ message: { content: string } }> };
    expect(completion.choices[0]!.message.content).toBe(expected.text);
    const bad = await fetch(`${served.url}/v1/chat/completions`, { method: "POST", body: "{not json" });
    expect(bad.status).toBe(400);
    const metrics = await fetch(`${served.url}/metrics`);
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(text).toContain('multimodal_lm_requests_total{status="200",code=""} 1\n');
    expect(text).toContain('multimodal_lm_requests_total{status="400",code="E_INVALID_JSON"} 1\n');
    expect(text).toContain("multimodal_lm_generation_tokens_total 8\n");

    expect(await stop(served)).toBeLessThan(5000);
    const log = served.stderr();
    expect(log).toMatch(/^GET \/v1\/models 200 \d+ms$/m);
    expect(log).toMatch(/^GET \/health 200 \d+ms$/m);
    expect(log).toMatch(new RegExp(`^POST /v1/chat/completions 200 \\d+ms ${expected.usage.promptTokens}\\+8 tokens$`, "m"));
    expect(log).toMatch(/^POST \/v1\/chat\/completions 400 \d+ms E_INVALID_JSON$/m);
    // Media are refused by default, and the hints say how to allow them.
    expect(log).toContain("--allowed-local-media-path");
    expect(log).toContain("--allowed-media-domains");
    expect(log).not.toContain("warning");
  });

  it("takes the API key from MULTIMODAL_LM_API_KEY and the name from --model-name; --no-ui; --no-metrics; exits 0 on SIGINT", async () => {
    const served = await serve(["--model-name", "tiny", "--no-ui", "--no-metrics", "--allowed-local-media-path", tmp, "--allowed-media-domains", "a.example,b.example"], {
      MULTIMODAL_LM_API_KEY: "sekret",
    });
    expect(served.name).toBe("tiny");
    expect((await fetch(`${served.url}/v1/models`)).status).toBe(401);
    const models = (await (await fetch(`${served.url}/v1/models`, { headers: { authorization: "Bearer sekret" } })).json()) as { data: Array<{ id: string }> };
    expect(models.data.map((m) => m.id)).toEqual(["tiny"]);
    // No chat page: "/" is an unknown path, whose 404 lists what is served.
    const page = await fetch(`${served.url}/`);
    expect(page.status).toBe(404);
    expect(((await page.json()) as { error: { message: string } }).error.message).toBe(
      "No endpoint GET /. This server serves POST /v1/chat/completions, GET /v1/models and GET /health.",
    );
    const metrics = await fetch(`${served.url}/metrics`, { headers: { authorization: "Bearer sekret" } });
    expect(metrics.status).toBe(404);
    expect(((await metrics.json()) as { error: { code: string } }).error.code).toBe("E_NOT_FOUND");
    expect(await stop(served, "SIGINT")).toBeLessThan(5000);
    expect(served.stderr()).toMatch(/^GET \/v1\/models 401 \d+ms E_UNAUTHORIZED$/m);
    expect(served.stderr()).not.toContain("note:");
  });

  it("--no-reuse-prefix evaluates every prompt in full; by default a repeated prompt is served from the KV cache", async () => {
    const ask = async (url: string) => {
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({ messages: [{ role: "user", content: "Say something." }], temperature: 0, max_tokens: 2 }),
      });
      return ((await response.json()) as { usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } } }).usage;
    };
    const plain = await serve(["--no-reuse-prefix", "--image-cache-mb", "0"]);
    await ask(plain.url);
    expect((await ask(plain.url)).prompt_tokens_details.cached_tokens).toBe(0);
    await stop(plain);
    const reusing = await serve([]);
    await ask(reusing.url);
    const again = await ask(reusing.url);
    expect(again.prompt_tokens_details.cached_tokens).toBe(again.prompt_tokens - 1);
    await stop(reusing);
  });

  it("warns when listening beyond loopback without an API key", async () => {
    const served = await serve(["--host", "0.0.0.0"]);
    expect(served.url).toMatch(/^http:\/\/0\.0\.0\.0:\d+$/);
    await stop(served);
    expect(served.stderr()).toMatch(/^warning: listening on 0\.0\.0\.0 without an API key.*--api-key/m);
  });

  it("rejects a bad --port before loading", async () => {
    const run = await cli(["serve", files.model, "--port", "http"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error: --port expects an integer from 0 to 65535, got "http"/);
  });

  it("rejects bad media flags before loading the model", async () => {
    const networks = await cli(["serve", files.model, "--allowed-private-networks", "not-a-network"]);
    expect(networks.code).toBe(1);
    expect(networks.stderr).toMatch(/^multimodal-lm: Expected a CIDR range or an IP address.* for allowedPrivateNetworks\[0\]/);
    const dir = await cli(["serve", files.model, "--allowed-local-media-path", path.join(files.model, "nope")]);
    expect(dir.code).toBe(1);
    expect(dir.stderr).toMatch(/^multimodal-lm: .*nope/);
    expect(dir.stdout).toBe("");
  });
});

describe("audio (qwen25omni-tiny, which takes images, video and audio)", () => {
  let omni: TestModelFiles;
  let olm: MultimodalLM;
  let wav: string;
  let withSound: string;
  beforeAll(async () => {
    omni = await ensureTestModel("qwen25omni-tiny");
    olm = await MultimodalLM.load({ model: omni.model, mmproj: omni.mmproj });
    wav = path.join(tmp, "tone.wav");
    const tone = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=2", wav]);
    if (tone.status !== 0) throw new Error(tone.stderr.toString());
    withSound = withSoundTrack(MP4, path.join(tmp, "sample-sound.mp4"), 4);
  });
  afterAll(() => olm?.dispose());
  const run = (args: string[], input?: string) => cli([...args, "-m", omni.model, "--mmproj", omni.mmproj, ...GREEDY_FLAGS], { input });

  it("describe transcribes an audio file (describeAudio's prompt) and keeps media in the order given", async () => {
    const transcript = await run(["describe", wav]);
    expect(transcript.code, transcript.stderr).toBe(0);
    expect(transcript.stdout).toBe(`${await olm.describeAudio(wav, greedy)}\n`);
    const mixed = await run(["describe", wav, PNG]);
    const expected = await olm.chat({
      messages: [{ role: "user", content: [{ type: "audio", audio: wav }, { type: "image", image: PNG }, { type: "text", text: "Describe these images and audio clips." }] }],
      ...greedy,
    });
    expect(mixed.stdout).toBe(`${expected.text}\n`);
  });

  it("--video-audio sends a video's sound after its frames, as describeVideo({ audio: true })", async () => {
    const heard = await run(["describe", withSound, "--fps", "1", "--video-audio"]);
    expect(heard.code, heard.stderr).toBe(0);
    expect(heard.stdout).toBe(`${await olm.describeVideo(withSound, { fps: 1, audio: true, ...greedy })}\n`);
    const silent = await run(["describe", MP4, "--video-audio"]);
    expectOneLineError(silent, /has no sound track/);
  });

  it("chat: /audio attaches a clip to the next message", async () => {
    const expected = (await olm.chat({ messages: [{ role: "user", content: [{ type: "audio", audio: wav }, { type: "text", text: "What is it?" }] }], ...greedy })).text;
    const chat = await run(["chat"], `/audio ${wav}\nWhat is it?\n/quit\n`);
    expect(chat.code, chat.stderr).toBe(0);
    expect(chat.stdout).toBe(`${expected}\n`);
    expect(chat.stderr).toBe(`attached audio ${wav}\n`);
  });

  it("audio given to a vision-only model is one line naming the fix", async () => {
    expectOneLineError(await cli(["describe", wav, "-m", files.model, ...GREEDY_FLAGS]), /cannot read audio.*Load a projector that supports audio/);
  });
});
