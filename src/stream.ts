// A generation in progress: an AsyncIterable of text pieces plus the final result.

/** Text pieces as they are generated; `result` settles when generation ends. */
export interface TextStream<Result> extends AsyncIterable<string> {
  /** The final result (the same text the pieces add up to, plus usage and timings). */
  readonly result: Promise<Result>;
  /** Stops generation; the iteration ends and `result` rejects with `AbortError`. */
  abort(): void;
}

/**
 * Pieces are pushed by the producer; the consumer pulls. Leaving a `for await` loop
 * early aborts the generation.
 */
export class PieceQueue<Result> implements TextStream<Result> {
  readonly result: Promise<Result>;
  private readonly pieces: string[] = [];
  private waiting: ((r: IteratorResult<string>) => void) | undefined;
  private failWaiting: ((e: unknown) => void) | undefined;
  private done = false;
  private error: unknown;

  constructor(
    start: (push: (piece: string) => void) => Promise<Result>,
    private readonly stop: () => void,
  ) {
    this.result = start((piece) => this.push(piece)).then(
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

  private push(piece: string): void {
    if (this.done) return; // an aborted request settles at once; the engine may still send a piece
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = this.failWaiting = undefined;
      resolve({ value: piece, done: false });
    } else {
      this.pieces.push(piece);
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

  [Symbol.asyncIterator](): AsyncIterator<string> {
    return {
      next: () => {
        if (this.pieces.length > 0) return Promise.resolve({ value: this.pieces.shift()!, done: false });
        if (this.done) {
          return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          this.waiting = resolve;
          this.failWaiting = reject;
        });
      },
      return: () => {
        if (!this.done) this.stop();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
