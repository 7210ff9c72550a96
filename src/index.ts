export { BindingLoadError, MultimodalLMError } from "./errors.js";
export type { BindingLoadAttempt, BindingSource, EngineExit, MultimodalLMErrorCode } from "./errors.js";
export { bindingCandidates, loadBinding } from "./binding.js";
export type { BindingCandidate } from "./binding.js";
export { checkDevices, systemInfo } from "./system.js";
export { startRpcServer } from "./rpc.js";
export type { RpcServerOptions } from "./rpc.js";
export type { DeviceCheck, SystemInfo } from "./system.js";
export type { NativeCpuVariant, NativeCpuVariantCandidate, NativeDevice } from "./native-types.js";
export type { CrashEvent, EngineState, RestartEvent, SupervisorOptions } from "./engine/supervised.js";
export {
  AbortError,
  AudioError,
  ContextOverflowError,
  EngineCrashedError,
  EngineError,
  FetchError,
  FileNotFoundError,
  ImageError,
  MediaMismatchError,
  MediaNotAllowedError,
  ModelLoadError,
  StateError,
  VideoError,
} from "./errors.js";
export { MultimodalLM } from "./multimodal-lm.js";
export type {
  CallImageOptions,
  CallAudioOptions,
  CallVideoOptions,
  ChatRequest,
  DescribeAudioOptions,
  DescribeImageOptions,
  DescribeVideoOptions,
  GenerateRequest,
  GenerateResult,
  ImageEmbedding,
  ModelInfo,
  ModelStats,
  StopReason,
  TokenCount,
} from "./multimodal-lm.js";
export type { ChatContentPart, ChatMessage, ChatRole, MediaRef, MediaResolver, ToolCall } from "./messages.js";
export type { FunctionTool, JsonSchema, ResponseFormat, StreamEvent, StructuredOptions, TokenLogprob, ToolChoice } from "./structured.js";
export type { LoadOptions, LogLevel, Logger, SamplingOptions } from "./options.js";
export type { TextStream } from "./stream.js";
export { loadImage, imageSize } from "./media/image.js";
export type { DecodedImage, ImageInput, ImageOptions, RawImage } from "./media/image.js";
export type { FetchLimits } from "./media/fetch.js";
export { loadVideo, planVideo, planFrames, MAX_VIDEO_FRAMES } from "./media/video.js";
export type { DecodedVideo, FramePlan, VideoFrame, VideoInfo, VideoInput, VideoOptions, VideoPlan } from "./media/video.js";
export { loadAudio } from "./media/audio.js";
export type { AudioInput, AudioOptions, DecodedAudio } from "./media/audio.js";
export { findFfmpeg } from "./media/ffmpeg.js";
export type { FfmpegBinaries, FfmpegLocations } from "./media/ffmpeg.js";
export { createOpenAIHandler } from "./server/handler.js";
export type { HandlerStats, OpenAIHandler } from "./server/handler.js";
export { checkServeOptions, startServer } from "./server/serve.js";
export type { RunningServer } from "./server/serve.js";
export type { OpenAIHandlerOptions, RequestLog, ServeOptions } from "./server/options.js";
export type { MediaAccessOptions } from "./server/media-access-types.js";
