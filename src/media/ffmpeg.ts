// Finding ffmpeg/ffprobe and running them as bounded child processes: a wall-clock limit,
// AbortSignal support, capped output, and the child always reaped before the promise settles.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, dirname, join } from "node:path";

import { AbortError, VideoError } from "../errors.js";

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

const FFMPEG_FIXES =
  "Fix it one of four ways: pass the path as the ffmpeg option (video: { ffmpeg: '/path/to/ffmpeg' }), " +
  "set MULTIMODAL_LM_FFMPEG=/path/to/ffmpeg, run `npm install ffmpeg-static`, " +
  "or install ffmpeg on PATH (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg).";

const FFPROBE_FIXES =
  "Fix it one of four ways: pass the path as the ffprobe option (video: { ffprobe: '/path/to/ffprobe' }), " +
  "set MULTIMODAL_LM_FFPROBE=/path/to/ffprobe, run `npm install ffprobe-static` (ffmpeg-static ships no ffprobe), " +
  "or install ffmpeg on PATH, which brings ffprobe (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg).";

/**
 * Finds ffmpeg: the explicit option, then MULTIMODAL_LM_FFMPEG, then the ffmpeg-static package
 * (only if its binary is really there), then PATH. ffprobe: the explicit option, then
 * MULTIMODAL_LM_FFPROBE, then next to ffmpeg, then ffprobe-static, then PATH.
 */
export function findFfmpeg(locations: FfmpegLocations = {}, env: NodeJS.ProcessEnv = process.env): FfmpegBinaries {
  let ffmpeg: string | undefined;
  let source: FfmpegBinaries["source"];
  const explicit = (path: string, where: string, fixes: string): string => {
    if (isExecutable(path)) return path;
    throw new VideoError("E_FFMPEG_NOT_FOUND", `${where} is ${path}, which is not an executable file. ${fixes}`);
  };
  if (locations.ffmpeg !== undefined) {
    ffmpeg = explicit(locations.ffmpeg, "The ffmpeg option", FFMPEG_FIXES);
    source = "option";
  } else if (env.MULTIMODAL_LM_FFMPEG) {
    ffmpeg = explicit(env.MULTIMODAL_LM_FFMPEG, "MULTIMODAL_LM_FFMPEG", FFMPEG_FIXES);
    source = "MULTIMODAL_LM_FFMPEG";
  } else if ((ffmpeg = fromPackage("ffmpeg-static"))) {
    source = "ffmpeg-static";
  } else if ((ffmpeg = onPath("ffmpeg", env))) {
    source = "PATH";
  } else {
    throw new VideoError("E_FFMPEG_NOT_FOUND", `Reading video needs ffmpeg, and none was found. ${FFMPEG_FIXES}`);
  }

  let ffprobe: string | undefined;
  if (locations.ffprobe !== undefined) ffprobe = explicit(locations.ffprobe, "The ffprobe option", FFPROBE_FIXES);
  else if (env.MULTIMODAL_LM_FFPROBE) ffprobe = explicit(env.MULTIMODAL_LM_FFPROBE, "MULTIMODAL_LM_FFPROBE", FFPROBE_FIXES);
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
  const { what, signal, deadline, timeoutMs, onStdout, maxStdout = 16 * 1024 * 1024 } = options;
  return new Promise<RunResult>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortError(`Reading the video was aborted.`, { cause: signal.reason }));
      return;
    }
    const remaining = deadline - performance.now();
    if (remaining <= 0) {
      reject(timeoutError(what, timeoutMs));
      return;
    }
    let failure: unknown;
    const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], windowsHide: true });
    track(child);
    const stop = (error: unknown) => {
      failure ??= error;
      child.kill("SIGKILL");
    };
    const timer = setTimeout(() => stop(timeoutError(what, timeoutMs)), remaining);
    const onAbort = () => stop(new AbortError("Reading the video was aborted.", { cause: signal?.reason }));
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
      if (size > maxStdout) stop(new VideoError("E_VIDEO_DECODE", `${what} printed more than ${maxStdout} bytes; the input is not a plain video.`));
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
        failure ??= new VideoError("E_FFMPEG_NOT_FOUND", `Could not run ${what} at ${bin}: ${error.message}. ${what === "ffprobe" ? FFPROBE_FIXES : FFMPEG_FIXES}`, {
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

function timeoutError(what: string, timeoutMs: number): VideoError {
  return new VideoError(
    "E_VIDEO_TIMEOUT",
    `${what} did not finish within the video's timeoutMs of ${timeoutMs} ms. Sample fewer frames, trim with start/end, or raise timeoutMs for long videos.`,
  );
}
