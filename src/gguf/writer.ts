import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { MultimodalLMError } from "../errors.js";
import { GGUFEncoder } from "./encoder.js";
import { encodeTensorData } from "./quant.js";
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGML_TYPE_LAYOUT,
  GGMLType,
  GGUF_DEFAULT_ALIGNMENT,
  GGUFValueType,
  alignUp,
  ggmlTensorBytes,
  type GGUFValue,
  type ScalarValueType,
} from "./types.js";

/**
 * Produces a tensor's values in order. It is called with consecutive, non-overlapping runs:
 * `out` must be filled with elements `start .. start + out.length - 1` (flat index, ne[0] fastest).
 */
export type TensorFill = (out: Float32Array, start: number) => void;

export interface TensorSpec {
  name: string;
  /** Dimensions in ggml order: ne[0] is the contiguous one (the reverse of a PyTorch shape). */
  ne: readonly number[];
  type: GGMLType;
  /** All values at once, or a fill function so large tensors never sit in memory. */
  data: Float32Array | TensorFill;
}

export interface WriteProgress {
  bytesWritten: number;
  totalBytes: number;
  tensorName: string;
  tensorIndex: number;
  tensorCount: number;
}

export interface WriteOptions {
  /** Called after every chunk that reaches the file. */
  onProgress?: (progress: WriteProgress) => void;
  signal?: AbortSignal;
}

/** Values converted per chunk: bounds memory use regardless of tensor size. */
const CHUNK_ELEMENTS = 1 << 20;

function invalid(message: string): MultimodalLMError {
  return new MultimodalLMError("E_INVALID_ARGUMENT", message);
}

/**
 * Writes a GGUF v3 file: metadata, tensor infos with correct offsets, and aligned tensor data
 * streamed to disk chunk by chunk. The file appears under its final name only when complete.
 */
export class GGUFWriter {
  readonly alignment: number;
  private readonly metadata = new Map<string, GGUFValue>();
  private readonly tensors: TensorSpec[] = [];
  private readonly tensorNames = new Set<string>();

  constructor(options: { alignment?: number } = {}) {
    const alignment = options.alignment ?? GGUF_DEFAULT_ALIGNMENT;
    if (!Number.isInteger(alignment) || alignment < 1 || alignment > 0xffffffff || (alignment & (alignment - 1)) !== 0) {
      throw invalid(`Expected a power of two for alignment but received ${alignment}`);
    }
    this.alignment = alignment;
    if (alignment !== GGUF_DEFAULT_ALIGNMENT) {
      this.metadata.set("general.alignment", { type: GGUFValueType.UINT32, value: alignment });
    }
  }

  /** Set one metadata key. Keys keep their insertion order; setting a key twice is an error. */
  set(key: string, value: GGUFValue): this {
    if (!key) throw invalid("Expected a non-empty metadata key");
    if (this.metadata.has(key)) throw invalid(`Metadata key "${key}" is already set`);
    if (key === "general.alignment") {
      throw invalid('Set "general.alignment" with the GGUFWriter `alignment` option, so offsets follow it');
    }
    if (value.type === GGUFValueType.ARRAY && (value.itemType as GGUFValueType) === GGUFValueType.ARRAY) {
      throw invalid(`Metadata "${key}": nested arrays are not supported by llama.cpp`);
    }
    // Encode once now so a bad value fails here, next to the call that set it.
    new GGUFEncoder().kv(key, value);
    this.metadata.set(key, value);
    return this;
  }

  setString(key: string, value: string): this {
    return this.set(key, { type: GGUFValueType.STRING, value });
  }
  setUint32(key: string, value: number): this {
    return this.set(key, { type: GGUFValueType.UINT32, value });
  }
  setInt32(key: string, value: number): this {
    return this.set(key, { type: GGUFValueType.INT32, value });
  }
  setFloat32(key: string, value: number): this {
    return this.set(key, { type: GGUFValueType.FLOAT32, value });
  }
  setBool(key: string, value: boolean): this {
    return this.set(key, { type: GGUFValueType.BOOL, value });
  }
  setArray(key: string, itemType: ScalarValueType, value: readonly (string | number | bigint | boolean)[]): this {
    return this.set(key, { type: GGUFValueType.ARRAY, itemType, value });
  }

  /**
   * Remove a metadata key, so a built file can be varied (then `set` it again to replace it).
   * Removing a key that is not set is an error.
   */
  deleteKey(key: string): this {
    if (key === "general.alignment") throw invalid('"general.alignment" follows the GGUFWriter `alignment` option');
    if (!this.metadata.delete(key)) throw invalid(`Metadata key "${key}" is not set`);
    return this;
  }

