// The audio test-model recipes (ultravox-tiny, qwen2audio-tiny): deterministic bytes, the keys and
// tensors libmtmd's Whisper path reads, and a real run of the reference llama-mtmd-cli on WAV clips
// made here with ffmpeg.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { gguf } from "@huggingface/gguf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { packageRoot } from "../src/binding.js";
import { MultimodalLMError } from "../src/errors.js";
import { GGMLType } from "../src/gguf/index.js";
import {
  BYTE_TO_CHAR,
  LLAMA31_CHAT_TEMPLATE,
  QWEN2AUDIO_CHAT_TEMPLATE,
  QWEN2AUDIO_TINY,
  RECIPES,
  ULTRAVOX_TINY,
  WHISPER_SAMPLE_RATE,
  buildRecipe,
  ensureTestModel,
  referenceCliPath,
  runReference,
  testModelKey,
  ultravoxStackedRows,
  ultravoxWidthWorks,
  whisperChunkTokens,
  whisperChunks,
  writeTestModel,
  type TestModelFiles,
} from "../src/test-models/index.js";

let tmp: string;
let sweep: string;
let noise: string;
let long: string;

function ffmpeg(args: string[]): void {
  const r = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", ...args], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(" ")} failed: ${r.stderr}`);
}

/** A 16 kHz mono 16-bit WAV from an ffmpeg lavfi audio source. */
function wav(file: string, source: string): string {
  ffmpeg(["-f", "lavfi", "-i", source, "-ac", "1", "-ar", String(WHISPER_SAMPLE_RATE), "-c:a", "pcm_s16le", "-fflags", "+bitexact", "-flags:a", "+bitexact", file]);
  return file;
}

