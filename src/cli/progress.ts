// Progress bars on stderr for model loading and frame extraction. Drawn only on a terminal:
// piped stderr (logs, tests) stays free of control characters.
import { Presets, SingleBar } from "cli-progress";

export interface Progress {
  /** The fraction done, 0 to 1. Never moves the bar backwards. */
  update(fraction: number): void;
  /** Removes the bar. Safe to call twice, or when nothing was drawn. */
  stop(): void;
}

const quiet: Progress = { update: () => {}, stop: () => {} };

export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY) return quiet;
  let bar: SingleBar | undefined;
  let value = 0;
  return {
    update(fraction) {
      // Several videos of one request report into the same callback; keep the furthest.
      const percent = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
      if (bar && percent <= value) return;
      value = percent;
      if (!bar) {
        // Created on the first report, so a step that finishes at once draws nothing.
        bar = new SingleBar({ format: `${label} [{bar}] {percentage}%`, stream, clearOnComplete: true, hideCursor: true }, Presets.shades_classic);
        bar.start(100, value);
      } else {
        bar.update(value);
      }
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}
