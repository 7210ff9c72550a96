// Video → sampled RGB frames. The sampling plan is computed here in JS from ffprobe's metadata;
// one ffmpeg process then decodes exactly the planned frames (its fps filter picks, for each
// planned instant, the frame on screen at that instant) and streams them as raw RGB through a
// pipe. Paths are read in place; bytes (Buffer, data:, downloads) go through a private temp file
// that is always removed.
import { createHash } from "node:crypto";

import { AbortError, AudioError, MultimodalLMError, VideoError } from "../errors.js";
import { invalidParameter, is, optionalBoolean, optionalInteger, optionalNumber, optionalSignal, rejectUnknownKeys } from "../validate.js";
import { decodeAudioFile, validateAudioOptions, type AudioOptions, type DecodedAudio } from "./audio.js";
import { ffmpegReason, findFfmpeg, INPUT_GUARDS, runTool, type FfmpegBinaries } from "./ffmpeg.js";
import { validateFetchLimits, type FetchLimits } from "./fetch.js";
import { contentId, fitPixelBudget, validateImageOptions, type DecodedImage } from "./image.js";
import { ffmpegSource, type FileSource } from "./source.js";

export { DEMUXER_WHITELIST } from "./ffmpeg.js";
/** Temp directories created for media bytes (video and audio) and not yet removed (for tests). */
export { liveTempDirs } from "./source.js";

/** A local path, a `file:`/`http(s):`/`data:video/...;base64` URL, or the bytes of a video file. */
export type VideoInput = string | URL | Buffer | Uint8Array;

export interface VideoOptions {
  /** Frames per second to sample. Default 2. */
  fps?: number;
  /** At most this many frames; when `fps` would give more, frames are spread evenly over the whole clip instead. Default 32. */
  maxFrames?: number;
  /** Exactly this many frames, spread evenly over the clip (LMDeploy's num_frames). Overrides `fps` and `maxFrames`. */
  numFrames?: number;
  /** Start of the part to sample, in seconds. Default 0. */
  start?: number;
  /** End of the part to sample, in seconds. Default: the end of the video. */
  end?: number;
  /** Upscale (keeping aspect ratio) frames with fewer pixels than this. */
  minPixels?: number;
  /** Downscale (keeping aspect ratio) frames with more pixels than this. */
  maxPixels?: number;
  /** Largest frame (width × height, as stored) accepted; `false` disables it. Default 100 000 000. */
  limitInputPixels?: number | false;
  /** Largest total size of the sampled RGB frames, in bytes. Default 1 GiB. */
  maxTotalBytes?: number;
  /** Time limit for probing and extracting one video, in ms. Default 300 000. */
  timeoutMs?: number;
  /** Seconds between timestamp texts (`[0m5.00s]`) put before frames in a prompt; 0 or false turns them off. Default 5. */
  timestamps?: number | false;
  /** Text put before the frames in a prompt. Default "Video:" (as llama.cpp does). */
  prefix?: string;
  /**
   * Also read the video's sound track (between start and end), for models that take audio (omni
   * models such as Qwen2.5-Omni). It goes into the prompt after the frames. A video without a
   * sound track is refused (E_AUDIO_DECODE). Default false.
   */
  audio?: boolean;
  /** Path of the ffmpeg binary (see findFfmpeg for the search order). */
  ffmpeg?: string;
  /** Path of the ffprobe binary. */
  ffprobe?: string;
  /** Limits for http(s) inputs. Default maxBytes here is 256 MiB. */
  fetch?: FetchLimits;
  /** Called as frames arrive, with the fraction done (0 to 1). */
  onProgress?: (fraction: number) => void;
  /** Aborting it kills ffmpeg and rejects with `AbortError` (E_ABORTED). */
  signal?: AbortSignal;
}

