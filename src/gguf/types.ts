/** GGUF metadata value types (ggml/include/gguf.h `enum gguf_type`). */
export enum GGUFValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** The ggml tensor types this writer can encode (ggml/include/ggml.h `enum ggml_type`). */
export enum GGMLType {
  F32 = 0,
  F16 = 1,
  Q8_0 = 8,
}

export const GGUF_MAGIC = "GGUF";
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** `GGML_MAX_NAME`: a tensor name must be shorter than this many bytes. */
export const GGML_MAX_NAME = 64;
export const GGML_MAX_DIMS = 4;
/** Elements per Q8_0 block (`QK8_0`). */
export const QK8_0 = 32;

/** Elements per block and bytes per block of each supported tensor type. */
export const GGML_TYPE_LAYOUT: Readonly<Record<GGMLType, { blockSize: number; blockBytes: number }>> = {
  [GGMLType.F32]: { blockSize: 1, blockBytes: 4 },
  [GGMLType.F16]: { blockSize: 1, blockBytes: 2 },
  [GGMLType.Q8_0]: { blockSize: QK8_0, blockBytes: 2 + QK8_0 },
};

export type ScalarValueType = Exclude<GGUFValueType, GGUFValueType.ARRAY>;

/** A scalar metadata value with its exact GGUF type. 64-bit integers may be given as bigint. */
export type GGUFScalar =
  | { type: GGUFValueType.STRING; value: string }
  | { type: GGUFValueType.BOOL; value: boolean }
  | {
      type: Exclude<ScalarValueType, GGUFValueType.STRING | GGUFValueType.BOOL>;
      value: number | bigint;
    };

/** An array of scalars that all share `itemType`. GGUF readers in llama.cpp reject nested arrays. */
export interface GGUFArray {
  type: GGUFValueType.ARRAY;
  itemType: ScalarValueType;
  value: readonly (string | number | bigint | boolean)[];
}

export type GGUFValue = GGUFScalar | GGUFArray;

/** Bytes a tensor of `type` with dims `ne` (ggml order, ne[0] innermost) occupies. */
export function ggmlTensorBytes(type: GGMLType, ne: readonly number[]): number {
  const layout = GGML_TYPE_LAYOUT[type];
  const n = ne.reduce((a, b) => a * b, 1);
  return (n / layout.blockSize) * layout.blockBytes;
}

export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}
