import { createHash } from "node:crypto";
import { access, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { readFileSync, readdirSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MultimodalLMError } from "../errors.js";
import { GGMLType } from "../gguf/types.js";
import type { GGUFWriter } from "../gguf/writer.js";
import type { HeadKind } from "./layers.js";
export type { HeadKind } from "./layers.js";
import { GEMMA3_TINY, buildGemma3, gemma3Cell } from "./gemma3.js";
import { QWEN2VL_2B, QWEN2VL_TINY, buildQwen2VL } from "./qwen2vl.js";
import { SMOLVLM_256M, SMOLVLM_TINY, buildSmolVLM } from "./smolvlm.js";
import { QWEN2AUDIO_TINY, buildQwen2Audio } from "./qwen2audio.js";
import { ULTRAVOX_TINY, buildUltravox } from "./ultravox.js";
import { ULTRAVOX_BENCH } from "./ultravox.js";
import { QWEN25OMNI_TINY, buildQwen25Omni } from "./qwen25omni.js";
import { audioRecipe } from "./whisper.js";

/**
 * Hash of the generator's own code (this folder and the GGUF writer). It is part of every cache
 * key, so any change to weights, tokenizer or metadata regenerates cached models.
 */
let generatorHash: string | undefined;
function generatorVersion(): string {
  if (generatorHash === undefined) {
    const hash = createHash("sha256");
    const here = dirname(fileURLToPath(import.meta.url));
    for (const dir of [here, join(here, "..", "gguf")]) {
      for (const file of readdirSync(dir).filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith(".d.ts")).sort()) {
        hash.update(file).update(readFileSync(join(dir, file)));
      }
    }
    generatorHash = hash.digest("hex");
  }
  return generatorHash;
}

export type MatrixTypeName = "f32" | "f16" | "q8_0";

const MATRIX_TYPES: Record<MatrixTypeName, GGMLType> = { f32: GGMLType.F32, f16: GGMLType.F16, q8_0: GGMLType.Q8_0 };

/** What a caller may choose; every field has a per-recipe default. */
export interface TestModelOptions {
  /** Seed of every weight (unsigned 32-bit). Default 0. */
  seed?: number;
  /** Type of the text model's matrices. Tiny recipes default to f32, bench recipes to q8_0. */
  textType?: MatrixTypeName;
  /** Type of the projector's matrices. Tiny recipes default to f32, bench recipes to f16. */
  visionType?: MatrixTypeName;
  /**
   * Output head. `printable` (tiny default): untied, and the rows of special, unused and
   * non-printable tokens are zero, so greedy decoding always yields exactly `-n` printable
   * tokens. `random`: untied, any token including EOS can come out. `tied` (bench default):
   * reuses token_embd, as the real models do. `multibyte`: only a few UTF-8 lead and
   * continuation byte tokens come out (for streaming tests).
   */
  head?: HeadKind;
  /**
   * The projector's `clip.vision.image_size`. Only a recipe whose projector resizes every image
   * to one square (gemma3-tiny) accepts another value than its default, a multiple of its
   * patch size times its pooling: tokens per image = (imageSize / patch / pooling)^2.
   */
  imageSize?: number;
}

export interface RecipeOptions {
  seed: number;
  textType: GGMLType;
  visionType: GGMLType;
  head: HeadKind;
  /** Set only when it differs from the recipe's default (recipes with `imageSizeStep`). */
  imageSize?: number;
}

export interface RecipeBuild {
  text: GGUFWriter;
  mmproj: GGUFWriter;
}

export interface Recipe {
  name: string;
  kind: "tiny" | "bench";
  description: string;
  defaults: Required<Omit<TestModelOptions, "seed">>;
  /** imageSize may be any positive multiple of this; undefined: only the default. */
  imageSizeStep?: number;
  /** The dimensions the recipe writes; part of the cache key. */
  shape: object;
  build(options: RecipeOptions): RecipeBuild;
}

const TINY_DEFAULTS = { textType: "f32", visionType: "f32", head: "printable" } as const;
const BENCH_DEFAULTS = { textType: "q8_0", visionType: "f16", head: "tied" } as const;

function recipe<S extends { vision: { imageSize: number } }>(
  name: string,
  kind: Recipe["kind"],
  description: string,
  shape: S,
  build: (shape: S, options: RecipeOptions) => RecipeBuild,
  imageSizeStep?: number,
): Recipe {
  const defaults = { ...(kind === "tiny" ? TINY_DEFAULTS : BENCH_DEFAULTS), imageSize: shape.vision.imageSize };
  return { name, kind, description, defaults, imageSizeStep, shape, build: (o) => build(shape, o) };
}