export interface ResolvedVideoOptions {
  fps: number;
  maxFrames: number;
  numFrames: number | undefined;
  start: number;
  end: number | undefined;
  minPixels: number | undefined;
  maxPixels: number | undefined;
  limitInputPixels: number | false;
  maxTotalBytes: number;
  timeoutMs: number;
  timestamps: number;
  prefix: string;
  audio: boolean;
  ffmpeg: string | undefined;
  ffprobe: string | undefined;
  fetch: Required<FetchLimits>;
  onProgress: ((fraction: number) => void) | undefined;
  signal: AbortSignal | undefined;
}

/** What ffprobe says about the video stream. */
export interface VideoInfo {
  /** Seconds, of the video stream (the container's when the stream has none). */
  duration: number;
  /** The stream's average frame rate. */
  fps: number;
  /** Frames in the stream, as the container says (estimated from duration × fps when it does not). */
  frameCount: number;
  /** Displayed size, after rotation. */
  width: number;
  height: number;
  /** Clockwise rotation applied on decode from the container's display matrix, in degrees (0, 90, 180, 270). */
  rotation: number;
  codec: string;
  /** ffprobe's container (demuxer) name. */
  container: string;
  hasAudio: boolean;
}

export interface VideoFrame extends DecodedImage {
  /** The instant sampled, in seconds from the start of the video. */
  timestamp: number;
}

export interface DecodedVideo {
  frames: VideoFrame[];
  /** With the `audio` option: the sound track between start and end, as loadAudio decodes a clip. */
  audio?: DecodedAudio;
  info: VideoInfo;
  /** sha256 over the frames' ids. */
  id: string;
}

export interface FramePlan {
  /** Instants to sample, in seconds, ascending. */
  timestamps: number[];
  /** Seconds between consecutive instants. */
  step: number;
}

export const DEFAULT_VIDEO_FPS = 2;
export const DEFAULT_VIDEO_MAX_FRAMES = 32;
/** The hard cap on frames per video, whatever the options say. */
export const MAX_VIDEO_FRAMES = 1024;
export const DEFAULT_VIDEO_MAX_TOTAL_BYTES = 1024 * 1024 * 1024;
export const DEFAULT_VIDEO_TIMEOUT_MS = 300_000;
export const DEFAULT_VIDEO_FETCH_MAX_BYTES = 256 * 1024 * 1024;
export const DEFAULT_VIDEO_TIMESTAMPS = 5;
export const DEFAULT_VIDEO_PREFIX = "Video:";

/** Every VideoOptions key. */
export const VIDEO_OPTION_KEYS = [
  "fps",
  "maxFrames",
  "numFrames",
  "start",
  "end",
  "minPixels",
  "maxPixels",
  "limitInputPixels",
  "maxTotalBytes",
  "timeoutMs",
  "timestamps",
  "prefix",
  "audio",
  "ffmpeg",
  "ffprobe",
  "fetch",
  "onProgress",
  "signal",
] as const;

const CONTAINERS = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV, Ogg, ASF/WMV, animated GIF, IVF and raw H.264/HEVC/MPEG-4";
const EPSILON = 1e-9;

