// Shared by the examples: the bundled assets, the --model/--mmproj options, loading the model
// (the tiny generated test model when no --model is given), and parsing the options.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsConfig } from "node:util";

import { MultimodalLM, type LoadOptions } from "multimodal-lm";
import { ensureTestModel } from "multimodal-lm/test-models";

/** The repository's assets/ folder: sample.png, sample-2.png and sample.mp4. */
export const assetsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "assets");

/** The path of a bundled asset, e.g. asset("sample.png"). */
export function asset(name: string): string {
  return path.join(assetsDir, name);
}

/** The options every model-using example takes; spread them into parseArgs' options. */
export const modelOptions = {
  model: { type: "string" },
  mmproj: { type: "string" },
} as const;

/** parseArgs options for `--prompt` and `--max-tokens`. */
export const generationOptions = {
  prompt: { type: "string" },
  "max-tokens": { type: "string" },
} as const;

/** Prints `error: message` and exits with code 2 (a usage error). */
export function usageError(message: string): never {
  console.error(`error: ${message}`);
  process.exit(2);
}

/** node:util's parseArgs (strict: unknown options are refused), with its errors as usage errors. */
export function parseOptions<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    if (code.startsWith("ERR_PARSE_ARGS")) usageError((error as Error).message);
    throw error;
  }
}

/**
 * The model files: `--model` with `--mmproj`, or without `--model` the tiny generated Qwen2-VL
 * test model (random weights: gibberish text, but every step runs for real; cached in .cache/).
 */
export async function modelFiles(values: { model?: string; mmproj?: string }): Promise<{ model: string; mmproj: string }> {
  if (values.model === undefined) {
    if (values.mmproj !== undefined) usageError("--mmproj was given without --model. Pass both: --model <model.gguf> --mmproj <mmproj.gguf>.");
    return ensureTestModel("qwen2vl-tiny");
  }
  if (values.mmproj === undefined) {
    usageError(
      `--model ${values.model} needs its multimodal projector too: pass --mmproj <mmproj.gguf> ` +
        "(the mmproj*.gguf file published with the model; `npx multimodal-lm describe` finds it beside the model by itself).",
    );
  }
  return { model: values.model, mmproj: values.mmproj };
}

/** Loads the model named by `--model`/`--mmproj`, or the tiny test model; says which on stderr. */
export async function loadModel(values: { model?: string; mmproj?: string }, options: Omit<LoadOptions, "model" | "mmproj"> = {}): Promise<MultimodalLM> {
  const files = await modelFiles(values);
  const name = values.model === undefined ? "the tiny random-weight test model qwen2vl-tiny (its text is gibberish)" : path.basename(files.model);
  console.error(`loading ${name}`);
  return MultimodalLM.load({ ...options, model: files.model, mmproj: files.mmproj });
}

/** A number option (`--fps 1.5`), or `fallback` when it is not given. */
export function numberOption(value: string | undefined, flag: string, fallback: number): number;
export function numberOption(value: string | undefined, flag: string, fallback?: number): number | undefined;
export function numberOption(value: string | undefined, flag: string, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (value.trim() === "" || !Number.isFinite(number) || number <= 0) usageError(`${flag} takes a positive number, not ${JSON.stringify(value)}.`);
  return number;
}

/** A whole-number option (`--max-tokens 64`), or `fallback` when it is not given. */
export function integerOption(value: string | undefined, flag: string, fallback: number): number;
export function integerOption(value: string | undefined, flag: string, fallback?: number): number | undefined;
export function integerOption(value: string | undefined, flag: string, fallback?: number): number | undefined {
  const number = numberOption(value, flag, fallback);
  if (number !== undefined && !Number.isInteger(number)) usageError(`${flag} takes a whole number, not ${JSON.stringify(value)}.`);
  return number;
}