export const RECIPES: readonly Recipe[] = [
  recipe("qwen2vl-tiny", "tiny", "Qwen2-VL family (qwen2vl + qwen2vl_merger, M-RoPE, 2-frame temporal merge), a few MB", QWEN2VL_TINY, buildQwen2VL),
  recipe("smolvlm-tiny", "tiny", "SmolVLM family (llama + idefics3, image tiling), a few MB", SMOLVLM_TINY, buildSmolVLM),
  recipe(
    "gemma3-tiny",
    "tiny",
    "Gemma 3 family (gemma3 + gemma3: SentencePiece, sliding window, images decoded with non-causal attention), a few MB",
    GEMMA3_TINY,
    buildGemma3,
    gemma3Cell(GEMMA3_TINY),
  ),
  audioRecipe(
    "ultravox-tiny",
    "Ultravox family (llama 3 + ultravox: Whisper encoder, 8-frame stacking, 187 tokens per 30 s of audio), audio only, a few MB",
    ULTRAVOX_TINY,
    buildUltravox,
  ),
  audioRecipe(
    "qwen2audio-tiny",
    "Qwen2-Audio family (qwen2 + qwen2a: Whisper encoder, <|audio_bos|>/<|audio_eos|>, 750 tokens per 30 s of audio), audio only, a few MB",
    QWEN2AUDIO_TINY,
    buildQwen2Audio,
  ),
  recipe(
    "qwen25omni-tiny",
    "tiny",
    "Qwen2.5-Omni family (qwen2vl + qwen2.5o: a Qwen2.5-VL vision tower with window attention and a Whisper audio encoder in one projector), images, video and audio, a few MB",
    QWEN25OMNI_TINY,
    buildQwen25Omni,
  ),
  recipe(
    "qwen2vl-2b-bench",
    "bench",
    "Random weights with Qwen2-VL-2B-Instruct's dimensions, for speed measurement only (about 3 GB)",
    QWEN2VL_2B,
    buildQwen2VL,
  ),
  recipe(
    "smolvlm-256m-bench",
    "bench",
    "Random weights with SmolVLM-256M-Instruct's dimensions, for speed measurement only (about 330 MB)",
    SMOLVLM_256M,
    buildSmolVLM,
  ),
  {
    ...audioRecipe(
      "ultravox-bench",
      "Random weights with Ultravox v0.5 Llama-3.2-1B's dimensions (Whisper large-v3-turbo encoder, Llama-3.2-1B text), audio only, for speed measurement only (about 2.4 GB)",
      ULTRAVOX_BENCH,
      buildUltravox,
    ),
    kind: "bench",
    defaults: { ...BENCH_DEFAULTS, imageSize: 0 },
  },
];

function invalid(message: string): MultimodalLMError {
  return new MultimodalLMError("E_INVALID_ARGUMENT", message);
}

export function getRecipe(name: string): Recipe {
  const recipe = RECIPES.find((r) => r.name === name);
  if (!recipe) {
    throw invalid(`Unknown test-model recipe "${name}". Available: ${RECIPES.map((r) => r.name).join(", ")}`);
  }
  return recipe;
}

/** Defaults filled in and every option validated. */
export function resolveOptions(recipe: Recipe, options: TestModelOptions = {}): Required<TestModelOptions> {
  const o = { seed: 0, ...recipe.defaults, ...stripUndefined(options) };
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) {
    throw invalid(`Expected an integer 0..4294967295 for seed but received ${String(o.seed)}`);
  }
  for (const key of ["textType", "visionType"] as const) {
    if (!Object.hasOwn(MATRIX_TYPES, o[key])) {
      throw invalid(`Expected one of ${Object.keys(MATRIX_TYPES).join(", ")} for ${key} but received ${String(o[key])}`);
    }
  }
  if (!["printable", "random", "tied", "multibyte"].includes(o.head)) {
    throw invalid(`Expected printable, random, tied or multibyte for head but received ${String(o.head)}`);
  }
  if (o.imageSize !== recipe.defaults.imageSize) {
    const step = recipe.imageSizeStep;
    if (step === undefined) {
      throw invalid(`Recipe ${recipe.name} has a fixed imageSize (${recipe.defaults.imageSize}) but received ${String(o.imageSize)}`);
    }
    if (!Number.isInteger(o.imageSize) || o.imageSize <= 0 || o.imageSize % step !== 0 || o.imageSize > 64 * step) {
      throw invalid(`Expected a multiple of ${step} up to ${64 * step} for imageSize but received ${String(o.imageSize)}`);
    }
  }
  return o;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export interface TestModelFiles {
  recipe: string;
  options: Required<TestModelOptions>;
  /** Text model GGUF. */
  model: string;
  /** Projector (mmproj) GGUF. */
  mmproj: string;
  bytes: number;
}