/** Checks video options (sharp-style messages, code E_INVALID_ARGUMENT) and fills in the defaults. */
export function validateVideoOptions(options: unknown, name = "options"): ResolvedVideoOptions {
  if (options === undefined) options = {};
  if (!is.object(options)) throw invalidParameter(name, "an object", options);
  rejectUnknownKeys(name, options, VIDEO_OPTION_KEYS);
  const o = options;
  const positive = (key: string, value: unknown, max: number, fallback?: number): number | undefined => {
    if (value === undefined) return fallback;
    if (!is.number(value) || value <= 0 || value > max) throw invalidParameter(`${name}.${key}`, `a number greater than 0 and at most ${max}`, value);
    return value;
  };
  const fps = positive("fps", o.fps, 1000, DEFAULT_VIDEO_FPS)!;
  const maxFrames = optionalInteger(`${name}.maxFrames`, o.maxFrames, 1, MAX_VIDEO_FRAMES, DEFAULT_VIDEO_MAX_FRAMES);
  const numFrames = optionalInteger(`${name}.numFrames`, o.numFrames, 1, MAX_VIDEO_FRAMES);
  const start = optionalNumber(`${name}.start`, o.start, 0, 1e9, 0);
  const end = positive("end", o.end, 1e9);
  if (end !== undefined && end <= start) throw invalidParameter(`${name}.end`, `a number greater than start (${start})`, end);
  // The per-frame pixel options mean what they mean for images: one validator for both.
  const { minPixels, maxPixels, limitInputPixels } = validateImageOptions(
    { minPixels: o.minPixels, maxPixels: o.maxPixels, limitInputPixels: o.limitInputPixels },
    name,
  );
  const maxTotalBytes = optionalInteger(`${name}.maxTotalBytes`, o.maxTotalBytes, 1, Number.MAX_SAFE_INTEGER, DEFAULT_VIDEO_MAX_TOTAL_BYTES);
  const timeoutMs = optionalInteger(`${name}.timeoutMs`, o.timeoutMs, 1, 2 ** 31 - 1, DEFAULT_VIDEO_TIMEOUT_MS);
  let timestamps = DEFAULT_VIDEO_TIMESTAMPS;
  if (o.timestamps !== undefined) {
    if (o.timestamps === false) timestamps = 0;
    else if (is.number(o.timestamps) && o.timestamps >= 0) timestamps = o.timestamps;
    else throw invalidParameter(`${name}.timestamps`, "seconds between timestamps (a number, 0 or false to turn them off)", o.timestamps);
  }
  if (o.prefix !== undefined && !is.string(o.prefix)) throw invalidParameter(`${name}.prefix`, "a string", o.prefix);
  const audio = optionalBoolean(`${name}.audio`, o.audio, false);
  for (const key of ["ffmpeg", "ffprobe"] as const) {
    if (o[key] !== undefined && (!is.string(o[key]) || o[key].length === 0)) throw invalidParameter(`${name}.${key}`, "a path to an executable", o[key]);
  }
  if (o.onProgress !== undefined && !is.fn(o.onProgress)) throw invalidParameter(`${name}.onProgress`, "a function", o.onProgress);
  const fetch = validateFetchLimits(o.fetch, `${name}.fetch`);
  if (!is.object(o.fetch) || o.fetch.maxBytes === undefined) fetch.maxBytes = DEFAULT_VIDEO_FETCH_MAX_BYTES;
  return {
    fps,
    maxFrames,
    numFrames,
    start,
    end,
    minPixels,
    maxPixels,
    limitInputPixels,
    maxTotalBytes,
    timeoutMs,
    timestamps,
    prefix: (o.prefix as string | undefined) ?? DEFAULT_VIDEO_PREFIX,
    audio,
    ffmpeg: o.ffmpeg as string | undefined,
    ffprobe: o.ffprobe as string | undefined,
    fetch,
    onProgress: o.onProgress as ((fraction: number) => void) | undefined,
    signal: optionalSignal(`${name}.signal`, o.signal),
  };
}

/**
 * The instants to sample from a clip of `duration` seconds. Each sampled frame stands for an
 * interval of `step` seconds and is taken at the interval's middle:
 * - by default `step` is 1 / fps over [start, end), so a 10 s clip at 2 fps gives 20 frames at 0.25 s, 0.75 s, ...;
 * - when that is more than `maxFrames`, or `numFrames` is given, the part is cut into that many equal intervals instead;
 * - a part shorter than half a step still gives one frame, at its middle.
 * With `pairs` (models that merge two frames in time, such as Qwen-VL) the count is made even:
 * an odd fps/maxFrames count loses its last frame, an odd numFrames gains one, and a single frame is sampled twice.
 */