beforeAll(() => {
  const ok = spawnSync("ffmpeg", ["-version"]).status === 0;
  if (!ok) throw new Error("The audio test-model tests need ffmpeg on PATH (Debian/Ubuntu: apt-get install ffmpeg).");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-audio-models-"));
  // 3 s rising tone (200 Hz to 1.1 kHz), 3 s of pink noise, and 31 s of a tone (two 30 s windows).
  sweep = wav(path.join(tmp, "sweep.wav"), `aevalsrc=sin(2*PI*(200+150*t)*t):s=${WHISPER_SAMPLE_RATE}:d=3`);
  noise = wav(path.join(tmp, "noise.wav"), `anoisesrc=d=3:c=pink:r=${WHISPER_SAMPLE_RATE}:a=0.3:seed=1`);
  long = wav(path.join(tmp, "long.wav"), `sine=frequency=440:sample_rate=${WHISPER_SAMPLE_RATE}:duration=31`);
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function metadataOf(file: string) {
  const { typedMetadata, tensorInfos } = await gguf(file, { allowLocalFile: true, typedMetadata: true });
  const value = (key: string) => typedMetadata[key]?.value;
  const tensor = (name: string) => tensorInfos.find((t) => t.name === name);
  return { value, tensorInfos, tensor, shape: (name: string) => tensor(name)?.shape.map(Number) };
}

function sha256(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

/** A reference run on one audio clip (greedy, the model's own template). */
function runOnAudio(files: TestModelFiles, audio: string, prompt = "What is this?") {
  return runReference({ model: files.model, mmproj: files.mmproj, images: [], extraArgs: ["--audio", audio], prompt });
}

/**
 * The audio chunks the reference CLI decoded and their sizes ("decoding audio batch i/n,
 * n_tokens_batch = N", logged only with -v). The unflushed logger can drop them, so this retries
 * until the last one shows.
 */
function audioBatches(files: TestModelFiles, audio: string): number[] {
  let sizes: number[] = [];
  for (let attempt = 0; attempt < 20; attempt++) {
    const r = spawnSync(referenceCliPath(), ["-m", files.model, "--mmproj", files.mmproj, "--audio", audio, "-p", "hi", "-n", "1", "--temp", "0", "-v"], {
      encoding: "utf8",
      timeout: 120_000,
    });
    if (r.status !== 0) throw new Error(`llama-mtmd-cli exited with ${r.status ?? r.signal}: ${r.stderr.slice(-2000)}`);
    const lines = [...r.stderr.matchAll(/decoding audio batch (\d+)\/(\d+), n_tokens_batch = (\d+)/g)];
    sizes = lines.map((m) => Number(m[3]));
    const last = lines.at(-1);
    if (last && last[1] === last[2] && /audio decoded \(batch (\d+)\/\1\)/.test(r.stderr)) return sizes;
  }
  return sizes;
}

describe("Whisper window arithmetic", () => {
  it("matches clip_n_output_tokens: 187 tokens per 30 s for Ultravox (stack 8), 750 for Qwen2-Audio", () => {
    expect(whisperChunkTokens("ultravox", 8)).toBe(187);
    expect(whisperChunkTokens("qwen2a")).toBe(750);
  });

  it("knows which Ultravox widths the pinned tree aborts on (GGML_PAD rounds only powers of two)", () => {
    for (const width of [32, 64, 96, 128, 192, 256, 512, 1024]) {
      expect(ultravoxWidthWorks(width, 8), `width ${width}`).toBe(false);
      expect(ultravoxStackedRows(width, 8)).toBe(188);
    }
    // Whisper large-v3's width (real Ultravox) and the recipe's.
    for (const width of [160, 224, 320, 1280]) expect(ultravoxWidthWorks(width, 8), `width ${width}`).toBe(true);
    expect(ultravoxWidthWorks(ULTRAVOX_TINY.audio.nEmbd, ULTRAVOX_TINY.stackFactor)).toBe(true);
  });

  it("counts the 30 s windows libmtmd cuts a clip into", () => {
    expect(whisperChunks(1)).toBe(1);
    expect(whisperChunks(3 * WHISPER_SAMPLE_RATE)).toBe(1);
    expect(whisperChunks(29 * WHISPER_SAMPLE_RATE)).toBe(1);
    // 30 s exactly already makes a second (silent) window.
    expect(whisperChunks(30 * WHISPER_SAMPLE_RATE)).toBe(2);
    expect(whisperChunks(31 * WHISPER_SAMPLE_RATE)).toBe(2);
    expect(whisperChunks(61 * WHISPER_SAMPLE_RATE)).toBe(3);
  });
});

describe("audio recipes", () => {
  it("are listed, audio only (no image size), and refuse an image size", () => {
    const names = RECIPES.map((r) => r.name);
    expect(names).toEqual(expect.arrayContaining(["ultravox-tiny", "qwen2audio-tiny"]));
    for (const name of ["ultravox-tiny", "qwen2audio-tiny"]) {
      const { options } = buildRecipe(name);
      expect(options).toEqual({ seed: 0, textType: "f32", visionType: "f32", head: "printable", imageSize: 0 });
      const bad = () => buildRecipe(name, { imageSize: 224 });
      expect(bad).toThrow(MultimodalLMError);
      expect(bad).toThrow(new RegExp(`${name} has a fixed imageSize \\(0\\)`));
    }
    expect(testModelKey("ultravox-tiny")).not.toBe(testModelKey("qwen2audio-tiny"));
    expect(testModelKey("ultravox-tiny", { seed: 1 })).not.toBe(testModelKey("ultravox-tiny"));
  });

  it.each(["ultravox-tiny", "qwen2audio-tiny"])("%s writes the same bytes twice, and other bytes for another seed", async (name) => {
    const a = await writeTestModel(name, path.join(tmp, `${name}-a`));
    const b = await writeTestModel(name, path.join(tmp, `${name}-b`));
    const c = await writeTestModel(name, path.join(tmp, `${name}-c`), { seed: 1 });
    expect(a.bytes).toBe(b.bytes);
    expect(sha256(b.model)).toBe(sha256(a.model));
    expect(sha256(b.mmproj)).toBe(sha256(a.mmproj));
    expect(sha256(c.mmproj)).not.toBe(sha256(a.mmproj));
  });

  it("carries Llama 3.1's chat template verbatim (as vendored by llama.cpp)", () => {
    const vendored = path.join(packageRoot, "vendor", "llama.cpp", "models", "templates", "meta-llama-Llama-3.1-8B-Instruct.jinja");
    if (!fs.existsSync(vendored)) return; // a package install has no vendored tree
    expect(LLAMA31_CHAT_TEMPLATE).toBe(fs.readFileSync(vendored, "utf8"));
  });
});

describe.each([
  {
    recipe: "ultravox-tiny",
    arch: "llama",
    projector: "ultravox",
    template: LLAMA31_CHAT_TEMPLATE,
    bos: "<|begin_of_text|>",
    eos: "<|eot_id|>",
    specials: ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"],
    width: ULTRAVOX_TINY.audio.nEmbd,
    tokensPerWindow: 187,
  },
  {
    recipe: "qwen2audio-tiny",
    arch: "qwen2",
    projector: "qwen2a",
    template: QWEN2AUDIO_CHAT_TEMPLATE,
    bos: "<|endoftext|>",
    eos: "<|im_end|>",
    specials: ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"],
    width: QWEN2AUDIO_TINY.audio.nEmbd,
    tokensPerWindow: 750,
  },
])("$recipe", ({ recipe, arch, projector, template, bos, eos, specials, width, tokensPerWindow }) => {
  let files: TestModelFiles;
  beforeAll(async () => {
    files = await ensureTestModel(recipe);
  });

  it("is a few MB with a real tokenizer, chat template and EOS", async () => {
    const size = fs.statSync(files.model).size + fs.statSync(files.mmproj).size;
    expect(size).toBeGreaterThan(1e6);
    expect(size).toBeLessThan(20e6);
    const text = await metadataOf(files.model);
    expect(text.value("general.architecture")).toBe(arch);
    expect(text.value("tokenizer.ggml.model")).toBe("gpt2");
    expect(text.value("tokenizer.ggml.pre")).toBe(arch === "llama" ? "llama-bpe" : "qwen2");
    expect(text.value("tokenizer.chat_template")).toBe(template);
    const tokens = text.value("tokenizer.ggml.tokens") as string[];
    expect(new Set(tokens).size).toBe(tokens.length);
    expect(tokens).toEqual(expect.arrayContaining([...(BYTE_TO_CHAR as string[]), ...specials]));
    expect((text.value("tokenizer.ggml.merges") as string[]).length).toBeGreaterThan(100);
    expect(tokens[text.value("tokenizer.ggml.bos_token_id") as number]).toBe(bos);
    expect(tokens[text.value("tokenizer.ggml.eos_token_id") as number]).toBe(eos);
    // Llama 3 adds BOS (its template writes it too; llama.cpp drops the duplicate); Qwen2 does not.
    expect(text.value("tokenizer.ggml.add_bos_token")).toBe(arch === "llama");
    // Q/K/V biases in Qwen2 only.
    expect(text.tensor("blk.0.attn_q.bias") !== undefined).toBe(arch === "qwen2");
  });

  it("has the audio-only projector keys and Whisper tensors libmtmd loads", async () => {
    const mm = await metadataOf(files.mmproj);
    expect(mm.value("general.architecture")).toBe("clip");
    expect(mm.value("clip.projector_type")).toBe(projector);
    expect(mm.value("clip.has_audio_encoder")).toBe(true);
    expect(mm.value("clip.has_vision_encoder")).toBeUndefined();
    expect(mm.value("clip.audio.embedding_length")).toBe(width);
    expect(mm.value("clip.audio.num_mel_bins")).toBe(128);
    expect(mm.value("clip.audio.projection_dim")).toBe(256);
    expect(mm.value("clip.audio.projector.stack_factor")).toBe(projector === "ultravox" ? 8 : undefined);
    // No mel filter bank in the file: libmtmd computes it from num_mel_bins.
    expect(mm.tensor("a.mel_filters")).toBeUndefined();
    expect(mm.shape("a.conv1d.1.weight")).toEqual([3, 128, width]);
    expect(mm.tensor("a.conv1d.1.weight")?.dtype as number).toBe(GGMLType.F16);
    expect(mm.shape("a.conv1d.2.weight")).toEqual([3, width, width]);
    expect(mm.shape("a.conv1d.2.bias")).toEqual([1, width]);
    expect(mm.shape("a.position_embd.weight")).toEqual([width, 1500]);
    expect(mm.tensor("a.blk.0.attn_k.bias")).toBeUndefined(); // Whisper's K has no bias
    expect(mm.tensor("a.blk.1.attn_q.bias")).toBeDefined();
    expect(mm.tensor("a.post_ln.weight")).toBeDefined();
    if (projector === "ultravox") {
      expect(mm.shape("mm.a.mlp.1.weight")).toEqual([8 * width, ULTRAVOX_TINY.projectorHidden]);
      expect(mm.shape("mm.a.norm_mid.weight")).toEqual([ULTRAVOX_TINY.projectorHidden / 2]);
      expect(mm.shape("mm.a.mlp.2.weight")).toEqual([ULTRAVOX_TINY.projectorHidden / 2, 256]);
    } else {
      expect(mm.shape("mm.a.fc.weight")).toEqual([width, 256]);
      expect(mm.shape("mm.a.fc.bias")).toEqual([256]);
    }
  });

  it("generates 16 printable tokens on a WAV with the reference llama-mtmd-cli, identically twice", () => {
    const first = runOnAudio(files, sweep);
    const second = runOnAudio(files, sweep);
    expect(first.text).toMatch(/^[\x20-\x7e]{16,}$/);
    expect(second.text).toBe(first.text);
    // The audio reaches the model: another clip of the same length changes the output.
    expect(runOnAudio(files, noise).text).not.toBe(first.text);
  });

  it(`makes ${tokensPerWindow} tokens per 30 s window: one window for 3 s, two for 31 s`, () => {
    expect(audioBatches(files, sweep)).toEqual([tokensPerWindow]);
    expect(audioBatches(files, long)).toEqual([tokensPerWindow, tokensPerWindow]);
  });

  it("generates with a Q8_0 text model and an F16 projector", async () => {
    const q = await ensureTestModel(recipe, { textType: "q8_0", visionType: "f16" });
    const mm = await metadataOf(q.mmproj);
    expect(mm.tensor("a.blk.0.attn_q.weight")?.dtype as number).toBe(GGMLType.F16);
    expect(mm.tensor("a.blk.0.ln1.weight")?.dtype as number).toBe(GGMLType.F32);
    expect(runOnAudio(q, sweep).text).toMatch(/^[\x20-\x7e]{16,}$/);
  });

  it("loads in the library with audio support, or is refused with a clear E_MODEL_LOAD", async () => {
    // Until the library takes audio-only projectors (issue 19) it refuses them at load.
    const { MultimodalLM } = await import("../src/index.js");
    let lm: Awaited<ReturnType<typeof MultimodalLM.load>> | undefined;
    try {
      lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });
    } catch (error) {
      expect(error).toBeInstanceOf(MultimodalLMError);
      expect((error as MultimodalLMError).code).toBe("E_MODEL_LOAD");
      expect((error as Error).message).toMatch(/no vision encoder \(audio-only projectors are not supported yet\)/);
      return;
    }
    try {
      expect(lm.info.capabilities).toEqual({ vision: false, audio: true, video: false });
      expect((lm.info as unknown as { audioSampleRate?: number }).audioSampleRate).toBe(WHISPER_SAMPLE_RATE);
    } finally {
      await lm.dispose();
    }
  });
});
