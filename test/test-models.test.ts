import { spawnSync } from "node:child_process";
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
  GEMMA3_CHAT_TEMPLATE,
  MERGE_CORPUS,
  QWEN2VL_CHAT_TEMPLATE,
  RECIPES,
  SMOLVLM_CHAT_TEMPLATE,
  buildRecipe,
  byteToken,
  ensureTestModel,
  testModelKey,
  toByteLevel,
  trainMerges,
  writeTestImage,
  type TestModelFiles,
} from "../src/test-models/index.js";
import { runReference } from "../src/test-models/reference-cli.js";

let tmp: string;
let image: string;
let otherImage: string;
let wideImage: string;
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-models-"));
  image = await writeTestImage(path.join(tmp, "a.png"), { width: 84, height: 84, seed: 0 });
  otherImage = await writeTestImage(path.join(tmp, "b.png"), { width: 84, height: 84, seed: 7 });
  wideImage = await writeTestImage(path.join(tmp, "c.png"), { width: 112, height: 56, seed: 3 });
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function metadataOf(file: string) {
  const { typedMetadata, tensorInfos } = await gguf(file, { allowLocalFile: true, typedMetadata: true });
  const value = (key: string) => typedMetadata[key]?.value;
  return { value, tensorInfos };
}

describe("byte-level BPE", () => {
  it("has the 256 GPT-2 byte characters, each unique", () => {
    expect(new Set(BYTE_TO_CHAR).size).toBe(256);
    expect(BYTE_TO_CHAR[0x20]).toBe("Ġ");
    expect(BYTE_TO_CHAR[0x0a]).toBe("Ċ");
    expect(BYTE_TO_CHAR[0x41]).toBe("A");
    expect(toByteLevel(" é")).toBe("Ġ\u00c3\u00a9");
  });

  it("learns merges deterministically, most frequent pair first", () => {
    const merges = trainMerges(MERGE_CORPUS, 50);
    expect(merges).toHaveLength(50);
    expect(trainMerges(MERGE_CORPUS, 50)).toEqual(merges);
    expect(merges.slice(0, 3)).toEqual([
      ["h", "e"],
      ["Ġ", "t"],
      ["Ġ", "a"],
    ]);
    expect(merges.map(([a, b]) => a + b)).toContain("Ġthe");
    expect(trainMerges("ab ab ab", 10)).toEqual([
      ["a", "b"],
      ["Ġ", "ab"],
    ]);
  });
});

describe("test images", () => {
  it("rejects a bad size or seed with E_INVALID_ARGUMENT", async () => {
    for (const [options, message] of [
      [{ width: 0 }, /positive integer width and height/],
      [{ height: 2.5 }, /positive integer width and height/],
      [{ seed: -1 }, /0\.\.4294967295 for seed/],
    ] as const) {
      const error = await writeTestImage(path.join(tmp, "never.png"), options).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MultimodalLMError);
      expect((error as MultimodalLMError).code).toBe("E_INVALID_ARGUMENT");
      expect((error as Error).message).toMatch(message);
    }
    expect(fs.existsSync(path.join(tmp, "never.png"))).toBe(false);
  });
});

