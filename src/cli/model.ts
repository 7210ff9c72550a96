// Loading the model for a command: find the projector, show progress, honour Ctrl-C.
import { readFile } from "node:fs/promises";

import { FileNotFoundError } from "../errors.js";
import { MultimodalLM } from "../multimodal-lm.js";
import { loadOptionsFrom, type LoadFlags } from "./flags.js";
import { resolveModelFiles } from "./mmproj.js";
import { progressBar } from "./progress.js";

export async function loadModel(model: string, flags: LoadFlags, signal?: AbortSignal): Promise<MultimodalLM> {
  const files = await resolveModelFiles(model, flags.mmproj);
  const chatTemplate = flags.chatTemplateFile === undefined ? undefined : await readTemplate(flags.chatTemplateFile);
  const progress = progressBar("loading model");
  try {
    return await MultimodalLM.load({
      ...files,
      ...loadOptionsFrom(flags),
      ...(chatTemplate !== undefined ? { chatTemplate } : {}),
      onProgress: (fraction) => progress.update(fraction),
      ...(signal ? { signal } : {}),
    });
  } finally {
    progress.stop();
  }
}

/** Runs `use` with the loaded model and always disposes it. */
export async function withModel<T>(model: string, flags: LoadFlags, signal: AbortSignal | undefined, use: (lm: MultimodalLM) => Promise<T>): Promise<T> {
  const lm = await loadModel(model, flags, signal);
  try {
    return await use(lm);
  } finally {
    await lm.dispose();
  }
}

async function readTemplate(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new FileNotFoundError(path, `The chat template file ${path} (--chat-template-file) could not be read: ${(error as Error).message}. Check the path.`, { cause: error });
  }
}
