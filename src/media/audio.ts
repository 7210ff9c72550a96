// Audio → mono float32 PCM at the projector's sample rate. One ffmpeg process decodes the first
// audio stream of any file it knows (WAV, MP3, FLAC, Ogg/Opus/Vorbis, M4A/AAC, WebM, the sound of
// a video...), downmixes to mono, resamples and streams raw f32le samples through a pipe; the
// length cap is enforced while they arrive. Paths are read in place; bytes (Buffer, data:,
// downloads) go through a private temp file that is always removed.
//
// Parity with llama.cpp's own decoder (miniaudio, in mtmd-helper): a file already at the target
// rate is not resampled (swr does nothing when the rates match) and 16-bit samples become
// x / 32768, exactly as miniaudio converts them. Stereo becomes (L + R) / 2, as miniaudio's mono
// conversion does: ffmpeg's own matrix would give (L + R) / √2, so it is normalised to unit gain
// with rematrix_maxval=1. (Surround keeps ffmpeg's weighted downmix, normalised the same way,
// where miniaudio averages every channel, LFE included.) No dither, no gain, no filters.
// Resampling is swr's default, which is not miniaudio's linear resampler: other rates differ.
import { createHash } from "node:crypto";
import { endianness } from "node:os";

import { AbortError, AudioError } from "../errors.js";
import { invalidParameter, is, optionalInteger, optionalSignal, rejectUnknownKeys } from "../validate.js";
import { DEMUXER_WHITELIST, ffmpegReason, findFfmpegBinary, runTool } from "./ffmpeg.js";
import { validateFetchLimits, type FetchLimits } from "./fetch.js";
import { ffmpegSource, type FileSource } from "./source.js";

/** A local path, a `file:`/`http(s):`/`data:audio/...;base64` URL, or the bytes of any audio (or video) file ffmpeg reads. */
export type AudioInput = string | URL | Buffer | Uint8Array;

export interface AudioOptions {
  /** Longest clip accepted, in seconds; a longer one is refused with E_AUDIO_TOO_LONG, never cut. Default 600 (10 minutes). */
  maxSeconds?: number;
  /** Time limit for decoding one clip with ffmpeg, in ms; past it ffmpeg is killed (E_AUDIO_TIMEOUT). Default 120 000. */
  timeoutMs?: number;
  /** Limits for http(s) inputs. Default maxBytes here is 64 MiB. */
  fetch?: FetchLimits;
  /** Path of the ffmpeg binary (else MULTIMODAL_LM_FFMPEG, ffmpeg-static, PATH; see findFfmpegBinary). No ffprobe is needed. */
  ffmpegPath?: string;
  /** Aborting it kills ffmpeg and rejects with `AbortError` (E_ABORTED). */
  signal?: AbortSignal;
}

export interface ResolvedAudioOptions {
  maxSeconds: number;
  timeoutMs: number;
  fetch: Required<FetchLimits>;
  ffmpegPath: string | undefined;
  signal: AbortSignal | undefined;
}

export interface DecodedAudio {
  /** Mono samples, nominally in [-1, 1]. */
  pcm: Float32Array;
  /** Samples per second of `pcm` (the rate asked for). */
  sampleRate: number;
  /** `pcm.length`. */
  samples: number;
  /** samples / sampleRate. */
  seconds: number;
  /** sha256 over the sample rate and the PCM (see audioContentId): equal sound at an equal rate, equal id. */
  id: string;
}

export const DEFAULT_AUDIO_MAX_SECONDS = 600;
/** The most `maxSeconds` may be set to. */
export const MAX_AUDIO_SECONDS = 24 * 3600;
export const DEFAULT_AUDIO_TIMEOUT_MS = 120_000;
export const DEFAULT_AUDIO_FETCH_MAX_BYTES = 64 * 1024 * 1024;
/** The sample rates `loadAudio` accepts (integers, Hz). */
export const MIN_AUDIO_SAMPLE_RATE = 1000;
export const MAX_AUDIO_SAMPLE_RATE = 384_000;

/** Every AudioOptions key. */
export const AUDIO_OPTION_KEYS = ["maxSeconds", "timeoutMs", "fetch", "ffmpegPath", "signal"] as const;

