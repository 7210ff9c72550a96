// Every script in examples/ runs as a subprocess through tsx (as `npx tsx examples/<name>.ts`
// does), on the tiny test model, with few tokens: it must exit with code 0 and print what it
// promises. The servers are started on a free port, answer one real request, and exit with
// code 0 on SIGTERM.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { systemInfo } from "../src/index.js";
import { ensureTestModel } from "../src/test-models/index.js";
import { killExamples, root, runExample, startExample, type ExampleRun } from "./helpers/examples.js";

const scripts = [
  "chat-with-images.ts",
  "compare-images.ts",
  "describe-image.ts",
  "describe-video.ts",
  "embed-image.ts",
  "express-server.ts",
  "extract-json.ts",
  "fastify-server.ts",
  "openai-client.ts",
  "serve.ts",
  "system-info.ts",
  "transcribe.ts",
];

beforeAll(async () => {
  // Cached in .cache/ before the scripts ask for it.
  await ensureTestModel("qwen2vl-tiny");
}, 600_000);

afterEach(killExamples);

/** Runs an example to the end; it must exit with code 0 and print something. */
async function run(name: string, args: string[] = [], input?: string): Promise<ExampleRun> {
  const result = await runExample(name, args, input);
  expect(result.code, `examples/${name} ${args.join(" ")} failed:\n${result.stdout}\n${result.stderr}`).toBe(0);
  expect(result.stdout.trim()).not.toBe("");
  return result;
}

it("tests every script in examples/", () => {
  const found = fs.readdirSync(path.join(root, "examples")).filter((name) => /\.[mc]?[jt]s$/.test(name));
  expect(found.sort()).toEqual(scripts);
});

