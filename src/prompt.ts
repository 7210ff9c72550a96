// Prompt assembly: where media go in a user turn's text, and what a video becomes there (its
// prefix, timestamp texts and frames). Pure functions of the prompt, the media counts and the
// model's marker and frame merging.
import { MediaMismatchError } from "./errors.js";
import { invalidParameter, is } from "./validate.js";

/** How a video's frames are laid out in the prompt. */
export interface VideoLayout {
  prefix: string;
  /** Seconds between timestamp texts; 0 for none. */
  timestamps: number;
}

/** llama.cpp's timestamp text: [0m5.00s]. */
export function formatTimestamp(seconds: number): string {
  const minutes = Math.floor(seconds / 60);
  return `[${minutes}m${(seconds - minutes * 60).toFixed(2)}s]`;
}

export function countOccurrences(text: string, marker: string): number {
  let n = 0;
  for (let at = text.indexOf(marker); at >= 0; at = text.indexOf(marker, at + marker.length)) n++;
  return n;
}

export function mismatch(markers: number, images: number, videos: number, marker: string, audios = 0): MediaMismatchError {
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const counts = [plural(images, "image"), plural(videos, "video"), plural(audios, "audio clip")].filter((text, i) => [images, videos, audios][i]! > 0);
  const given = counts.length === 0 ? plural(0, "image") : counts.length === 1 ? counts[0]! : `${counts.slice(0, -1).join(", ")} and ${counts.at(-1)}`;
  return new MediaMismatchError(
    `The prompt has ${plural(markers, "media marker")} (${marker}) but ${given} ${images + videos + audios === 1 ? "was" : "were"} given. ` +
      "Put one marker where each image, video or audio clip goes, or none to put them all before the text.",
  );
}

/** One user turn's content: markers before the text when it has none (the chat template comes later). */
export function userContent(marker: string, prompt: unknown, images: unknown, videos: unknown, audios: unknown = []): string {
  if (!is.string(prompt)) throw invalidParameter("prompt", "a string", prompt);
  if (!Array.isArray(images)) throw invalidParameter("images", "an array of images", images);
  if (!Array.isArray(videos)) throw invalidParameter("videos", "an array of videos", videos);
  if (!Array.isArray(audios)) throw invalidParameter("audios", "an array of audio clips", audios);
  const markers = countOccurrences(prompt, marker);
  const count = images.length + videos.length + audios.length;
  if (markers > 0 && markers !== count) throw mismatch(markers, images.length, videos.length, marker, audios.length);
  return markers === 0 ? marker.repeat(count) + prompt : prompt;
}

/**
 * A video's segments for the prompt: the prefix, then the frames, with a timestamp text before
 * a frame each time another `timestamps` seconds have passed. On models that merge frames in
 * pairs (`frameMerge` 2), timestamps go only before the first frame of a pair, so they never split one.
 */
export function videoSegments<F extends { timestamp: number }>(frames: F[], { prefix, timestamps: interval }: VideoLayout, frameMerge: number): Array<string | Omit<F, "timestamp">> {
  const segments: Array<string | Omit<F, "timestamp">> = [];
  if (prefix) segments.push(prefix);
  let next = 0;
  frames.forEach(({ timestamp, ...frame }, k) => {
    if (interval > 0 && k % frameMerge === 0 && timestamp >= next) {
      segments.push(formatTimestamp(timestamp));
      next = (Math.floor(timestamp / interval) + 1) * interval;
    }
    segments.push(frame);
  });
  return segments;
}