// Video's demuxers (plain containers, raw streams; nothing that opens other files or URLs) plus
// single-file audio containers.
export const AUDIO_DEMUXER_WHITELIST = `${DEMUXER_WHITELIST},aiff,caf,w64,au,amr,ac3,eac3`;
const INPUT_GUARDS = ["-protocol_whitelist", "file", "-format_whitelist", AUDIO_DEMUXER_WHITELIST];
const FORMATS = "WAV, MP3, FLAC, Ogg (Opus, Vorbis), M4A/AAC, WebM/Matroska, AIFF, CAF, WMA, AMR, AC-3, and the audio track of a video";

/** Checks audio options (sharp-style messages, code E_INVALID_ARGUMENT) and fills in the defaults. */
export function validateAudioOptions(options: unknown, name = "options"): ResolvedAudioOptions {
  if (options === undefined) options = {};
  if (!is.object(options)) throw invalidParameter(name, "an object", options);
  rejectUnknownKeys(name, options, AUDIO_OPTION_KEYS);
  const o = options;
  let maxSeconds = DEFAULT_AUDIO_MAX_SECONDS;
  if (o.maxSeconds !== undefined) {
    if (!is.number(o.maxSeconds) || o.maxSeconds <= 0 || o.maxSeconds > MAX_AUDIO_SECONDS) {
      throw invalidParameter(`${name}.maxSeconds`, `a number greater than 0 and at most ${MAX_AUDIO_SECONDS}`, o.maxSeconds);
    }
    maxSeconds = o.maxSeconds;
  }
  const timeoutMs = optionalInteger(`${name}.timeoutMs`, o.timeoutMs, 1, 2 ** 31 - 1, DEFAULT_AUDIO_TIMEOUT_MS);
  if (o.ffmpegPath !== undefined && (!is.string(o.ffmpegPath) || o.ffmpegPath.length === 0)) {
    throw invalidParameter(`${name}.ffmpegPath`, "a path to an executable", o.ffmpegPath);
  }
  const fetch = validateFetchLimits(o.fetch, `${name}.fetch`);
  if (!is.object(o.fetch) || o.fetch.maxBytes === undefined) fetch.maxBytes = DEFAULT_AUDIO_FETCH_MAX_BYTES;
  return {
    maxSeconds,
    timeoutMs,
    fetch,
    ffmpegPath: o.ffmpegPath as string | undefined,
    signal: optionalSignal(`${name}.signal`, o.signal),
  };
}

/** sha256 over a tag, the sample rate and the samples: the id of decoded audio, as contentId is for pixels. */
export function audioContentId(pcm: Float32Array, sampleRate: number): string {
  const header = Buffer.alloc(8);
  header.write("pcm1", 0, "latin1"); // mono float32: never equal to an image's width/height header
  header.writeUInt32LE(sampleRate, 4);
  return createHash("sha256").update(header).update(new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength)).digest("hex");
}

/** The ffmpeg arguments that decode the first audio stream of `file` (or `range` of it) to mono f32le at `sampleRate` on stdout. */
export function audioDecodeArgs(file: string, sampleRate: number, range?: AudioRange): string[] {
  const seek = range ? [...(range.start > 0 ? ["-ss", String(range.start)] : []), ...(range.end !== undefined ? ["-to", String(range.end)] : [])] : [];
  return [
    "-nostdin",
    "-hide_banner",
    "-loglevel",
    "error",
    ...INPUT_GUARDS,
    ...seek,
    "-i",
    `file:${file}`,
    "-map",
    "0:a:0",
    "-vn",
    "-sn",
    "-dn",
    "-ac",
    "1",
    "-ar",
    String(sampleRate),
    // Average the channels (miniaudio's downmix) instead of ffmpeg's 1/√2-per-channel stereo matrix.
    "-rematrix_maxval",
    "1",
    "-f",
    "f32le",
    "pipe:1",
  ];
}

// ---- sources --------------------------------------------------------------------------------

function readSource(input: AudioInput, opts: ResolvedAudioOptions): Promise<FileSource> {
  return ffmpegSource(input, "audio", { ...opts.fetch, signal: opts.signal }, (label) => new AudioError("E_AUDIO_DECODE", `${label} is empty (0 bytes), so it has no sound.`));
}

// ---- decoding --------------------------------------------------------------------------------

/** Concatenates f32le chunks (whole samples only) into a Float32Array in host order. */
function toFloat32(chunks: Buffer[], samples: number): Float32Array {
  const pcm = new Float32Array(samples);
  const bytes = Buffer.from(pcm.buffer);
  let at = 0;
  for (const chunk of chunks) {
    const n = Math.min(chunk.length, bytes.length - at);
    chunk.copy(bytes, at, 0, n);
    at += n;
  }
  if (endianness() === "BE") for (let i = 0; i < samples; i++) pcm[i] = bytes.readFloatLE(i * 4);
  return pcm;
}