export interface RecipeProgress {
  file: string;
  bytesWritten: number;
  totalBytes: number;
}

/** Build a recipe's two writers (no I/O yet). */
export function buildRecipe(name: string, options: TestModelOptions = {}): { recipe: Recipe; options: Required<TestModelOptions>; build: RecipeBuild } {
  const recipe = getRecipe(name);
  const o = resolveOptions(recipe, options);
  const build = recipe.build({
    seed: o.seed,
    textType: MATRIX_TYPES[o.textType],
    visionType: MATRIX_TYPES[o.visionType],
    head: o.head,
    ...(o.imageSize !== recipe.defaults.imageSize ? { imageSize: o.imageSize } : {}),
  });
  return { recipe, options: o, build };
}

/**
 * Write a recipe's model and projector into `dir` as `<recipe>.gguf` and `mmproj-<recipe>.gguf`.
 * Files appear only when complete.
 */
export async function writeTestModel(
  name: string,
  dir: string,
  options: TestModelOptions & { onProgress?: (p: RecipeProgress) => void; signal?: AbortSignal } = {},
): Promise<TestModelFiles> {
  const { onProgress, signal, ...modelOptions } = options;
  const { recipe, options: o, build } = buildRecipe(name, modelOptions);
  await mkdir(dir, { recursive: true });
  const model = join(dir, `${recipe.name}.gguf`);
  const mmproj = join(dir, `mmproj-${recipe.name}.gguf`);
  const totalBytes = build.text.totalBytes + build.mmproj.totalBytes;
  let done = 0;
  for (const [writer, path] of [
    [build.text, model],
    [build.mmproj, mmproj],
  ] as const) {
    const before = done;
    const r = await writer.write(path, {
      signal,
      onProgress: (p) => onProgress?.({ file: path, bytesWritten: before + p.bytesWritten, totalBytes }),
    });
    done += r.bytes;
  }
  return { recipe: recipe.name, options: o, model, mmproj, bytes: done };
}

/** Cache key of a recipe with resolved options: changes whenever the generated bytes would. */
export function testModelKey(name: string, options: TestModelOptions = {}): string {
  const recipe = getRecipe(name);
  const o = resolveOptions(recipe, options);
  const hash = createHash("sha256")
    .update(JSON.stringify({ generator: generatorVersion(), recipe: recipe.name, shape: recipe.shape, ...o }))
    .digest("hex")
    .slice(0, 12);
  return `${recipe.name}-s${o.seed}-${hash}`;
}

const MANIFEST = "test-model.json";

/**
 * The recipe's files from `cacheDir/<key>/`, generating them first if they are not there yet.
 * A manifest written last marks a complete entry. Every file is renamed into place whole, so
 * concurrent callers (parallel test workers) at worst generate the same bytes twice.
 */
export async function ensureTestModel(
  name: string,
  options: TestModelOptions & { cacheDir?: string; onProgress?: (p: RecipeProgress) => void } = {},
): Promise<TestModelFiles & { cached: boolean }> {
  const { cacheDir = defaultCacheDir(), onProgress, ...modelOptions } = options;
  const dir = join(cacheDir, testModelKey(name, modelOptions));
  try {
    const manifest = JSON.parse(await readFile(join(dir, MANIFEST), "utf8")) as TestModelFiles;
    const files = { ...manifest, model: join(dir, basename(manifest.model)), mmproj: join(dir, basename(manifest.mmproj)) };
    await Promise.all([access(files.model), access(files.mmproj)]);
    return { ...files, cached: true };
  } catch {
    // Not cached yet, or incomplete: generate below.
  }
  const files = await writeTestModel(name, dir, { ...modelOptions, onProgress });
  const tmp = join(dir, `.${MANIFEST}.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(files, null, 2));
  await rename(tmp, join(dir, MANIFEST));
  return { ...files, cached: false };
}

/** `MULTIMODAL_LM_TEST_MODELS` if set, else `.cache/test-models` in the working directory. */
export function defaultCacheDir(): string {
  return process.env.MULTIMODAL_LM_TEST_MODELS || join(process.cwd(), ".cache", "test-models");
}
