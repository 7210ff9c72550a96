// What the CLI prints about errors and results.
import { inspect } from "node:util";

import { MultimodalLMError } from "../errors.js";
import type { GenerateResult } from "../multimodal-lm.js";

/** Prints an error; the library's own errors as one line, anything else (a bug) with its stack. Returns the exit code. */
export function reportError(error: unknown, stream: NodeJS.WritableStream = process.stderr): number {
  if (error instanceof MultimodalLMError) stream.write(`multimodal-lm: ${error.message}\n`);
  else stream.write(`multimodal-lm: unexpected error\n${inspect(error)}\n`);
  return 1;
}

export function isAbortError(error: unknown): boolean {
  return error instanceof MultimodalLMError && error.code === "E_ABORTED";
}

/** One line of token counts and speeds, for --verbose. */
export function summary({ usage, timings, stopReason }: GenerateResult): string {
  const media = usage.mediaTokens > 0 ? ` (${usage.mediaTokens} from media)` : "";
  return (
    `${usage.promptTokens} prompt tokens${media}, ${usage.completionTokens} generated (${stopReason}); ` +
    `prompt ${timings.promptMs.toFixed(0)} ms at ${timings.promptTokensPerSecond.toFixed(1)} tok/s, ` +
    `generation ${timings.generationMs.toFixed(0)} ms at ${timings.generationTokensPerSecond.toFixed(1)} tok/s, ` +
    `total ${timings.totalMs.toFixed(0)} ms`
  );
}
