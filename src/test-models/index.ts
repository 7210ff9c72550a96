export { BYTE_TO_CHAR, MERGE_CORPUS, TokenType, VocabBuilder, fromByteLevel, nonPrintableIds, toByteLevel, trainMerges } from "./bpe.js";
export type { Vocab } from "./bpe.js";
export { GEMMA3_CHAT_TEMPLATE, GEMMA3_TINY, gemma3Cell, gemma3ImageTokens } from "./gemma3.js";
export type { Gemma3Dims } from "./gemma3.js";
export { encodePng, testPattern, writeTestImage } from "./image.js";
export { QWEN2VL_2B, QWEN2VL_CHAT_TEMPLATE, QWEN2VL_TINY } from "./qwen2vl.js";
export type { Qwen2VLDims } from "./qwen2vl.js";
export { Rng } from "./random.js";
export {
  RECIPES,
  buildRecipe,
  defaultCacheDir,
  ensureTestModel,
  getRecipe,
  resolveOptions,
  testModelKey,
  writeTestModel,
} from "./recipe.js";
export type { HeadKind, MatrixTypeName, Recipe, RecipeProgress, TestModelFiles, TestModelOptions } from "./recipe.js";
export { SPM_SPACE, SpmVocabBuilder, byteToken } from "./spm.js";
export type { SpmVocab } from "./spm.js";
export { SMOLVLM_256M, SMOLVLM_CHAT_TEMPLATE, SMOLVLM_TINY } from "./smolvlm.js";
export type { SmolVLMDims } from "./smolvlm.js";
export { LLAMA31_CHAT_TEMPLATE, ULTRAVOX_TINY, buildUltravox, ultravoxChunkTokens } from "./ultravox.js";
export { ULTRAVOX_BENCH } from "./ultravox.js";
export type { UltravoxDims } from "./ultravox.js";
export { QWEN2AUDIO_CHAT_TEMPLATE, QWEN2AUDIO_TINY, qwen2AudioChunkTokens } from "./qwen2audio.js";
export type { Qwen2AudioDims } from "./qwen2audio.js";
export { QWEN25OMNI_CHAT_TEMPLATE, QWEN25OMNI_TINY, buildQwen25Omni } from "./qwen25omni.js";
export type { Qwen25OmniDims } from "./qwen25omni.js";
export {
  WHISPER_CHUNK_FRAMES,
  WHISPER_SAMPLE_RATE,
  ultravoxStackedRows,
  ultravoxWidthWorks,
  whisperChunkTokens,
  whisperChunks,
} from "./whisper.js";
export type { WhisperProjector, WhisperShape } from "./whisper.js";
export { loadWithReference, referenceCliPath, runReference, runReferenceChat } from "./reference-cli.js";
export type { LoaderRejection, ReferenceRequest, ReferenceRun } from "./reference-cli.js";