  /**
   * Remove a tensor, so a built file can be varied (then `addTensor` it again to replace it).
   * Removing a tensor that is not there is an error.
   */
  removeTensor(name: string): this {
    const index = this.tensors.findIndex((t) => t.name === name);
    if (index < 0) throw invalid(`Tensor "${name}" is not there`);
    this.tensors.splice(index, 1);
    this.tensorNames.delete(name);
    return this;
  }

  addTensor(spec: TensorSpec): this {
    const { name, ne, type } = spec;
    if (!name || Buffer.byteLength(name) >= GGML_MAX_NAME) {
      throw invalid(`Tensor name "${name}" must be 1..${GGML_MAX_NAME - 1} bytes long`);
    }
    if (this.tensorNames.has(name)) throw invalid(`Tensor "${name}" is already added`);
    if (!(type in GGML_TYPE_LAYOUT)) throw invalid(`Tensor "${name}": unsupported ggml type ${String(type)}`);
    if (ne.length < 1 || ne.length > GGML_MAX_DIMS || ne.some((d) => !Number.isSafeInteger(d) || d < 1)) {
      throw invalid(`Tensor "${name}": expected 1..${GGML_MAX_DIMS} positive integer dims but received [${ne.join(", ")}]`);
    }
    const blockSize = GGML_TYPE_LAYOUT[type].blockSize;
    if (ne[0]! % blockSize !== 0) {
      throw invalid(`Tensor "${name}": ne[0] = ${ne[0]} is not a multiple of ${blockSize}, the ${GGMLType[type]} block size`);
    }
    const count = ne.reduce((a, b) => a * b, 1);
    if (spec.data instanceof Float32Array && spec.data.length !== count) {
      throw invalid(`Tensor "${name}": shape [${ne.join(", ")}] holds ${count} values but data has ${spec.data.length}`);
    }
    this.tensorNames.add(name);
    this.tensors.push({ ...spec, ne: [...ne] });
    return this;
  }

  /** The header (metadata and tensor infos), padded to the alignment. */
  encodeHeader(): Buffer {
    const enc = new GGUFEncoder().header(this.tensors.length, this.metadata.size);
    for (const [key, value] of this.metadata) enc.kv(key, value);
    let offset = 0;
    for (const t of this.tensors) {
      enc.tensorInfo(t.name, t.ne, t.type, offset);
      offset += alignUp(ggmlTensorBytes(t.type, t.ne), this.alignment);
    }
    return enc.pad(this.alignment).toBuffer();
  }

  /** Size of the finished file in bytes. */
  get totalBytes(): number {
    return this.encodeHeader().length + this.dataBytes();
  }

  private dataBytes(): number {
    let data = 0;
    for (const t of this.tensors) data += alignUp(ggmlTensorBytes(t.type, t.ne), this.alignment);
    return data;
  }

  /** Write the file. It is written to a temporary name beside `path` and renamed when complete. */
  async write(path: string, options: WriteOptions = {}): Promise<{ path: string; bytes: number }> {
    const header = this.encodeHeader();
    const totalBytes = header.length + this.dataBytes();
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
    const fh = await open(tmp, "w");
    let ok = false;
    try {
      await fh.write(header);
      let written = header.length;
      const scratch = new Float32Array(CHUNK_ELEMENTS);
      for (let ti = 0; ti < this.tensors.length; ti++) {
        const t = this.tensors[ti]!;
        const count = t.ne.reduce((a, b) => a * b, 1);
        for (let start = 0; start < count; start += CHUNK_ELEMENTS) {
          options.signal?.throwIfAborted();
          const n = Math.min(CHUNK_ELEMENTS, count - start);
          let values: Float32Array;
          if (t.data instanceof Float32Array) {
            values = t.data.subarray(start, start + n);
          } else {
            values = scratch.subarray(0, n);
            t.data(values, start);
          }
          const bytes = encodeTensorData(t.type, values);
          await fh.write(bytes);
          written += bytes.length;
          options.onProgress?.({ bytesWritten: written, totalBytes, tensorName: t.name, tensorIndex: ti, tensorCount: this.tensors.length });
        }
        const size = ggmlTensorBytes(t.type, t.ne);
        const pad = alignUp(size, this.alignment) - size;
        if (pad) {
          await fh.write(Buffer.alloc(pad));
          written += pad;
        }
      }
      if (written !== totalBytes) throw new Error(`internal: wrote ${written} bytes, expected ${totalBytes}`);
      await fh.close();
      await rename(tmp, path);
      ok = true;
      return { path, bytes: written };
    } finally {
      if (!ok) {
        await fh.close().catch(() => {});
        await rm(tmp, { force: true });
      }
    }
  }
}
