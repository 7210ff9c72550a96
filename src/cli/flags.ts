// Flags shared by the commands, and their translation into the library's options.
// Number flags are checked while parsing, so a typo fails before a model is loaded.
import { Option, type Command } from "commander";

import { TEMPERATURE_MAX, type LoadOptions, type SamplingOptions } from "../options.js";
import type { CallVideoOptions } from "../multimodal-lm.js";

interface NumberSpec {
  integer?: boolean;
  /** Smallest value allowed (inclusive). */
  min?: number;
  /** Largest value allowed (inclusive). */
  max?: number;
  /** Must be greater than 0. */
  positive?: boolean;
  /** Words accepted as they are, e.g. "auto". */
  words?: string[];
}

function expectation(spec: NumberSpec): string {
  let text = spec.integer ? "an integer" : "a number";
  if (spec.positive) text += " greater than 0";
  else if (spec.min !== undefined && spec.max !== undefined) text += ` from ${spec.min} to ${spec.max}`;
  else if (spec.min !== undefined) text += ` of at least ${spec.min}`;
  if (spec.words?.length) text += ` or ${spec.words.map((w) => `"${w}"`).join(", ")}`;
  return text;
}

/** The flag's value as a number (or one of its words); undefined when it is not one. */
export function parseNumberFlag(value: string, spec: NumberSpec): number | string | undefined {
  if (spec.words?.includes(value)) return value;
  const n = value.trim() === "" ? NaN : Number(value);
  if (!Number.isFinite(n)) return undefined;
  if (spec.integer && !Number.isInteger(n)) return undefined;
  if (spec.positive && !(n > 0)) return undefined;
  if (spec.min !== undefined && n < spec.min) return undefined;
  if (spec.max !== undefined && n > spec.max) return undefined;
  return n;
}

/** Adds a number-valued flag whose bad values end the program with "error: --fps expects a number ...". */
export function addNumberOption(command: Command, flags: string, description: string, spec: NumberSpec = {}, defaultValue?: number): Command {
  const option = new Option(flags, description);
  option.argParser((value: string) => {
    const parsed = parseNumberFlag(value, spec);
    if (parsed === undefined) {
      command.error(`error: ${option.long} expects ${expectation(spec)}, got ${JSON.stringify(value)}`, { code: "commander.invalidArgument" });
    }
    return parsed;
  });
  if (defaultValue !== undefined) option.default(defaultValue);
  return command.addOption(option);
}

/** A list flag that may be repeated and takes comma-separated values. */
export function collectList(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(",").map((item) => item.trim()).filter((item) => item.length > 0)];
}

export interface LoadFlags {
  mmproj?: string;
  ctxSize?: number;
  parallel?: number;
  /** Set by commands that offer --parallel. */
  slots?: boolean;
  threads?: number;
  gpuLayers?: number | "auto";
  imageCacheMb?: number;
  reusePrefix?: boolean;
  chatTemplateFile?: string;
  /** serve: where the engine runs. */
  isolation?: "process" | "none";
  rpc?: string[];
}