describe("recipes", () => {
  it("rejects unknown recipes and bad options with E_INVALID_ARGUMENT", () => {
    const bad: [() => unknown, RegExp][] = [
      [() => buildRecipe("llava-tiny"), /Unknown test-model recipe "llava-tiny". Available: qwen2vl-tiny, smolvlm-tiny/],
      [() => buildRecipe("qwen2vl-tiny", { seed: -1 }), /seed/],
      [() => buildRecipe("qwen2vl-tiny", { textType: "q4_0" as never }), /f32, f16, q8_0 for textType/],
      [() => buildRecipe("qwen2vl-tiny", { head: "untied" as never }), /printable, random, tied or multibyte/],
      [() => buildRecipe("qwen2vl-tiny", { visionType: "toString" as never }), /f32, f16, q8_0 for visionType/],
    ];
    for (const [fn, message] of bad) {
      expect(fn).toThrow(MultimodalLMError);
      expect(fn).toThrow(message);
    }
  });

  it("keys the cache by recipe, seed and options", () => {
    const keys = new Set([
      testModelKey("qwen2vl-tiny"),
      testModelKey("qwen2vl-tiny", { seed: 1 }),
      testModelKey("qwen2vl-tiny", { textType: "q8_0" }),
      testModelKey("smolvlm-tiny"),
    ]);
    expect(keys.size).toBe(4);
    expect(testModelKey("qwen2vl-tiny", { seed: 0, textType: "f32" })).toBe(testModelKey("qwen2vl-tiny"));
  });

  it.each([
    ["qwen2vl-2b-bench", 1536, 28, 151936, 1.5e9, 0.6e9],
    ["smolvlm-256m-bench", 576, 30, 49280, 0.13e9, 0.09e9],
  ])("%s has the real model's dimensions and vocabulary size", async (name, nEmbd, nLayer, nVocab, textParams, visionParams) => {
    const { build } = buildRecipe(name);
    // Only the headers: enough to read every key and tensor shape without writing GBs.
    const meta = async (w: typeof build.text, file: string) => {
      fs.writeFileSync(path.join(tmp, file), w.encodeHeader());
      return metadataOf(path.join(tmp, file));
    };
    const text = await meta(build.text, `${name}.header.gguf`);
    const arch = text.value("general.architecture") as string;
    expect(text.value(`${arch}.embedding_length`)).toBe(nEmbd);
    expect(text.value(`${arch}.block_count`)).toBe(nLayer);
    expect((text.value("tokenizer.ggml.tokens") as string[]).length).toBe(nVocab);
    const count = (infos: { shape: bigint[] }[]) => infos.reduce((n, t) => n + t.shape.reduce((a, b) => a * Number(b), 1), 0);
    expect(count(text.tensorInfos)).toBeGreaterThan(textParams);
    expect(text.tensorInfos.filter((t) => t.shape.length === 2).every((t) => (t.dtype as number) === GGMLType.Q8_0)).toBe(true);
    expect(text.tensorInfos.some((t) => t.name === "output.weight")).toBe(false); // tied, like the real models
    const vision = await meta(build.mmproj, `mmproj-${name}.header.gguf`);
    expect(count(vision.tensorInfos)).toBeGreaterThan(visionParams);
    expect(vision.tensorInfos.filter((t) => t.name.endsWith("attn_q.weight")).every((t) => (t.dtype as number) === GGMLType.F16)).toBe(true);

    const tokens = text.value("tokenizer.ggml.tokens") as string[];
    if (arch === "qwen2vl") {
      expect(tokens.slice(151643, 151657)).toContain("<|vision_start|>");
      expect(tokens[151643]).toBe("<|endoftext|>");
      expect(tokens[151655]).toBe("<|image_pad|>");
      expect(text.value("qwen2vl.rope.dimension_sections")).toEqual([16, 24, 24, 0]);
    } else {
      expect(tokens[49152]).toBe("<global-img>");
      expect(tokens[49189]).toBe("<fake_token_around_image>");
      expect(tokens[49279]).toBe("<end_of_utterance>");
      expect(text.value("tokenizer.ggml.eos_token_id")).toBe(49279);
    }
  });
});

describe.each([
  ["qwen2vl-tiny", "qwen2vl", "qwen2vl_merger", QWEN2VL_CHAT_TEMPLATE],
  ["smolvlm-tiny", "llama", "idefics3", SMOLVLM_CHAT_TEMPLATE],
])("%s", (recipe, arch, projector, template) => {
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
    expect(text.value("tokenizer.chat_template")).toBe(template);
    const tokens = text.value("tokenizer.ggml.tokens") as string[];
    expect(new Set(tokens).size).toBe(tokens.length);
    expect(tokens).toEqual(expect.arrayContaining(BYTE_TO_CHAR as string[]));
    expect((text.value("tokenizer.ggml.merges") as string[]).length).toBeGreaterThan(100);
    const eos = tokens[text.value("tokenizer.ggml.eos_token_id") as number];
    expect(eos).toBe(arch === "qwen2vl" ? "<|im_end|>" : "<end_of_utterance>");
    if (arch === "qwen2vl") {
      for (const s of ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|endoftext|>"]) {
        expect(tokens).toContain(s);
      }
    }
    const mmproj = await metadataOf(files.mmproj);
    expect(mmproj.value("clip.projector_type")).toBe(projector);
  });

  it("reuses the cached files", async () => {
    const again = await ensureTestModel(recipe);
    expect(again.cached).toBe(true);
    expect(again.model).toBe(files.model);
  });

  it("generates 16 tokens on an image with the reference llama-mtmd-cli, identically twice", () => {
    const prompt = "Describe this image.";
    const first = runReference({ model: files.model, mmproj: files.mmproj, images: [image], prompt });
    const second = runReference({ model: files.model, mmproj: files.mmproj, images: [image], prompt });
    expect(first.text.length).toBeGreaterThanOrEqual(16); // 16 printable tokens, each at least one character
    expect(first.text).toMatch(/^[\x20-\x7e]+$/);
    expect(second.text).toBe(first.text);
    // The image reaches the model: another picture of the same size changes the output.
    const other = runReference({ model: files.model, mmproj: files.mmproj, images: [otherImage], prompt });
    expect(other.text).not.toBe(first.text);
  });

  it("generates with a Q8_0 text model", async () => {
    const q8 = await ensureTestModel(recipe, { textType: "q8_0" });
    const info = await metadataOf(q8.model);
    expect(info.tensorInfos.find((t) => t.name === "blk.0.ffn_up.weight")?.dtype).toBe(GGMLType.Q8_0);
    const run = runReference({ model: q8.model, mmproj: q8.mmproj, images: [image], prompt: "Describe this image." });
    expect(run.text).toMatch(/^[\x20-\x7e]{16,}$/);
  });
});