export function planFrames(
  duration: number,
  options: { fps?: number; maxFrames?: number; numFrames?: number; start?: number; end?: number; pairs?: boolean },
): FramePlan {
  const fps = options.fps ?? DEFAULT_VIDEO_FPS;
  const maxFrames = options.maxFrames ?? DEFAULT_VIDEO_MAX_FRAMES;
  const start = options.start ?? 0;
  const end = Math.min(options.end ?? duration, duration);
  if (!(duration > 0)) throw new VideoError("E_VIDEO_DECODE", "The video has no duration, so it has no frames to sample.");
  if (start >= end) {
    throw new MultimodalLMError(
      "E_INVALID_ARGUMENT",
      `Expected start (${start} s) to be before the end of the part to sample (${end} s; the video lasts ${duration} s)`,
    );
  }
  const length = end - start;
  let count: number;
  let step: number;
  let uniform: boolean;
  if (options.numFrames !== undefined) {
    count = options.numFrames;
    if (options.pairs && count % 2 === 1) count += 1;
    uniform = true;
  } else {
    step = 1 / fps;
    // Intervals whose middle lies inside the part: (k + 0.5) * step < length.
    count = Math.max(0, Math.ceil(length / step - 0.5 - EPSILON));
    uniform = count === 0 || count > maxFrames;
    if (count === 0) count = 1;
    else if (count > maxFrames) count = maxFrames;
    if (options.pairs && count % 2 === 1 && count > 1) {
      count -= 1;
    }
  }
  step = uniform ? length / count : 1 / fps;
  const timestamps = Array.from({ length: count }, (_, k) => start + (k + 0.5) * step);
  if (options.pairs && count === 1) timestamps.push(timestamps[0]!);
  return { timestamps, step };
}

// ---- probing ------------------------------------------------------------------------------

interface ProbeResult {
  info: VideoInfo;
  /** ffmpeg's index of the video stream. */
  streamIndex: number;
  /** The stored (coded, before rotation) size. */
  storedWidth: number;
  storedHeight: number;
  /** Where the video stream starts on ffmpeg's timeline (the container start is 0 there). */
  offset: number;
}

interface FfprobeStream {
  index?: number;
  codec_type?: string;
  codec_name?: string;
  width?: number;
  height?: number;
  avg_frame_rate?: string;
  r_frame_rate?: string;
  nb_frames?: string;
  duration?: string;
  start_time?: string;
  disposition?: { attached_pic?: number };
  tags?: { rotate?: string };
  side_data_list?: Array<{ rotation?: number | string }>;
}

function rational(text: string | undefined): number {
  if (!text) return 0;
  const [num, den] = text.split("/").map(Number);
  if (den === undefined) return Number.isFinite(num) ? num! : 0;
  return Number.isFinite(num) && Number.isFinite(den) && den !== 0 ? num! / den : 0;
}

function seconds(text: string | undefined): number | undefined {
  if (text === undefined || text === "N/A") return undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : undefined;
}

