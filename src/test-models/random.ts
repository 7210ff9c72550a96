import type { TensorFill } from "../gguf/writer.js";

/** FNV-1a over UTF-8, mixed with the seed: each tensor gets its own stream, independent of write order. */
function streamSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (const byte of Buffer.from(name, "utf8")) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h;
}

/** xoshiro128** seeded through splitmix32; deterministic on every platform. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | undefined;

  constructor(seed: number, stream = "") {
    let x = streamSeed(seed >>> 0, stream);
    const next = () => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in (0, 1]. */
  nextUnit(): number {
    return (this.nextU32() + 1) / 4294967296;
  }

  /** Standard normal (Box-Muller, both values used). */
  nextNormal(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(this.nextUnit()));
    const theta = 2 * Math.PI * this.nextUnit();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** N(mean, std) values from the tensor's own stream. */
export function normalFill(seed: number, name: string, std: number, mean = 0): TensorFill {
  const rng = new Rng(seed, name);
  return (out) => {
    for (let i = 0; i < out.length; i++) out[i] = mean + std * rng.nextNormal();
  };
}

export function constantFill(value: number): TensorFill {
  return (out) => {
    out.fill(value);
  };
}

/**
 * An output head `{n_embd, n_vocab}` drawn like `normalFill`, except rows in `zeroRows` are 0.
 * A zero row has logit 0 while the max of the other random logits is positive with
 * overwhelming probability, so greedy decoding never picks those tokens.
 */
export function maskedRowsFill(seed: number, name: string, std: number, rowLength: number, zeroRows: ReadonlySet<number>): TensorFill {
  const normal = normalFill(seed, name, std);
  return (out, start) => {
    normal(out, start);
    const firstRow = Math.floor(start / rowLength);
    const lastRow = Math.floor((start + out.length - 1) / rowLength);
    for (let row = firstRow; row <= lastRow; row++) {
      if (!zeroRows.has(row)) continue;
      const from = Math.max(row * rowLength - start, 0);
      const to = Math.min((row + 1) * rowLength - start, out.length);
      out.fill(0, from, to);
    }
  };
}

/**
 * An output head `{n_embd, n_vocab}` that is zero except for the given row pairs: the first row
 * of a pair is N(0, std) and the second its negation, so exactly one of them scores above 0.
 */
export function pairedRowsFill(seed: number, name: string, std: number, rowLength: number, pairs: readonly [number, number][]): TensorFill {
  const rows = new Map<number, Float32Array>();
  for (const [i, [a, b]] of pairs.entries()) {
    const row = new Float32Array(rowLength);
    normalFill(seed, `${name}#pair${i}`, std)(row, 0);
    rows.set(a, row);
    rows.set(b, row.map((v) => -v));
  }
  return (out, start) => {
    out.fill(0);
    const firstRow = Math.floor(start / rowLength);
    const lastRow = Math.floor((start + out.length - 1) / rowLength);
    for (let r = firstRow; r <= lastRow; r++) {
      const row = rows.get(r);
      if (!row) continue;
      const from = Math.max(r * rowLength - start, 0);
      const to = Math.min((r + 1) * rowLength - start, out.length);
      out.set(row.subarray(from + start - r * rowLength, to + start - r * rowLength), from);
    }
  };
}