describe("output head and projector type options", () => {
  async function headRows(files: TestModelFiles, ids: number[]) {
    const { tensorInfos, tensorDataOffset, metadata } = await gguf(files.model, { allowLocalFile: true });
    const nEmbd = Number((metadata as Record<string, unknown>)["qwen2vl.embedding_length"]);
    const head = tensorInfos.find((t) => t.name === "output.weight");
    if (!head) return undefined;
    const buf = fs.readFileSync(files.model);
    return ids.map((id) => {
      const at = Number(tensorDataOffset + head.offset) + id * nEmbd * 4;
      return Array.from(new Float32Array(buf.buffer.slice(buf.byteOffset + at, buf.byteOffset + at + nEmbd * 4)));
    });
  }

  it("zeroes the rows of special and non-printable tokens only with the printable head", async () => {
    const printable = await ensureTestModel("qwen2vl-tiny");
    const random = await ensureTestModel("qwen2vl-tiny", { head: "random" });
    const tied = await ensureTestModel("qwen2vl-tiny", { head: "tied" });
    const tokens = (await metadataOf(printable.model)).value("tokenizer.ggml.tokens") as string[];
    const special = [tokens.indexOf("<|im_end|>"), tokens.indexOf("<|vision_start|>"), tokens.indexOf("Ċ"), 0xc3];
    const letter = tokens.indexOf("A");
    const zero = (row: number[]) => row.every((x) => x === 0);
    const p = (await headRows(printable, [...special, letter]))!;
    expect(p.slice(0, 4).every(zero)).toBe(true);
    expect(zero(p[4]!)).toBe(false);
    const r = (await headRows(random, [...special, letter]))!;
    expect(r.some(zero)).toBe(false);
    expect(await headRows(tied, [letter])).toBeUndefined();
  });

  it("writes the projector in F16 on request, and it runs", async () => {
    const files = await ensureTestModel("smolvlm-tiny", { visionType: "f16" });
    const info = await metadataOf(files.mmproj);
    expect(info.tensorInfos.find((t) => t.name === "v.blk.0.attn_q.weight")?.dtype as number).toBe(GGMLType.F16);
    expect(info.tensorInfos.find((t) => t.name === "v.blk.0.ln1.weight")?.dtype as number).toBe(GGMLType.F32);
    const run = runReference({ model: files.model, mmproj: files.mmproj, images: [image], prompt: "Describe this image." });
    expect(run.text).toMatch(/^[\x20-\x7e]{16,}$/);
  });
});

describe("qwen2vl-tiny with two images", () => {
  it("runs a two-image prompt", async () => {
    const files = await ensureTestModel("qwen2vl-tiny");
    const prompt = "Compare the first image <__media__> with the second <__media__>.";
    const both = runReference({ model: files.model, mmproj: files.mmproj, images: [image, wideImage], prompt });
    const again = runReference({ model: files.model, mmproj: files.mmproj, images: [image, wideImage], prompt });
    expect(both.text).toMatch(/^[\x20-\x7e]{16,}$/);
    expect(again.text).toBe(both.text);
    const swapped = runReference({ model: files.model, mmproj: files.mmproj, images: [wideImage, image], prompt });
    // Attention depends on position: the same two images in the other order change the output.
    expect(swapped.text).not.toBe(both.text);
  });
});