async function probe(tools: FfmpegBinaries, file: string, label: string, opts: ResolvedVideoOptions, deadline: number): Promise<ProbeResult> {
  const result = await runTool(
    tools.ffprobe,
    ["-v", "error", "-hide_banner", ...INPUT_GUARDS, "-print_format", "json", "-show_format", "-show_streams", `file:${file}`],
    { what: "ffprobe", signal: opts.signal, deadline, timeoutMs: opts.timeoutMs },
  );
  const unreadable = (why: string) =>
    new VideoError("E_VIDEO_DECODE", `${label} could not be read as a video: ${why}. Supported containers: ${CONTAINERS}; playlists (HLS/DASH) and concat lists are refused.`);
  if (result.code !== 0) throw unreadable(`ffprobe: ${ffmpegReason(result.stderr)}`);
  let parsed: { streams?: FfprobeStream[]; format?: { format_name?: string; duration?: string; start_time?: string } };
  try {
    parsed = JSON.parse(result.stdout.toString("utf8"));
  } catch {
    throw unreadable("ffprobe printed no readable description");
  }
  const streams = parsed.streams ?? [];
  const video = streams.find((s) => s.codec_type === "video" && !s.disposition?.attached_pic);
  if (!video || video.index === undefined) {
    const what = streams.some((s) => s.codec_type === "audio") ? "it has audio but no video stream" : "it has no video stream";
    throw new VideoError("E_VIDEO_DECODE", `${label} is not a video: ${what}.`);
  }
  const storedWidth = video.width ?? 0;
  const storedHeight = video.height ?? 0;
  if (storedWidth <= 0 || storedHeight <= 0) throw unreadable("the video stream has no frame size");
  const rawRotation = Number(video.side_data_list?.find((d) => d.rotation !== undefined)?.rotation ?? video.tags?.rotate ?? 0);
  // ffprobe's angle is counter-clockwise (a phone held upright reports -90); ours is clockwise.
  const rotation = (((-Math.round((Number.isFinite(rawRotation) ? rawRotation : 0) / 90) * 90) % 360) + 360) % 360;
  const swap = rotation === 90 || rotation === 270;
  const fps = rational(video.avg_frame_rate) || rational(video.r_frame_rate);
  const declaredFrames = video.nb_frames !== undefined ? Number(video.nb_frames) : Number.NaN;
  let duration = seconds(video.duration) ?? seconds(parsed.format?.duration);
  if (duration === undefined && Number.isFinite(declaredFrames) && fps > 0) duration = declaredFrames / fps;
  if (declaredFrames === 0 || duration === undefined || !(duration > 0)) {
    throw new VideoError("E_VIDEO_DECODE", `${label} has no frames (${declaredFrames === 0 ? "its video stream is empty" : "its duration is zero or unknown"}).`);
  }
  const offset = Math.max(0, (seconds(video.start_time) ?? 0) - (seconds(parsed.format?.start_time) ?? 0));
  return {
    info: {
      duration,
      fps,
      frameCount: Number.isFinite(declaredFrames) ? declaredFrames : Math.round(duration * fps),
      width: swap ? storedHeight : storedWidth,
      height: swap ? storedWidth : storedHeight,
      rotation,
      codec: video.codec_name ?? "unknown",
      container: parsed.format?.format_name ?? "unknown",
      hasAudio: streams.some((s) => s.codec_type === "audio"),
    },
    streamIndex: video.index,
    storedWidth,
    storedHeight,
    offset,
  };
}

// ---- sources --------------------------------------------------------------------------------

function readSource(input: VideoInput, opts: ResolvedVideoOptions): Promise<FileSource> {
  return ffmpegSource(input, "video", { ...opts.fetch, signal: opts.signal }, (label) => new VideoError("E_VIDEO_DECODE", `${label} is empty (0 bytes), so it has no frames.`));
}

// ---- extraction ------------------------------------------------------------------------------

/** The ffmpeg arguments that decode the planned frames of `file` as packed RGB at `size`. */
export function extractionArgs(
  file: string,
  probe: Pick<ProbeResult, "streamIndex" | "offset" | "info">,
  plan: FramePlan,
  size: { width: number; height: number },
): string[] {
  const unique = [...new Set(plan.timestamps)];
  const first = unique[0]!;
  // The fps filter starts its ticks at start_time and, with round=up, gives each tick the last
  // frame whose time is at or before it: the frame on screen at that instant.
  // tpad first: the fps filter never emits a tick at or after the input's end-of-stream time,
  // which is the last frame's start, so an instant inside the last frame would be lost. Padding
  // with clones of the last frame for one step moves the end past it.
  const rate = 1 / plan.step;
  const filters = [
    `tpad=stop_mode=clone:stop_duration=${plan.step.toFixed(6)}`,
    `fps=fps=${rate.toPrecision(15)}:start_time=${(probe.offset + first).toFixed(6)}:round=up`,
  ];
  if (size.width !== probe.info.width || size.height !== probe.info.height) filters.push(`scale=${size.width}:${size.height}:flags=lanczos`);
  return [
    "-nostdin",
    "-hide_banner",
    "-v",
    "error",
    ...INPUT_GUARDS,
    "-i",
    `file:${file}`,
    "-map",
    `0:${probe.streamIndex}`,
    "-an",
    "-sn",
    "-dn",
    "-vf",
    filters.join(","),
    // Each filtered frame exactly once: the default for raw output (cfr) fills the gap before the
    // first tick with copies of it when the input has other streams (a sound track) starting at 0.
    "-fps_mode",
    "passthrough",
    "-frames:v",
    String(unique.length),
    "-pix_fmt",
    "rgb24",
    "-f",
    "rawvideo",
    "pipe:1",
  ];
}

