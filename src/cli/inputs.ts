// Which media an input is. Local files are asked of sharp (an image if it can read the header,
// else an audio clip by its extension, else a video, which ffprobe then checks); URLs go by their
// data: type or their extension.
import { stat } from "node:fs/promises";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";

import sharp from "sharp";

import { FileNotFoundError, ImageError, MultimodalLMError } from "../errors.js";

export type MediaKind = "image" | "video" | "audio";

export interface MediaInput {
  input: string;
  kind: MediaKind;
}

const IMAGE_EXTENSIONS = new Set([".jpg", ".jpeg", ".png", ".webp", ".gif", ".avif", ".tif", ".tiff", ".bmp", ".svg", ".heic", ".heif"]);
const VIDEO_EXTENSIONS = new Set([".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".ogv"]);
const AUDIO_EXTENSIONS = new Set([".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif", ".aiff", ".caf", ".amr", ".ac3", ".au", ".w64"]);

function localPath(input: string): string | undefined {
  if (/^file:/i.test(input)) {
    try {
      return fileURLToPath(input);
    } catch (error) {
      throw new MultimodalLMError("E_INVALID_ARGUMENT", `The input ${input} is not a usable file: URL (${(error as Error).message}).`, { cause: error });
    }
  }
  if (/^(https?|data):/i.test(input)) return undefined;
  return input;
}

/** Fails early, before a model is loaded, when a local input is missing. */
async function checkFile(input: string, path: string): Promise<void> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new FileNotFoundError(path, `The input ${input} does not exist. Check the path.`, { cause: error });
  }
  if (!info.isFile()) throw new FileNotFoundError(path, `The input ${input} is ${info.isDirectory() ? "a directory" : "not a regular file"}; pass an image, video or audio file.`);
}

/** undefined when sharp can read the file's header, else sharp's reason. */
async function imageProblem(path: string): Promise<string | undefined> {
  try {
    await sharp(path).metadata();
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

export async function classifyInput(input: string): Promise<MediaKind> {
  if (/^data:/i.test(input)) return /^data:video\//i.test(input) ? "video" : /^data:audio\//i.test(input) ? "audio" : "image";
  if (/^https?:/i.test(input)) {
    let url: URL;
    try {
      url = new URL(input);
    } catch {
      throw new MultimodalLMError("E_INVALID_ARGUMENT", `The input ${input} is not a valid URL.`);
    }
    const extension = extname(url.pathname).toLowerCase();
    return VIDEO_EXTENSIONS.has(extension) ? "video" : AUDIO_EXTENSIONS.has(extension) ? "audio" : "image";
  }
  const path = localPath(input)!;
  await checkFile(input, path);
  const problem = await imageProblem(path);
  if (problem === undefined) return "image";
  // A broken photo.jpg is a broken image, not a video: say what sharp said.
  const extension = extname(path).toLowerCase();
  if (IMAGE_EXTENSIONS.has(extension)) throw new ImageError("E_IMAGE_DECODE", `The image ${input} could not be decoded: ${problem}`);
  return AUDIO_EXTENSIONS.has(extension) ? "audio" : "video";
}

/** Checks an input given as an image: a local file must exist and be readable by sharp. */
export async function checkImageInput(input: string): Promise<void> {
  const path = localPath(input);
  if (path === undefined) return;
  await checkFile(input, path);
  const problem = await imageProblem(path);
  if (problem !== undefined) throw new ImageError("E_IMAGE_DECODE", `The image ${input} could not be decoded: ${problem}`);
}

/** Checks an input given as a video or an audio clip: a local file must exist (ffmpeg reads it later). */
export async function checkVideoInput(input: string): Promise<void> {
  const path = localPath(input);
  if (path !== undefined) await checkFile(input, path);
}