describe("gemma3-tiny", () => {
  let files: TestModelFiles;
  beforeAll(async () => {
    files = await ensureTestModel("gemma3-tiny");
  });

  it("is a few MB with Gemma's SentencePiece vocabulary, chat template, sliding window and projector", async () => {
    const size = fs.statSync(files.model).size + fs.statSync(files.mmproj).size;
    expect(size).toBeGreaterThan(1e6);
    expect(size).toBeLessThan(20e6);
    const text = await metadataOf(files.model);
    expect(text.value("general.architecture")).toBe("gemma3");
    expect(text.value("tokenizer.ggml.model")).toBe("llama");
    expect(text.value("tokenizer.chat_template")).toBe(GEMMA3_CHAT_TEMPLATE);
    expect(text.value("tokenizer.ggml.add_bos_token")).toBe(true);
    expect(text.value("tokenizer.ggml.add_space_prefix")).toBe(false);
    const tokens = text.value("tokenizer.ggml.tokens") as string[];
    expect(new Set(tokens).size).toBe(tokens.length);
    expect((text.value("tokenizer.ggml.scores") as number[]).length).toBe(tokens.length);
    expect(tokens.slice(0, 4)).toEqual(["<pad>", "<eos>", "<bos>", "<unk>"]);
    expect(text.value("tokenizer.ggml.bos_token_id")).toBe(2);
    expect(text.value("tokenizer.ggml.eos_token_id")).toBe(1);
    for (const s of ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>", "\n", "\u2581the"]) {
      expect(tokens).toContain(s);
    }
    for (let b = 0; b < 256; b++) expect(tokens).toContain(byteToken(b));
    // Heads do not split n_embd (as in Gemma 3): 2 heads of 64 in a 256-wide model; layer 0 local, layer 1 global.
    expect(text.value("gemma3.attention.key_length")).toBe(64);
    expect(text.value("gemma3.attention.sliding_window")).toBe(512);
    expect(text.value("gemma3.attention.sliding_window_pattern")).toBe(2);
    const shape = (name: string) => text.tensorInfos.find((t) => t.name === name)?.shape.map(Number);
    expect(shape("blk.0.attn_q.weight")).toEqual([256, 128]);
    expect(shape("blk.0.attn_output.weight")).toEqual([128, 256]);
    for (const name of ["attn_q_norm", "attn_k_norm"]) expect(shape(`blk.1.${name}.weight`)).toEqual([64]);
    for (const name of ["post_attention_norm", "post_ffw_norm"]) expect(shape(`blk.1.${name}.weight`)).toEqual([256]);

    const mmproj = await metadataOf(files.mmproj);
    expect(mmproj.value("clip.projector_type")).toBe("gemma3");
    expect(mmproj.value("clip.vision.image_size")).toBe(224);
    expect(mmproj.value("clip.vision.patch_size")).toBe(14);
    expect(mmproj.value("clip.use_gelu")).toBe(true);
    // Pooling 4 is libmtmd's default for gemma3; the converter writes the key only for other values.
    expect(mmproj.value("clip.vision.projector.scale_factor")).toBeUndefined();
    const projection = mmproj.tensorInfos.find((t) => t.name === "mm.input_projection.weight");
    expect(projection?.shape.map(Number)).toEqual([256, 128]);
    expect(projection?.dtype as number).toBe(GGMLType.F16);
    expect(mmproj.tensorInfos.find((t) => t.name === "v.position_embd.weight")?.shape.map(Number)).toEqual([128, 16 * 16]);
  });

  it("imageSize sets the projector's image size; recipes with tiling or dynamic sizes refuse it", async () => {
    const { build, options } = buildRecipe("gemma3-tiny", { imageSize: 448 });
    expect(options.imageSize).toBe(448);
    fs.writeFileSync(path.join(tmp, "gemma3-448.header.gguf"), build.mmproj.encodeHeader());
    const mmproj = await metadataOf(path.join(tmp, "gemma3-448.header.gguf"));
    expect(mmproj.value("clip.vision.image_size")).toBe(448);
    expect(mmproj.tensorInfos.find((t) => t.name === "v.position_embd.weight")?.shape.map(Number)).toEqual([128, 32 * 32]);
    expect(testModelKey("gemma3-tiny", { imageSize: 448 })).not.toBe(testModelKey("gemma3-tiny"));
    expect(testModelKey("gemma3-tiny", { imageSize: 224 })).toBe(testModelKey("gemma3-tiny"));
    expect(buildRecipe("qwen2vl-tiny", { imageSize: 560 }).options.imageSize).toBe(560);
    const bad: [() => unknown, RegExp][] = [
      [() => buildRecipe("gemma3-tiny", { imageSize: 100 }), /multiple of 56 up to 3584 for imageSize but received 100/],
      [() => buildRecipe("gemma3-tiny", { imageSize: 0 }), /for imageSize/],
      [() => buildRecipe("gemma3-tiny", { imageSize: 56 * 65 }), /for imageSize/],
      [() => buildRecipe("qwen2vl-tiny", { imageSize: 448 }), /qwen2vl-tiny has a fixed imageSize \(560\)/],
    ];
    for (const [fn, message] of bad) {
      expect(fn).toThrow(MultimodalLMError);
      expect(fn).toThrow(message);
    }
  });

  it("generates 16 printable tokens on an image with the reference llama-mtmd-cli, identically twice", () => {
    const prompt = "Describe this image.";
    const first = runReference({ model: files.model, mmproj: files.mmproj, images: [image], prompt });
    const second = runReference({ model: files.model, mmproj: files.mmproj, images: [image], prompt });
    expect(first.text).toMatch(/^[\x20-\x7e]{16,}$/);
    expect(second.text).toBe(first.text);
    const other = runReference({ model: files.model, mmproj: files.mmproj, images: [otherImage], prompt });
    expect(other.text).not.toBe(first.text);
  });

  it("generates with a Q8_0 text model and an F16 projector", async () => {
    const q8 = await ensureTestModel("gemma3-tiny", { textType: "q8_0", visionType: "f16" });
    const info = await metadataOf(q8.model);
    expect(info.tensorInfos.find((t) => t.name === "blk.0.ffn_up.weight")?.dtype).toBe(GGMLType.Q8_0);
    const run = runReference({ model: q8.model, mmproj: q8.mmproj, images: [image], prompt: "Describe this image." });
    expect(run.text).toMatch(/^[\x20-\x7e]{16,}$/);
  });

  it("the multibyte head lets out only the byte-fallback tokens of two-byte characters", async () => {
    const mb = await ensureTestModel("gemma3-tiny", { head: "multibyte" });
    const run = runReference({ model: mb.model, mmproj: mb.mmproj, images: [image], prompt: "Describe this image." });
    const bytes = Buffer.from(run.text, "utf8");
    expect(run.text.length).toBeGreaterThan(0);
    // Valid pairs decode to é, û, Ω, λ; invalid sequences come out as U+FFFD.
    expect(run.text).toMatch(/^[\u00e9\u00fb\u03a9\u03bb\ufffd]+$/);
    expect(bytes.length).toBeGreaterThan(0);
  });
});

