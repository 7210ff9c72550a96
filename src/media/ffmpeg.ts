// Finding ffmpeg/ffprobe and running them as bounded child processes: a wall-clock limit,
// AbortSignal support, capped output, and the child always reaped before the promise settles.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, dirname, join } from "node:path";

import { AbortError, AudioError, VideoError } from "../errors.js";

export interface FfmpegBinaries {
  ffmpeg: string;
  ffprobe: string;
  /** Where ffmpeg was found. */
  source: "option" | "MULTIMODAL_LM_FFMPEG" | "ffmpeg-static" | "PATH";
}

export interface FfmpegLocations {
  /** Path of the ffmpeg binary. */
  ffmpeg?: string;
  /** Path of the ffprobe binary. Default: next to ffmpeg, then MULTIMODAL_LM_FFPROBE, ffprobe-static, PATH. */
  ffprobe?: string;
}

/** What a tool run is reading, for its errors' class, code and wording. */
export type ToolMedia = "video" | "audio";

/** `VideoError` or `AudioError` with the kind's code: E_FFMPEG_NOT_FOUND, E_*_DECODE or E_*_TIMEOUT. */
export function mediaError(media: ToolMedia, what: "notFound" | "decode" | "timeout", message: string, options?: { cause?: unknown }): VideoError | AudioError {
  if (media === "audio") {
    const code = what === "notFound" ? "E_FFMPEG_NOT_FOUND" : what === "decode" ? "E_AUDIO_DECODE" : "E_AUDIO_TIMEOUT";
    return new AudioError(code, message, options);
  }
  const code = what === "notFound" ? "E_FFMPEG_NOT_FOUND" : what === "decode" ? "E_VIDEO_DECODE" : "E_VIDEO_TIMEOUT";
  return new VideoError(code, message, options);
}

// Demuxers for plain containers and raw streams. Anything that can open other files or URLs
// (hls, dash, concat, image2 sequences, tee...) is not here, so ffmpeg refuses it.
export const DEMUXER_WHITELIST = [
  "mov",
  "matroska",
  "avi",
  "mpegts",
  "mpeg",
  "flv",
  "ogg",
  "asf",
  "gif",
  "ivf",
  "h264",
  "hevc",
  "m4v",
  "mjpeg",
  "yuv4mpegpipe",
  "wav",
  "mp3",
  "aac",
  "flac",
].join(",");
/** Every input opened by ffprobe/ffmpeg: local files only, no playlists or nested URLs. */
export const INPUT_GUARDS = ["-protocol_whitelist", "file", "-format_whitelist", DEMUXER_WHITELIST];

/** The last meaningful lines of ffmpeg's error output, without their "[demuxer @ 0x...]" prefix or the whitelist. */
export function ffmpegReason(stderr: string): string {
  const lines = stderr
    .split(/\r?\n/)
    .map((line) =>
      line
        .replace(/^\[[^\]]*@ ?0x[0-9a-f]+\]\s*/i, "")
        // The whole whitelist says nothing useful; the format ffmpeg detected is simply not allowed.
        .replace(/Format not on whitelist '[^']*'/, "format not allowed")
        .trim(),
    )
    .filter(Boolean);
  return lines.length ? lines.slice(-3).join("; ") : "no error message";
}

const EXE = process.platform === "win32" ? ".exe" : "";
const require = createRequire(import.meta.url);