export interface LoadVideoPlanOptions {
  /** Make the frame count even (models that merge pairs of frames). */
  pairs?: boolean;
  /** With the `audio` option: the rate to decode the sound at (the projector's; default 16 000 Hz). */
  audioSampleRate?: number;
  /** With the `audio` option: the limits on the sound track (maxSeconds, timeoutMs). Its ffmpeg is the video's. */
  audioOptions?: Omit<AudioOptions, "signal" | "ffmpegPath" | "fetch">;
}

/** The plan for one video, before any frame is decoded. */
export interface VideoPlan {
  info: VideoInfo;
  /** The instants that will be sampled, in seconds. */
  timestamps: number[];
  /** The size every frame is decoded at (the pixel budget applied). */
  width: number;
  height: number;
  /** With the `audio` option: the sound track's length (it is decoded to be measured). */
  audio?: { samples: number; seconds: number };
}

interface Prepared extends Omit<VideoPlan, "audio"> {
  opts: ResolvedVideoOptions;
  tools: FfmpegBinaries;
  source: FileSource;
  probed: ProbeResult;
  plan: FramePlan;
  deadline: number;
  /** The sound track, when the `audio` option asked for it. */
  sound: DecodedAudio | undefined;
}

/** Validates, finds ffmpeg, reads the source, probes and plans; then runs `body` and cleans up. */
async function withPlan<T>(input: VideoInput, options: VideoOptions | undefined, planOptions: LoadVideoPlanOptions, body: (p: Prepared) => Promise<T>): Promise<T> {
  const opts = validateVideoOptions(options);
  if (opts.signal?.aborted) throw new AbortError("Reading the video was aborted.", { cause: opts.signal.reason });
  const tools = findFfmpeg({ ffmpeg: opts.ffmpeg, ffprobe: opts.ffprobe });
  const deadline = performance.now() + opts.timeoutMs;
  const source = await readSource(input, opts);
  try {
    const probed = await probe(tools, source.file, source.label, opts, deadline);
    const { info } = probed;
    if (opts.limitInputPixels !== false && info.width * info.height > opts.limitInputPixels) {
      throw new VideoError(
        "E_VIDEO_TOO_LARGE",
        `${source.label} has ${info.width}×${info.height} = ${info.width * info.height}-pixel frames, over the limitInputPixels limit of ${opts.limitInputPixels}. ` +
          "Pass a larger limitInputPixels (or false) if you trust the source.",
      );
    }
    if (opts.start >= info.duration) {
      throw new MultimodalLMError("E_INVALID_ARGUMENT", `Expected start (${opts.start} s) to be before the end of the video (${info.duration} s)`);
    }
    const plan = planFrames(info.duration, { ...opts, pairs: planOptions.pairs });
    const size = fitPixelBudget(info.width, info.height, opts.minPixels, opts.maxPixels);
    const total = size.width * size.height * 3 * plan.timestamps.length;
    if (total > opts.maxTotalBytes) {
      throw new VideoError(
        "E_VIDEO_TOO_LARGE",
        `${plan.timestamps.length} frames of ${size.width}×${size.height} need ${total} bytes, over the maxTotalBytes limit of ${opts.maxTotalBytes}. ` +
          "Sample fewer frames (fps, maxFrames, numFrames), shrink them (maxPixels), or raise maxTotalBytes.",
      );
    }
    const sound = opts.audio ? await readSoundTrack(tools, source, info, opts, planOptions) : undefined;
    return await body({ opts, tools, source, probed, plan, deadline, sound, info, timestamps: plan.timestamps, ...size });
  } finally {
    await source.cleanup();
  }
}

/**
 * The sound between start and end, decoded with the video's ffmpeg at the given rate. Checked
 * before any frame is decoded: a video without sound fails fast.
 */
