// Shared by the examples: streaming text to stdout, and one-line summaries of a result.
import type { GenerateResult, TextStream } from "multimodal-lm";

/** Writes the pieces to stdout as they come, ends the line, and resolves to the result. */
export async function printStream(stream: TextStream<GenerateResult>): Promise<GenerateResult> {
  for await (const piece of stream) process.stdout.write(piece);
  process.stdout.write("\n");
  return stream.result;
}

const ms = (value: number) => `${value.toFixed(1)} ms`;

/** "95 prompt tokens (64 from 1 media chunks), 16 generated (length)" */
export function usageLine({ usage, stopReason }: GenerateResult): string {
  return `${usage.promptTokens} prompt tokens (${usage.mediaTokens} from ${usage.mediaChunks} media chunks), ${usage.completionTokens} generated (${stopReason})`;
}

/** Load, encode, prompt and generation times, the speeds, time to first token and total. */
export function timingsLine({ timings }: GenerateResult): string {
  return (
    `media load ${ms(timings.imageLoadMs)}, encode ${ms(timings.encodeMs)}, prompt ${ms(timings.promptMs)} ` +
    `(${timings.promptTokensPerSecond.toFixed(0)} tok/s), generation ${ms(timings.generationMs)} ` +
    `(${timings.generationTokensPerSecond.toFixed(0)} tok/s), first token ${ms(timings.timeToFirstTokenMs)}, total ${ms(timings.totalMs)}`
  );
}

/** What the KV prefix reuse and the image cache saved. */
export function cacheLine({ cache }: GenerateResult): string {
  return (
    `KV cache: ${cache.reusedPositions} positions reused (${cache.reusedTokens} tokens), ${cache.evaluatedPositions} evaluated; ` +
    `image cache: ${cache.imageCacheHits} hits, ${cache.imageCacheMisses} misses, ${cache.encodedChunks} chunks encoded`
  );
}