export interface SamplingFlags {
  maxTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export interface VideoFlags {
  fps?: number;
  maxFrames?: number;
  numFrames?: number;
  videoAudio?: boolean;
}

export const MODEL_ENV = "MULTIMODAL_LM_MODEL";

/** -m/--model (required; also from MULTIMODAL_LM_MODEL), for commands that take the model as a flag. */
export function addModelOption(command: Command): Command {
  return command.addOption(new Option("-m, --model <gguf>", "text model GGUF file").env(MODEL_ENV).makeOptionMandatory());
}

/** The model flags; `slots` adds --parallel, for commands that serve several requests at once. */
export function addLoadOptions(command: Command, { slots = false }: { slots?: boolean } = {}): Command {
  command.option("--mmproj <gguf>", "multimodal projector GGUF (default: the mmproj*.gguf beside the model)");
  addNumberOption(command, "--ctx-size <n>", "context window of a request in tokens (default: the model's, at most 8192)", { integer: true, min: 16 });
  if (slots) {
    command.addOption(
      new Option("--isolation <mode>", 'where the engine runs: "process" (a supervised child process: a llama.cpp crash fails its requests and the engine restarts) or "none" (in this process)')
        .choices(["process", "none"])
        .default("process"),
    );
    addNumberOption(command, "--parallel <n>", "slots: requests decoded together, each with its own --ctx-size of KV cache (default: 4)", {
      integer: true,
      min: 1,
      max: 64,
    });
  }
  addNumberOption(command, "--threads <n>", "CPU threads (default: the physical cores)", { integer: true, min: 1 });
  addNumberOption(command, "--gpu-layers <n|auto>", 'text-model layers to offload to the GPU (default: "auto", all)', { integer: true, min: 0, words: ["auto"] });
  addNumberOption(command, "--image-cache-mb <n>", "bound of the image embedding cache in MiB; 0 turns it off (default: 128)", { min: 0 });
  command.option("--no-reuse-prefix", "evaluate every prompt from the start instead of reusing what the KV cache holds");
  command.option("--rpc <host:port,...>", "RPC servers (multimodal-lm rpc-server) whose CPUs take layers of the model, as llama.cpp's --rpc", (value: string, previous: string[] = []) => [
    ...previous,
    ...value.split(",").map((s) => s.trim()).filter(Boolean),
  ]);
  command.option("--chat-template-file <jinja>", "a Jinja chat template to use instead of the model's own (e.g. one that supports tools, from llama.cpp's models/templates)");
  return command;
}

export function addSamplingOptions(command: Command): Command {
  addNumberOption(command, "-n, --max-tokens <n>", "most tokens to generate (default: until the model stops)", { integer: true, min: 0 });
  addNumberOption(command, "--temperature <t>", `sampling temperature from 0 (greedy) to ${TEMPERATURE_MAX} (default: 0.8)`, { min: 0, max: TEMPERATURE_MAX });
  addNumberOption(command, "--top-k <k>", "keep the k most likely tokens; 0 keeps all (default: 40)", { integer: true, min: 0 });
  addNumberOption(command, "--top-p <p>", "nucleus sampling; 1 disables it (default: 0.95)", { min: 0, max: 1 });
  addNumberOption(command, "--seed <n>", "sampling seed (default: random)", { integer: true, min: 0 });
  return command;
}

export function addVideoOptions(command: Command): Command {
  addNumberOption(command, "--fps <n>", "video frames sampled per second (default: 2)", { positive: true });
  addNumberOption(command, "--max-frames <n>", "at most this many frames per video (default: 32)", { integer: true, min: 1 });
  addNumberOption(command, "--num-frames <n>", "exactly this many frames per video, spread evenly (overrides --fps, --max-frames)", { integer: true, min: 1 });
  command.option("--video-audio", "also send each video's sound track, after its frames (omni models such as Qwen2.5-Omni)");
  return command;
}

// Only the flags that were given: the library's defaults apply to the rest.
function defined<T extends object>(object: T): T {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined)) as T;
}

export function loadOptionsFrom(flags: LoadFlags): Omit<LoadOptions, "model" | "mmproj"> {
  return defined({
    contextSize: flags.ctxSize,
    // One request at a time (describe, chat) needs one slot; serve takes --parallel.
    parallel: flags.parallel ?? (flags.slots ? undefined : 1),
    threads: flags.threads,
    gpuLayers: flags.gpuLayers,
    imageCacheBytes: flags.imageCacheMb === undefined ? undefined : Math.round(flags.imageCacheMb * 1024 * 1024),
    reusePrefix: flags.reusePrefix,
    isolation: flags.isolation,
    rpc: flags.rpc,
  });
}

export function samplingFrom(flags: SamplingFlags): SamplingOptions {
  return defined({ maxTokens: flags.maxTokens, temperature: flags.temperature, topK: flags.topK, topP: flags.topP, seed: flags.seed });
}

export function videoFrom(flags: VideoFlags): CallVideoOptions {
  return defined({ fps: flags.fps, maxFrames: flags.maxFrames, numFrames: flags.numFrames, audio: flags.videoAudio });
}
