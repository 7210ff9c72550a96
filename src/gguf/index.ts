export { GGUFEncoder } from "./encoder.js";
export { encodeTensorData, f16BitsToF32, f32ToF16Bits, quantizeQ8_0 } from "./quant.js";
export {
  GGMLType,
  GGML_TYPE_LAYOUT,
  GGUFValueType,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_VERSION,
  QK8_0,
  alignUp,
  ggmlTensorBytes,
} from "./types.js";
export type { GGUFArray, GGUFScalar, GGUFValue, ScalarValueType } from "./types.js";
export { GGUFWriter } from "./writer.js";
export type { TensorFill, TensorSpec, WriteOptions, WriteProgress } from "./writer.js";
