// Large typed arrays between the parent and the engine process, beside the IPC channel. The IPC
// channel's structured clone would copy a frame's pixels three times (serialize, read, deserialize);
// here the parent hands the array's own memory to the pipe (no copy in JS), and the child copies
// each chunk once, straight into a buffer of the frame's size. Frames are [u32 LE length][bytes], in
// the order the parent wrote them; messages name them by that order (PayloadRef).
import type { Readable, Writable } from "node:stream";

import type { PayloadRef } from "./protocol.js";

/** Arrays smaller than this travel inside the IPC message. */
export const PAYLOAD_MIN_BYTES = 64 * 1024;

/** Parent side: replaces large typed arrays in `value` with refs and writes their bytes to `out`. */
export class PayloadWriter {
  private next = 0;
  constructor(private readonly out: Writable) {}

  /** A copy of `value`'s structure (plain objects and arrays) with large arrays swapped for refs. */
  encode(value: unknown): unknown {
    if (value instanceof Uint8Array || value instanceof Float32Array) {
      if (value.byteLength < PAYLOAD_MIN_BYTES) return value;
      const header = Buffer.allocUnsafe(4);
      header.writeUInt32LE(value.byteLength, 0);
      this.out.write(header);
      this.out.write(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
      const ref: PayloadRef = { __payload: this.next++, kind: value instanceof Float32Array ? "f32" : "u8" };
      return ref;
    }
    if (Array.isArray(value)) return value.map((item) => this.encode(item));
    if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
      const out: Record<string, unknown> = {};
      for (const [key, inner] of Object.entries(value)) out[key] = this.encode(inner);
      return out;
    }
    return value;
  }
}

/** Child side: frames in arrival order, each in its own buffer (4-byte aligned, for Float32Array). */
export class PayloadReader {
  private readonly frames = new Map<number, Buffer>();
  private readonly waiters = new Map<number, (bytes: Buffer) => void>();
  private count = 0;
  private header = Buffer.alloc(4);
  private headerFill = 0;
  private frame: Buffer | undefined;
  private frameFill = 0;

  constructor(input: Readable) {
    input.on("data", (chunk: Buffer) => this.push(chunk));
    // A closed pipe means the parent is gone; the IPC channel's disconnect ends the process.
    input.on("error", () => {});
  }

  /** The bytes of frame `index`, once they have all arrived; each frame can be taken once. */
  take(index: number): Promise<Buffer> {
    const ready = this.frames.get(index);
    if (ready) {
      this.frames.delete(index);
      return Promise.resolve(ready);
    }
    return new Promise((resolve) => this.waiters.set(index, resolve));
  }

  private push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (!this.frame) {
        const n = Math.min(4 - this.headerFill, chunk.length - at);
        chunk.copy(this.header, this.headerFill, at, at + n);
        this.headerFill += n;
        at += n;
        if (this.headerFill < 4) return;
        this.headerFill = 0;
        // Its own ArrayBuffer (not the pool), so offset 0 and aligned for Float32Array.
        this.frame = Buffer.allocUnsafeSlow(this.header.readUInt32LE(0));
        this.frameFill = 0;
      }
      const n = Math.min(this.frame.length - this.frameFill, chunk.length - at);
      chunk.copy(this.frame, this.frameFill, at, at + n);
      this.frameFill += n;
      at += n;
      if (this.frameFill === this.frame.length) this.deliver();
    }
  }

  private deliver(): void {
    const index = this.count++;
    const frame = this.frame!;
    this.frame = undefined;
    const waiter = this.waiters.get(index);
    if (waiter) {
      this.waiters.delete(index);
      waiter(frame);
    } else {
      this.frames.set(index, frame);
    }
  }
}
