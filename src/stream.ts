// A generation in progress: an AsyncIterable of text pieces (or of every event, through
// events()) plus the final result.
import type { StreamEvent } from "./structured.js";

/** Text pieces as they are generated; `result` settles when generation ends. */
export interface TextStream<Result> extends AsyncIterable<string> {
  /** The final result (the same text the pieces add up to, plus usage and timings). */
  readonly result: Promise<Result>;
  /** Stops generation; the iteration ends and `result` rejects with `AbortError`. */
  abort(): void;
  /**
   * Every event instead of text only: text, tool-call deltas (a call's id and name first, then
   * its arguments as they grow) and, with `logprobs`, each token's log-probability. Iterate
   * either the stream or its events, not both.
   */
  events(): AsyncIterable<StreamEvent>;
}

/**
 * Events are pushed by the producer; the consumer pulls. Leaving a `for await` loop early
 * aborts the generation.
 */
export class PieceQueue<Result> implements TextStream<Result> {
  readonly result: Promise<Result>;
  private readonly queued: StreamEvent[] = [];
  private waiting: ((r: IteratorResult<StreamEvent>) => void) | undefined;
  private failWaiting: ((e: unknown) => void) | undefined;
  private done = false;
  private error: unknown;

  constructor(
    start: (push: (event: StreamEvent) => void) => Promise<Result>,
    private readonly stop: () => void,
  ) {
    this.result = start((event) => this.push(event)).then(
      (value) => {
        this.finish(undefined);
        return value;
      },
      (error: unknown) => {
        this.finish(error);
        throw error;
      },
    );
    // Iterating consumers see the error through next(); don't also report it as unhandled.
    this.result.catch(() => {});
  }

  abort(): void {
    this.stop();
  }

  private push(event: StreamEvent): void {
    if (this.done) return; // an aborted request settles at once; the engine may still send a piece
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = this.failWaiting = undefined;
      resolve({ value: event, done: false });
    } else {
      this.queued.push(event);
    }
  }

  private finish(error: unknown): void {
    this.done = true;
    this.error = error;
    if (this.waiting) {
      const resolve = this.waiting;
      const reject = this.failWaiting!;
      this.waiting = this.failWaiting = undefined;
      if (error !== undefined) reject(error);
      else resolve({ value: undefined, done: true });
    }
  }

  private next(): Promise<IteratorResult<StreamEvent>> {
    if (this.queued.length > 0) return Promise.resolve({ value: this.queued.shift()!, done: false });
    if (this.done) {
      return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.failWaiting = reject;
    });
  }

  private close(): Promise<IteratorResult<never>> {
    if (!this.done) this.stop();
    return Promise.resolve({ value: undefined, done: true });
  }

  events(): AsyncIterable<StreamEvent> {
    return { [Symbol.asyncIterator]: () => ({ next: () => this.next(), return: () => this.close() }) };
  }

  [Symbol.asyncIterator](): AsyncIterator<string> {
    return {
      next: async (): Promise<IteratorResult<string>> => {
        for (;;) {
          const r = await this.next();
          if (r.done) return { value: undefined, done: true };
          if (r.value.type === "text") return { value: r.value.text, done: false };
        }
      },
      return: () => this.close(),
    };
  }
}
