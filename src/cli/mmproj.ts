// Finds the projector that belongs to a model when --mmproj is not given. Model repositories
// ship it beside the text model as mmproj*.gguf (llama.cpp's convert_hf_to_gguf.py --mmproj names it so).
import { readdir, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

import { FileNotFoundError, MultimodalLMError } from "../errors.js";

export interface ModelFiles {
  model: string;
  mmproj: string;
}

/**
 * The model and its projector: `mmproj` when given, else the only mmproj*.gguf beside the model,
 * or among several the one named after the model (mmproj-<model>.gguf first, then the only one
 * whose name contains the model's name).
 */
export async function resolveModelFiles(model: string, mmproj?: string): Promise<ModelFiles> {
  try {
    await stat(model);
  } catch (error) {
    throw new FileNotFoundError(model, `The model file ${model} does not exist. Check the path.`, { cause: error });
  }
  if (mmproj !== undefined) return { model, mmproj };
  return { model, mmproj: await findMmproj(model) };
}

export async function findMmproj(model: string): Promise<string> {
  const dir = dirname(model);
  const own = basename(model).toLowerCase();
  const candidates = (await readdir(dir))
    .filter((name) => /^mmproj.*\.gguf$/i.test(name) && name.toLowerCase() !== own)
    .sort();
  if (candidates.length === 1) return join(dir, candidates[0]!);
  if (candidates.length === 0) {
    throw new FileNotFoundError(
      join(dir, "mmproj*.gguf"),
      `No projector (mmproj*.gguf) found beside ${model}. Pass the model's multimodal projector with --mmproj <file.gguf>.`,
    );
  }
  const base = own.replace(/\.gguf$/, "");
  const exact = candidates.find((name) => name.toLowerCase() === `mmproj-${base}.gguf`);
  if (exact) return join(dir, exact);
  const named = candidates.filter((name) => name.toLowerCase().includes(base));
  if (named.length === 1) return join(dir, named[0]!);
  throw new MultimodalLMError(
    "E_INVALID_ARGUMENT",
    `Several projectors found beside ${model}: ${candidates.join(", ")}. Pick one with --mmproj <file.gguf>.`,
  );
}