/**
 * Decodes an audio clip (or a video's sound) to mono float32 PCM at `sampleRate` with ffmpeg.
 * Rejects with E_AUDIO_DECODE for anything without a readable audio stream, E_AUDIO_TOO_LONG past
 * `maxSeconds` (ffmpeg is stopped as soon as the cap is passed), E_AUDIO_TIMEOUT, E_ABORTED,
 * E_FILE_NOT_FOUND, E_FETCH, E_INVALID_DATA_URL and E_FFMPEG_NOT_FOUND; no ffmpeg process or
 * temp file outlives the call.
 */
export async function loadAudio(input: AudioInput, sampleRate: number, options?: AudioOptions): Promise<DecodedAudio> {
  checkSampleRate(sampleRate);
  const opts = validateAudioOptions(options);
  if (opts.signal?.aborted) throw new AbortError("Reading the audio was aborted.", { cause: opts.signal.reason });
  const { ffmpeg } = findFfmpegBinary(opts.ffmpegPath, process.env, "audio");
  const source = await readSource(input, opts);
  try {
    return await decodeAudioFile(ffmpeg, source, sampleRate, opts);
  } finally {
    await source.cleanup();
  }
}

function checkSampleRate(sampleRate: number): void {
  if (!is.integer(sampleRate) || !is.inRange(sampleRate, MIN_AUDIO_SAMPLE_RATE, MAX_AUDIO_SAMPLE_RATE)) {
    throw invalidParameter("sampleRate", `an integer between ${MIN_AUDIO_SAMPLE_RATE} and ${MAX_AUDIO_SAMPLE_RATE} (Hz)`, sampleRate);
  }
}

/** The part of a file to decode, in seconds from its start (a video's start and end options). */
export interface AudioRange {
  start: number;
  end: number | undefined;
}

/**
 * Decodes the first audio stream of a file that is already local (a clip, or the video a caller
 * has open) with the ffmpeg binary given, under `opts`' limits. `range` keeps only that part.
 */
export async function decodeAudioFile(ffmpeg: string, source: FileSource, sampleRate: number, opts: ResolvedAudioOptions, range?: AudioRange): Promise<DecodedAudio> {
  checkSampleRate(sampleRate);
  // Whole samples allowed; the tiny slack keeps e.g. 0.7 s × 10 000 Hz at 7000, not 6999.
  const maxSamples = Math.floor(opts.maxSeconds * sampleRate + 1e-6);
  const chunks: Buffer[] = [];
  let bytes = 0;
  const onStdout = (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > maxSamples * 4) {
      throw new AudioError(
        "E_AUDIO_TOO_LONG",
        `${source.label} is longer than the maxSeconds limit of ${opts.maxSeconds} s (more than ${maxSamples} samples at ${sampleRate} Hz). ` +
          "Trim it, or pass a larger maxSeconds if the model's context can hold it.",
      );
    }
    chunks.push(chunk);
  };
  const result = await runTool(ffmpeg, audioDecodeArgs(source.file, sampleRate, range), {
    what: "ffmpeg",
    media: "audio",
    signal: opts.signal,
    deadline: performance.now() + opts.timeoutMs,
    timeoutMs: opts.timeoutMs,
    onStdout,
  });
  if (result.code !== 0) {
    const reason = ffmpegReason(result.stderr);
    if (/matches no streams|does not contain any stream/i.test(result.stderr)) {
      throw new AudioError("E_AUDIO_DECODE", `${source.label} has no audio stream, so there is no sound to read.`);
    }
    throw new AudioError(
      "E_AUDIO_DECODE",
      `${source.label} could not be decoded as audio (ffmpeg exit ${result.code ?? result.signal}): ${reason}. ` +
        `It may be truncated or corrupt, or not audio at all. Readable: ${FORMATS}; playlists (HLS/DASH) and concat lists are refused.`,
    );
  }
  const samples = Math.floor(bytes / 4);
  if (samples === 0) {
    const why = result.stderr.trim() ? `: ${ffmpegReason(result.stderr)}` : "";
    throw new AudioError("E_AUDIO_DECODE", `${source.label} has an audio stream but no samples decoded from it (0 samples)${why}.`);
  }
  const pcm = toFloat32(chunks, samples);
  return { pcm, sampleRate, samples, seconds: samples / sampleRate, id: audioContentId(pcm, sampleRate) };
}
