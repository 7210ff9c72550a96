import { GGMLType, GGML_TYPE_LAYOUT, QK8_0 } from "./types.js";

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** IEEE half-precision bits of `x`, rounded to nearest even (what F16C's `vcvtps2ph` does). */
export function f32ToF16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToF16Bits(scratchU32[0]!);
}

function f32BitsToF16Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

/** The float value of IEEE half-precision bits. */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** C `roundf`: halves round away from zero. */
function roundAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/**
 * Quantize `src` (a multiple of 32 values) to Q8_0 blocks in `out`, exactly as ggml's
 * `quantize_row_q8_0_ref`: d = amax/127 stored as F16, q = roundf(x / d) as int8.
 */
export function quantizeQ8_0(src: Float32Array, out: Uint8Array): void {
  if (src.length % QK8_0 !== 0) throw new RangeError(`Q8_0 needs a multiple of ${QK8_0} values, got ${src.length}`);
  const q = new Int8Array(out.buffer, out.byteOffset, out.byteLength);
  const fround = Math.fround;
  for (let b = 0, o = 0; b < src.length; b += QK8_0, o += 2 + QK8_0) {
    let amax = 0;
    for (let j = 0; j < QK8_0; j++) {
      const a = Math.abs(src[b + j]!);
      if (a > amax) amax = a;
    }
    const d = fround(amax / 127);
    const id = d ? fround(1 / d) : 0;
    const h = f32ToF16Bits(d);
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < QK8_0; j++) q[o + 2 + j] = roundAway(fround(src[b + j]! * id));
  }
}

/**
 * Encode a run of values as `type`. F32 is returned as a view of `src`, not a copy: write it
 * out before `src` changes. Byte order is the host's, little-endian on every supported platform.
 */
export function encodeTensorData(type: GGMLType, src: Float32Array): Buffer {
  switch (type) {
    case GGMLType.F32:
      return Buffer.from(src.buffer, src.byteOffset, src.byteLength);
    case GGMLType.F16: {
      const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
      const half = new Uint16Array(src.length);
      for (let i = 0; i < bits.length; i++) half[i] = f32BitsToF16Bits(bits[i]!);
      return Buffer.from(half.buffer);
    }
    case GGMLType.Q8_0: {
      const layout = GGML_TYPE_LAYOUT[type];
      const out = Buffer.alloc((src.length / layout.blockSize) * layout.blockBytes);
      quantizeQ8_0(src, out);
      return out;
    }
  }
}