describe("scripts that exit by themselves", () => {
  it("describe-image.ts streams a description and prints timings", async () => {
    const { stdout } = await run("describe-image.ts", ["--max-tokens", "4"]);
    expect(stdout).toMatch(/\d+ prompt tokens \(\d+ from 1 media chunks\), \d+ generated \((length|eos)\)/);
    expect(stdout).toMatch(/encode [\d.]+ ms, .* total [\d.]+ ms/);
  });

  it("describe-image.ts takes an image and a prompt", async () => {
    const { stdout } = await run("describe-image.ts", ["assets/sample-2.png", "--prompt", "What shapes are there?", "--max-tokens", "2"]);
    expect(stdout).toMatch(/generated/);
  });

  it("describe-video.ts samples with --fps and --max-frames, and shows progress", async () => {
    const { stdout, stderr } = await run("describe-video.ts", ["--fps", "1", "--max-frames", "2", "--max-tokens", "4"]);
    // 4 s at 1 fps is 4 frames; at most 2, spread over the clip.
    expect(stdout).toMatch(/^2 frames of 160×120 at 1\.00, 3\.00 s from a 4\.0 s h264 video/m);
    expect(stderr).toContain("extracting frames: 100%");
  });

  it("describe-video.ts takes exactly --num-frames", async () => {
    const { stdout } = await run("describe-video.ts", ["--num-frames", "4", "--max-tokens", "2"]);
    expect(stdout).toMatch(/^4 frames of 160×120 at 0\.50, 1\.50, 2\.50, 3\.50 s/m);
  });

  it("compare-images.ts asks about the two bundled images", async () => {
    const { stdout } = await run("compare-images.ts", ["--max-tokens", "4"]);
    expect(stdout).toContain("images: sample.png and sample-2.png");
    expect(stdout).toContain("prompt: What is different between these two images?");
    expect(stdout).toMatch(/\d+ prompt tokens \(\d+ from 2 media chunks\)/);
  });

  it("chat-with-images.ts: the second turn reuses the first from the KV cache", async () => {
    const { stdout } = await run("chat-with-images.ts", ["--max-tokens", "4"]);
    expect(stdout).toContain("you> What is in this image?");
    expect(stdout).toContain("you> Which colour stands out the most?");
    const reused = [...stdout.matchAll(/\[turn (\d)\] KV cache: (\d+) positions reused/g)].map((m) => [Number(m[1]), Number(m[2])]);
    expect(reused).toHaveLength(2);
    expect(reused[0]).toEqual([1, 0]);
    expect(reused[1]![1]).toBeGreaterThan(30); // the system prompt, the image and the first question at least
    expect(stdout).toMatch(/\[turn 2\] .*image cache: 0 hits, 0 misses, 0 chunks encoded/);
    expect(stdout).toMatch(/^2 turns;/m);
  });

  it("chat-with-images.ts --interactive reads the questions from stdin", async () => {
    const { stdout } = await run("chat-with-images.ts", ["assets/sample-2.png", "--interactive", "--max-tokens", "2"], "What is this?\nAnd the colours?\n\n");
    expect(stdout).toContain("you> What is this?");
    expect(stdout).toContain("you> And the colours?");
    expect(stdout).toMatch(/^2 turns;/m);
  });

  it("embed-image.ts prints shapes and the cosine similarity", async () => {
    const { stdout } = await run("embed-image.ts");
    expect(stdout).toMatch(/^sample\.png: \d+ tokens × 256 dimensions/m);
    expect(stdout).toMatch(/^sample-2\.png: \d+ tokens × 256 dimensions/m);
    expect(stdout).toMatch(/first values: \[-?\d\.\d{4}, /);
    const similarity = /cosine similarity of the mean-pooled embeddings: (-?\d\.\d{4})/.exec(stdout);
    expect(Math.abs(Number(similarity?.[1]))).toBeLessThanOrEqual(1);
  });

  it("embed-image.ts on one image prints no similarity", async () => {
    const { stdout } = await run("embed-image.ts", ["assets/sample.png"]);
    expect(stdout).toMatch(/^sample\.png: /m);
    expect(stdout).not.toContain("similarity");
  });

  it("extract-json.ts prints an object that matches its zod schema", async () => {
    const { stdout } = await run("extract-json.ts");
    const json = stdout.slice(0, stdout.indexOf("\n}\n") + 2);
    const facts = JSON.parse(json) as Record<string, unknown>;
    expect(Object.keys(facts)).toEqual(["caption", "kind", "mainColors", "objectCount", "hasText"]);
    expect(facts.objectCount).toSatisfy((n: unknown) => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 50);
    expect(stdout).toMatch(/^\d+ prompt tokens \(\d+ from 1 media chunks\), \d+ generated \(eos\)$/m);
  });

  it("extract-json.ts says so when the reply is cut short", async () => {
    const result = await runExample("extract-json.ts", ["--max-tokens", "5"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('The reply was cut short (stopReason "length") after 5 tokens, so its JSON is incomplete. Raise --max-tokens.');
  });

  it("openai-client.ts sends every request shape to an in-process server", async () => {
    const { stdout } = await run("openai-client.ts", ["--max-tokens", "2"]);
    expect(stdout).toMatch(/^models: qwen2vl-tiny$/m);
    for (const label of [
      "image by local path",
      "base64 image",
      "remote URL image",
      "video_url with video_fps/video_max_frames",
      "type video",
      "two images",
      "media_io_kwargs/mm_processor_kwargs",
    ]) {
      expect(stdout).toMatch(new RegExp(`^${label}: \\d+ prompt tokens \\(\\d+ cached\\), \\d+ generated`, "m"));
    }
    expect(stdout).toMatch(/^streaming: \d+ chunks, \d+ prompt tokens, \d+ generated/m);
    expect(stdout).not.toContain("FAILED");
  });

  it("system-info.ts prints the build and checks the devices", async () => {
    const { stdout } = await run("system-info.ts");
    expect(stdout).toMatch(/^llama\.cpp [0-9a-f]{40} \(\w+ build\)/);
    expect(stdout).toMatch(/^check .+: ok, max error/m);
    const variant = systemInfo().cpuVariant;
    if (variant) expect(stdout).toContain(`cpu variant: ${variant.name} (${variant.reason})`);
  });

  describe("transcribe.ts", () => {
    let tmp: string;
    beforeAll(async () => {
      await ensureTestModel("qwen2audio-tiny");
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-transcribe-"));
    }, 600_000);
    afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

    /** The audio line for `clip`; its token count must be the usage line's media tokens. */
    function expectAudioReport(stdout: string, clip: string, seconds: string): void {
      const quoted = `${clip}, ${seconds}`.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      const audio = new RegExp(`^audio: ${quoted} s → (\\d+) tokens \\([\\d.]+ per second\\) at 16000 Hz$`, "m").exec(stdout);
      expect(audio, stdout).not.toBeNull();
      const usage = /^\d+ prompt tokens \((\d+) from 1 media chunks\), \d+ generated \((length|eos)\)$/m.exec(stdout);
      expect(usage, stdout).not.toBeNull();
      expect(Number(audio![1])).toBeGreaterThan(0);
      expect(usage![1]).toBe(audio![1]);
      expect(stdout).toMatch(/encode [\d.]+ ms, .* total [\d.]+ ms/);
    }

    it("streams a transcription of the generated tone on the tiny audio model and prints the clip's seconds and tokens", async () => {
      const { stdout, stderr } = await run("transcribe.ts", ["--max-tokens", "4"]);
      expectAudioReport(stdout, "a 2 s 440 Hz tone", "2.00");
      expect(stderr).toContain("loading the tiny random-weight test model qwen2audio-tiny");
    });

    it("takes a clip and a prompt", async () => {
      const mp3 = path.join(tmp, "tone.mp3");
      const made = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=1.5", mp3], { encoding: "utf8" });
      expect(made.status, made.stderr).toBe(0);
      const { stdout } = await run("transcribe.ts", [mp3, "--prompt", "What do you hear?", "--max-tokens", "2"]);
      expectAudioReport(stdout, mp3, "1.50");
    });

    it("a missing file, a file that is not audio and a missing ffmpeg: one typed error line, exit code 1", async () => {
      const oneLine = async (args: string[], pattern: RegExp, env: Record<string, string> = {}) => {
        const saved = Object.fromEntries(Object.keys(env).map((key) => [key, process.env[key]]));
        Object.assign(process.env, env); // runExample spawns at once, with this environment
        let running: Promise<ExampleRun>;
        try {
          running = runExample("transcribe.ts", args);
        } finally {
          for (const [key, value] of Object.entries(saved)) {
            if (value === undefined) delete process.env[key];
            else process.env[key] = value;
          }
        }
        const result = await running;
        expect(result.code, result.stderr).toBe(1);
        expect(result.stdout).toBe("");
        expect(result.stderr.trimEnd().split("\n"), result.stderr).toHaveLength(1);
        expect(result.stderr).toMatch(pattern);
      };
      await oneLine([path.join(tmp, "missing.wav")], /^error E_FILE_NOT_FOUND: Audio file .*missing\.wav does not exist\./);
      await oneLine(["package.json"], /^error E_AUDIO_DECODE: Audio file .*package\.json could not be decoded as audio/);
      await oneLine([], /^error E_FFMPEG_NOT_FOUND: MULTIMODAL_LM_FFMPEG is \/nonexistent\/ffmpeg, which is not an executable file\. .*apt-get install ffmpeg/, {
        MULTIMODAL_LM_FFMPEG: "/nonexistent/ffmpeg",
      });
    });
  });

  it("--model without --mmproj is a clear usage error", async () => {
    const result = await runExample("describe-image.ts", ["--model", "model.gguf"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--mmproj <mmproj\.gguf>/);
  });
});

describe.each(["express-server.ts", "fastify-server.ts", "serve.ts"])("examples/%s", (name) => {
  it("listens, answers a chat completion with sample.png, and exits with code 0 on SIGTERM", async () => {
    const server = await startExample(name);
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "not-needed", maxRetries: 0 });
    const completion = await client.chat.completions.create({
      model: "default",
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "sample.png" } }, { type: "text", text: "Describe this image." }] }],
      max_tokens: 4,
    });
    expect(completion.choices[0]!.message.role).toBe("assistant");
    expect(completion.usage!.prompt_tokens).toBeGreaterThan(20);
    if (name === "serve.ts") {
      expect(server.output().stdout).toContain(`chat page: ${server.url}/`);
      // openai-client.ts --base-url against it: every shape but the remote URL, and no model of its own.
      const { stdout, stderr } = await run("openai-client.ts", ["--base-url", `${server.url}/v1`, "--max-tokens", "2"]);
      expect(stdout).toMatch(/^remote URL image: skipped/m);
      expect(stdout).toMatch(/^two images: \d+ prompt tokens/m);
      expect(stdout).not.toContain("FAILED");
      expect(stderr).not.toContain("loading");
    }
    expect(await server.stop()).toBe(0);
  });
});