describe("test-model CLI", () => {
  const cli = path.join(packageRoot, "lib", "test-models", "cli.js");
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });

  it("writes a recipe and a test image to the chosen directory", () => {
    const out = path.join(tmp, "cli-out");
    const r = run("smolvlm-tiny", "--out", out, "--seed", "5", "--image");
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(["mmproj-smolvlm-tiny.gguf", "smolvlm-tiny.gguf", "test-image.png"]);
    expect(r.stdout).toContain('"seed":5');
  });

  it("resolves --out against the directory npm was run from (INIT_CWD)", () => {
    const r = spawnSync(process.execPath, [cli, "qwen2vl-tiny", "--out", "rel-out"], {
      encoding: "utf8",
      env: { ...process.env, INIT_CWD: tmp },
    });
    expect(r.status).toBe(0);
    expect(fs.readdirSync(path.join(tmp, "rel-out")).sort()).toEqual(["mmproj-qwen2vl-tiny.gguf", "qwen2vl-tiny.gguf"]);
  });

  it("exits 1, not 2, when the output cannot be written", () => {
    const blocker = path.join(tmp, "a-file");
    fs.writeFileSync(blocker, "");
    const r = run("qwen2vl-tiny", "--out", path.join(blocker, "sub"));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^test-model: .*(ENOTDIR|EEXIST)/);
  });

  it("lists the recipes", () => {
    const r = run("--list");
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split("\n").map((l) => l.split("\t")[0])).toEqual(RECIPES.map((x) => x.name));
  });

  it.each([
    [["nope"], /Unknown test-model recipe "nope"/],
    [["qwen2vl-tiny", "--seed", "x"], /Expected an integer for --seed but received "x"/],
    [["qwen2vl-tiny", "--text-type", "q4_0"], /for textType/],
    [["gemma3-tiny", "--image-size", "x"], /Expected an integer for --image-size but received "x"/],
    [["gemma3-tiny", "--image-size", "100"], /multiple of 56 up to 3584 for imageSize/],
    [["qwen2vl-tiny", "--image-size", "448"], /fixed imageSize/],
    [[], /Expected exactly one recipe name/],
    [["qwen2vl-tiny", "--bogus"], /Unknown option '--bogus'/],
  ])("fails with a usage error for %j", (args, message) => {
    const r = run(...args, "--out", path.join(tmp, "never"));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(fs.existsSync(path.join(tmp, "never"))).toBe(false);
  });
});