function isExecutable(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(name: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name + EXE);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** The binary an npm package such as ffmpeg-static points at, if the package and its binary are installed. */
function fromPackage(name: string): string | undefined {
  try {
    const exported: unknown = require(name);
    const path = typeof exported === "string" ? exported : (exported as { path?: unknown } | null)?.path;
    return typeof path === "string" && isExecutable(path) ? path : undefined;
  } catch {
    return undefined;
  }
}

// How to pass ffmpeg's path as an option, per media kind (video's option is `ffmpeg`, audio's `ffmpegPath`).
const FFMPEG_OPTION: Record<ToolMedia, string> = {
  video: "the ffmpeg option (video: { ffmpeg: '/path/to/ffmpeg' })",
  audio: "the ffmpegPath option (audio: { ffmpegPath: '/path/to/ffmpeg' })",
};

function ffmpegFixes(media: ToolMedia): string {
  return (
    `Fix it one of four ways: pass the path as ${FFMPEG_OPTION[media]}, ` +
    "set MULTIMODAL_LM_FFMPEG=/path/to/ffmpeg, run `npm install ffmpeg-static`, " +
    "or install ffmpeg on PATH (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg)."
  );
}

const FFPROBE_FIXES =
  "Fix it one of four ways: pass the path as the ffprobe option (video: { ffprobe: '/path/to/ffprobe' }), " +
  "set MULTIMODAL_LM_FFPROBE=/path/to/ffprobe, run `npm install ffprobe-static` (ffmpeg-static ships no ffprobe), " +
  "or install ffmpeg on PATH, which brings ffprobe (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg).";

/**
 * Finds ffmpeg alone (audio needs no ffprobe): the explicit option, then MULTIMODAL_LM_FFMPEG,
 * then the ffmpeg-static package (only if its binary is really there), then PATH. Throws
 * E_FFMPEG_NOT_FOUND, as a `VideoError` or an `AudioError` after `media`.
 */
export function findFfmpegBinary(
  ffmpeg: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  media: ToolMedia = "video",
): Pick<FfmpegBinaries, "ffmpeg" | "source"> {
  let found: string | undefined;
  const explicit = (path: string, where: string): string => {
    if (isExecutable(path)) return path;
    throw mediaError(media, "notFound", `${where} is ${path}, which is not an executable file. ${ffmpegFixes(media)}`);
  };
  if (ffmpeg !== undefined) return { ffmpeg: explicit(ffmpeg, media === "audio" ? "The ffmpegPath option" : "The ffmpeg option"), source: "option" };
  if (env.MULTIMODAL_LM_FFMPEG) return { ffmpeg: explicit(env.MULTIMODAL_LM_FFMPEG, "MULTIMODAL_LM_FFMPEG"), source: "MULTIMODAL_LM_FFMPEG" };
  if ((found = fromPackage("ffmpeg-static"))) return { ffmpeg: found, source: "ffmpeg-static" };
  if ((found = onPath("ffmpeg", env))) return { ffmpeg: found, source: "PATH" };
  throw mediaError(media, "notFound", `Reading ${media} needs ffmpeg, and none was found. ${ffmpegFixes(media)}`);
}

/**
 * Finds ffmpeg (see findFfmpegBinary for the search order) and ffprobe: the explicit option,
 * then MULTIMODAL_LM_FFPROBE, then next to ffmpeg, then ffprobe-static, then PATH.
 */
export function findFfmpeg(locations: FfmpegLocations = {}, env: NodeJS.ProcessEnv = process.env): FfmpegBinaries {
  const { ffmpeg, source } = findFfmpegBinary(locations.ffmpeg, env, "video");
  const explicit = (path: string, where: string): string => {
    if (isExecutable(path)) return path;
    throw new VideoError("E_FFMPEG_NOT_FOUND", `${where} is ${path}, which is not an executable file. ${FFPROBE_FIXES}`);
  };
  let ffprobe: string | undefined;
  if (locations.ffprobe !== undefined) ffprobe = explicit(locations.ffprobe, "The ffprobe option");
  else if (env.MULTIMODAL_LM_FFPROBE) ffprobe = explicit(env.MULTIMODAL_LM_FFPROBE, "MULTIMODAL_LM_FFPROBE");
  else {
    const sibling = join(dirname(ffmpeg), "ffprobe" + EXE);
    ffprobe = isExecutable(sibling) ? sibling : (fromPackage("ffprobe-static") ?? onPath("ffprobe", env));
  }
  if (!ffprobe) {
    throw new VideoError("E_FFMPEG_NOT_FOUND", `Reading video needs ffprobe (to read the duration and size), and none was found (ffmpeg is ${ffmpeg}). ${FFPROBE_FIXES}`);
  }
  return { ffmpeg, ffprobe, source };
}

// Children still running when the process exits are killed, so none outlives us.
const running = new Set<ChildProcess>();
let exitHook = false;
function track(child: ChildProcess): void {
  running.add(child);
  if (!exitHook) {
    exitHook = true;
    process.once("exit", () => {
      for (const c of running) c.kill("SIGKILL");
    });
  }
}

/** ffmpeg/ffprobe processes started by this module and not yet exited (for tests). */
export function runningChildren(): number {
  return running.size;
}

export interface RunOptions {
  /** "ffprobe" or "ffmpeg", for messages. */
  what: string;
  signal?: AbortSignal;
  /** The time by which the process must be done (performance.now() clock). */
  deadline: number;
  /** The limit the deadline came from, for the timeout message. */
  timeoutMs: number;
  /** What is being read, for the errors' class, code and wording. Default "video". */
  media?: ToolMedia;
  /** Streams stdout here instead of collecting it. Throwing stops the process and rejects with the error. */
  onStdout?: (chunk: Buffer) => void;
  /** Most stdout bytes collected when onStdout is not given. */
  maxStdout?: number;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  /** The last 16 KiB of stderr. */
  stderr: string;
}

const STDERR_TAIL = 16 * 1024;

/**
 * Runs a binary with no stdin. Settles only after the child has exited: on abort, timeout or
 * an onStdout error the child is killed first, then the promise rejects.
 */
export function runTool(bin: string, args: string[], options: RunOptions): Promise<RunResult> {
  const { what, signal, deadline, timeoutMs, onStdout, maxStdout = 16 * 1024 * 1024, media = "video" } = options;
  return new Promise<RunResult>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortError(`Reading the ${media} was aborted.`, { cause: signal.reason }));
      return;
    }
    const remaining = deadline - performance.now();
    if (remaining <= 0) {
      reject(timeoutError(what, timeoutMs, media));
      return;
    }
    let failure: unknown;
    const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], windowsHide: true });
    track(child);
    const stop = (error: unknown) => {
      failure ??= error;
      child.kill("SIGKILL");
    };
    const timer = setTimeout(() => stop(timeoutError(what, timeoutMs, media)), remaining);
    const onAbort = () => stop(new AbortError(`Reading the ${media} was aborted.`, { cause: signal?.reason }));
    signal?.addEventListener("abort", onAbort, { once: true });

    const chunks: Buffer[] = [];
    let size = 0;
    child.stdout.on("data", (chunk: Buffer) => {
      if (failure) return;
      if (onStdout) {
        try {
          onStdout(chunk);
        } catch (error) {
          stop(error);
        }
        return;
      }
      size += chunk.length;
      if (size > maxStdout) stop(mediaError(media, "decode", `${what} printed more than ${maxStdout} bytes; the input is not a plain ${media}.`));
      else chunks.push(chunk);
    });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text: string) => {
      stderr = (stderr + text).slice(-STDERR_TAIL);
    });
    child.on("error", (error: NodeJS.ErrnoException) => {
      // Spawn failures (ENOENT, EACCES): "close" may not follow, so settle here.
      if (error.code === "ENOENT" || error.code === "EACCES") {
        failure ??= mediaError(media, "notFound", `Could not run ${what} at ${bin}: ${error.message}. ${what === "ffprobe" ? FFPROBE_FIXES : ffmpegFixes(media)}`, {
          cause: error,
        });
      } else failure ??= error;
    });
    child.on("close", (code, killSignal) => {
      running.delete(child);
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (failure) reject(failure);
      else resolve({ code, signal: killSignal, stdout: Buffer.concat(chunks, size), stderr });
    });
  });
}

// What to do about a timeout, per kind of media.
const TIMEOUT_HINTS: Record<ToolMedia, string> = {
  video: "Sample fewer frames, trim with start/end, or raise timeoutMs for long videos.",
  audio: "Raise timeoutMs for long or slow-to-decode audio.",
};

function timeoutError(what: string, timeoutMs: number, media: ToolMedia): VideoError | AudioError {
  return mediaError(media, "timeout", `${what} did not finish within the ${media}'s timeoutMs of ${timeoutMs} ms. ${TIMEOUT_HINTS[media]}`);
}
