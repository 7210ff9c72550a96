import { MultimodalLMError } from "../errors.js";
import { GGUF_MAGIC, GGUF_VERSION, GGUFValueType, type GGMLType, type GGUFValue, type ScalarValueType } from "./types.js";

type IntWriter = (buf: Buffer, v: bigint, at: number) => void;

/** Each integer type's range, width and writer. */
const INT_TYPES: Partial<Record<GGUFValueType, { min: bigint; max: bigint; bytes: number; write: IntWriter }>> = {
  [GGUFValueType.UINT8]: { min: 0n, max: 0xffn, bytes: 1, write: (b, v, at) => b.writeUInt8(Number(v), at) },
  [GGUFValueType.INT8]: { min: -0x80n, max: 0x7fn, bytes: 1, write: (b, v, at) => b.writeInt8(Number(v), at) },
  [GGUFValueType.UINT16]: { min: 0n, max: 0xffffn, bytes: 2, write: (b, v, at) => b.writeUInt16LE(Number(v), at) },
  [GGUFValueType.INT16]: { min: -0x8000n, max: 0x7fffn, bytes: 2, write: (b, v, at) => b.writeInt16LE(Number(v), at) },
  [GGUFValueType.UINT32]: { min: 0n, max: 0xffffffffn, bytes: 4, write: (b, v, at) => b.writeUInt32LE(Number(v), at) },
  [GGUFValueType.INT32]: { min: -0x80000000n, max: 0x7fffffffn, bytes: 4, write: (b, v, at) => b.writeInt32LE(Number(v), at) },
  [GGUFValueType.UINT64]: { min: 0n, max: 0xffffffffffffffffn, bytes: 8, write: (b, v, at) => b.writeBigUInt64LE(v, at) },
  [GGUFValueType.INT64]: { min: -0x8000000000000000n, max: 0x7fffffffffffffffn, bytes: 8, write: (b, v, at) => b.writeBigInt64LE(v, at) },
};

function invalid(message: string): MultimodalLMError {
  return new MultimodalLMError("E_INVALID_ARGUMENT", message);
}

/**
 * Low-level, order-preserving GGUF v3 header encoder. It writes exactly what it is told, including
 * counts and offsets that do not match the rest of the file, so tests can produce malformed files.
 * `GGUFWriter` is the safe layer on top.
 */
export class GGUFEncoder {
  private buf = Buffer.alloc(4096);
  private len = 0;

  get length(): number {
    return this.len;
  }

  /** The bytes written so far (a copy). */
  toBuffer(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.len));
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  /** Magic, version and the two counts, as given. */
  header(tensorCount: number | bigint, kvCount: number | bigint, version = GGUF_VERSION): this {
    this.raw(Buffer.from(GGUF_MAGIC, "ascii"));
    this.u32(version);
    this.u64(tensorCount);
    this.u64(kvCount);
    return this;
  }

  u32(v: number): this {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.len);
    this.len += 4;
    return this;
  }

  i32(v: number): this {
    this.reserve(4);
    this.buf.writeInt32LE(v, this.len);
    this.len += 4;
    return this;
  }

  u64(v: number | bigint): this {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.len);
    this.len += 8;
    return this;
  }

  string(s: string): this {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    return this.raw(bytes);
  }

  raw(bytes: Uint8Array): this {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
    return this;
  }

  /** Zero bytes up to the next multiple of `alignment`, counted from the start of the file. */
  pad(alignment: number): this {
    const rem = this.len % alignment;
    if (rem) this.raw(Buffer.alloc(alignment - rem));
    return this;
  }

  /** One key/value pair: key, value type, value. */
  kv(key: string, value: GGUFValue): this {
    this.string(key);
    this.u32(value.type);
    if (value.type === GGUFValueType.ARRAY) {
      this.u32(value.itemType);
      this.u64(value.value.length);
      for (const item of value.value) this.scalar(value.itemType, item, key);
    } else {
      this.scalar(value.type, value.value, key);
    }
    return this;
  }

  /** One tensor info record. `ne` is in ggml order (ne[0] is the contiguous dimension). */
  tensorInfo(name: string, ne: readonly (number | bigint)[], type: GGMLType, offset: number | bigint): this {
    this.string(name);
    this.u32(ne.length);
    for (const d of ne) this.u64(d);
    this.u32(type);
    this.u64(offset);
    return this;
  }

  private scalar(type: ScalarValueType, v: unknown, key: string): void {
    const where = `metadata "${key}" (${GGUFValueType[type]})`;
    switch (type) {
      case GGUFValueType.STRING:
        if (typeof v !== "string") throw invalid(`Expected a string for ${where} but received ${typeof v}`);
        this.string(v);
        return;
      case GGUFValueType.BOOL:
        if (typeof v !== "boolean") throw invalid(`Expected a boolean for ${where} but received ${typeof v}`);
        this.reserve(1);
        this.buf[this.len++] = v ? 1 : 0;
        return;
      case GGUFValueType.FLOAT32:
      case GGUFValueType.FLOAT64: {
        if (typeof v !== "number") throw invalid(`Expected a number for ${where} but received ${typeof v}`);
        const n = type === GGUFValueType.FLOAT32 ? 4 : 8;
        this.reserve(n);
        if (n === 4) this.buf.writeFloatLE(v, this.len);
        else this.buf.writeDoubleLE(v, this.len);
        this.len += n;
        return;
      }
      default: {
        if ((typeof v !== "number" || !Number.isInteger(v)) && typeof v !== "bigint") {
          throw invalid(`Expected an integer for ${where} but received ${String(v)}`);
        }
        const int = INT_TYPES[type];
        if (!int) throw invalid(`Unknown GGUF value type ${String(type)} for metadata "${key}"`);
        const big = BigInt(v);
        if (big < int.min || big > int.max) {
          throw invalid(`Value ${big} is out of range for ${where}: expected ${int.min}..${int.max}`);
        }
        this.reserve(int.bytes);
        int.write(this.buf, big, this.len);
        this.len += int.bytes;
      }
    }
  }
}