async function readSoundTrack(tools: FfmpegBinaries, source: FileSource, info: VideoInfo, opts: ResolvedVideoOptions, planOptions: LoadVideoPlanOptions): Promise<DecodedAudio> {
  if (!info.hasAudio) {
    throw new AudioError(
      "E_AUDIO_DECODE",
      `${source.label} has no sound track, so its audio cannot be read (the video's audio option is on). Leave audio off for this video, or give one with sound.`,
    );
  }
  const audioOpts = validateAudioOptions({ ...planOptions.audioOptions, signal: opts.signal }, "audio");
  return decodeAudioFile(tools.ffmpeg, source, planOptions.audioSampleRate ?? 16000, audioOpts, { start: opts.start, end: opts.end });
}

/** Probes a video and plans its frames without decoding any: what `loadVideo` would return, sizes only (its sound, with `audio`, is decoded to be measured). */
export async function planVideo(input: VideoInput, options?: VideoOptions, planOptions: LoadVideoPlanOptions = {}): Promise<VideoPlan> {
  return withPlan(input, options, planOptions, async ({ info, timestamps, width, height, sound }) => ({
    info,
    timestamps,
    width,
    height,
    ...(sound ? { audio: { samples: sound.samples, seconds: sound.seconds } } : {}),
  }));
}

/**
 * Probes a video, plans the frames to sample and decodes them with one ffmpeg process.
 * Frames are RGB at the per-frame pixel budget, in time order, each with its instant.
 */
export async function loadVideo(input: VideoInput, options?: VideoOptions, planOptions: LoadVideoPlanOptions = {}): Promise<DecodedVideo> {
  return withPlan(input, options, planOptions, async ({ opts, tools, source, probed, plan, deadline, sound, info, width, height }) => {
    const size = { width, height };
    const frameBytes = width * height * 3;
    const unique = [...new Set(plan.timestamps)];
    const decoded: Uint8Array[] = [];
    let pending = Buffer.alloc(frameBytes);
    let filled = 0;
    const onStdout = (chunk: Buffer) => {
      for (let at = 0; at < chunk.length; ) {
        if (decoded.length >= unique.length) throw new VideoError("E_VIDEO_DECODE", `ffmpeg sent more than the ${unique.length} frames asked for.`);
        const n = Math.min(frameBytes - filled, chunk.length - at);
        chunk.copy(pending, filled, at, at + n);
        filled += n;
        at += n;
        if (filled === frameBytes) {
          decoded.push(pending);
          pending = Buffer.alloc(frameBytes);
          filled = 0;
          opts.onProgress?.(decoded.length / unique.length);
        }
      }
    };
    const result = await runTool(tools.ffmpeg, extractionArgs(source.file, probed, plan, size), {
      what: "ffmpeg",
      signal: opts.signal,
      deadline,
      timeoutMs: opts.timeoutMs,
      onStdout,
    });
    if (result.code !== 0 || decoded.length === 0 || (decoded.length < unique.length && result.stderr.trim() !== "")) {
      const got = `ffmpeg decoded ${decoded.length} of the ${unique.length} planned frames`;
      throw new VideoError(
        "E_VIDEO_DECODE",
        decoded.length === 0 && result.code === 0
          ? `${source.label} has no decodable frames (${got}).`
          : `${source.label} could not be decoded (${got}; exit ${result.code ?? result.signal}): ${ffmpegReason(result.stderr)}. The file may be truncated or corrupt.`,
      );
    }
    // A clean end before the last planned instant means the container overstated the duration:
    // the missing instants get the last frame, which is what was on screen.
    const byTime = new Map<number, Uint8Array>();
    unique.forEach((t, i) => byTime.set(t, decoded[Math.min(i, decoded.length - 1)]!));
    const ids = new Map<Uint8Array, string>();
    const frames = plan.timestamps.map((timestamp): VideoFrame => {
      const data = byTime.get(timestamp)!;
      let id = ids.get(data);
      if (id === undefined) ids.set(data, (id = contentId(data, width, height)));
      return { data, width, height, id, timestamp };
    });
    const id = createHash("sha256")
      .update(frames.map((f) => f.id).join(","))
      .digest("hex");
    return { frames, ...(sound ? { audio: sound } : {}), info, id };
  });
}
