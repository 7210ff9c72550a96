// POST /v1/audio/transcriptions: OpenAI's multipart form (file, model, prompt, language,
// response_format, temperature, and vLLM's sampling extras) → one MultimodalLM.generate call on
// the uploaded clip with a transcription instruction, answered as {text, usage} or as text/plain.
//
// The model is a general audio-language model, not Whisper, so OpenAI's fields become words of
// the instruction: the library's own "Transcribe this audio.", the language's English name when
// `language` is given, and `prompt` as context (OpenAI's prompt guides spelling and style, or is
// the text before this segment: it is never an instruction).
import type { ServerResponse } from "node:http";

import { MultimodalLMError } from "../errors.js";
import type { GenerateResult, MultimodalLM } from "../multimodal-lm.js";
import type { SamplingOptions } from "../options.js";
import { describeValue } from "../validate.js";
import type { CompletionOutcome } from "./chat-completions.js";
import { HttpError } from "./http-errors.js";

/** The instruction when neither `language` nor `prompt` is given: describeAudio's default. */
export const TRANSCRIBE_INSTRUCTION = "Transcribe this audio.";

/** Formats this server writes; the others OpenAI knows need timestamps or speakers, which the model does not give. */
const FORMATS = ["json", "text"] as const;
const TIMED_FORMATS = ["srt", "vtt", "verbose_json", "diarized_json"];

export type TranscriptionFormat = (typeof FORMATS)[number];

export interface TranscriptionRequest {
  model: string | undefined;
  /** The uploaded clip and its file name (for messages). */
  file: { bytes: Uint8Array; name: string };
  /** What the model is asked: see transcriptionInstruction. */
  instruction: string;
  responseFormat: TranscriptionFormat;
  /** temperature (default 0, as OpenAI's), and vLLM's seed, top_p, top_k, min_p, penalties and max_completion_tokens. */
  sampling: Omit<SamplingOptions, "signal">;
}

const languageNames = new Intl.DisplayNames(["en"], { type: "language", fallback: "none" });

/** The English name of an ISO 639-1 (or 639-2/3, BCP 47) language code, e.g. "de" → "German"; undefined when unknown. */
export function languageName(code: string): string | undefined {
  const tag = code.trim().replace(/_/g, "-");
  if (!/^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(tag)) return undefined;
  try {
    return languageNames.of(tag);
  } catch {
    return undefined;
  }
}

/**
 * The instruction a transcription request sends with the clip: "Transcribe this audio.", then
 * "The speech is in German." for `language: "de"`, then `prompt` as context on a line of its own.
 * With neither, it is exactly describeAudio's default prompt, so
 * `lm.describeAudio(clip, { prompt: transcriptionInstruction(fields), temperature: 0 })` gives
 * the server's text for the same fields.
 */
export function transcriptionInstruction(fields: { language?: string; prompt?: string } = {}): string {
  let instruction = TRANSCRIBE_INSTRUCTION;
  if (fields.language !== undefined && fields.language !== "") {
    const name = languageName(fields.language);
    if (name === undefined) {
      throw new HttpError(
        400,
        "E_INVALID_ARGUMENT",
        `Expected an ISO-639-1 language code such as "en" or "de" for language but received ${describeValue(fields.language)}, which names no language.`,
        { param: "language" },
      );
    }
    instruction += ` The speech is in ${name}.`;
  }
  if (fields.prompt !== undefined && fields.prompt.trim() !== "") {
    instruction += `\nContext, for spelling and style only (it is not part of the audio): ${fields.prompt}`;
  }
  return instruction;
}

/** True for a multipart/form-data content type with a boundary. */
export function isMultipartForm(contentType: string | undefined): boolean {
  return contentType !== undefined && /^\s*multipart\/form-data\s*;.*\bboundary=/i.test(contentType);
}

/** The 400 for a body that is not a multipart form. */
export function notMultipart(contentType: string | undefined): HttpError {
  const sent = contentType === undefined || contentType.trim() === "" ? "no Content-Type" : `Content-Type ${contentType.split(";")[0]!.trim()}`;
  const why = contentType !== undefined && /^\s*multipart\/form-data/i.test(contentType) ? " without a boundary" : "";
  return new HttpError(
    400,
    "E_INVALID_ARGUMENT",
    `POST /v1/audio/transcriptions takes a multipart/form-data body (the audio as the field "file", and "model"), as OpenAI's API does; this request has ${sent}${why}. ` +
      "With curl: -F file=@clip.wav -F model=default.",
  );
}

function invalid(param: string, expected: string, value: unknown): HttpError {
  return new HttpError(400, "E_INVALID_ARGUMENT", `Expected ${expected} for ${param} but received ${describeValue(value)}`, { param });
}

/** A text field: undefined when absent or empty (some clients send every field); a file where text belongs is refused. */
function text(form: FormData, key: string): string | undefined {
  const values = form.getAll(key);
  if (values.length === 0) return undefined;
  if (values.length > 1) throw new HttpError(400, "E_INVALID_ARGUMENT", `The form has ${values.length} fields named ${key}; send one.`, { param: key });
  const value = values[0]!;
  if (typeof value !== "string") {
    throw new HttpError(400, "E_INVALID_ARGUMENT", `${key} must be a text field, but the form sends a file (${JSON.stringify(value.name)}) under that name.`, { param: key });
  }
  return value === "" ? undefined : value;
}

function number(form: FormData, key: string, min: number, max: number): number | undefined {
  const value = text(form, key);
  if (value === undefined) return undefined;
  const n = Number(value.trim());
  if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) throw invalid(key, `a number between ${min} and ${max}`, value);
  return n;
}

function integer(form: FormData, key: string, min: number, max: number): number | undefined {
  const value = text(form, key);
  if (value === undefined) return undefined;
  const n = Number(value.trim());
  if (value.trim() === "" || !Number.isSafeInteger(n) || n < min || n > max) throw invalid(key, `an integer between ${min} and ${max}`, value);
  return n;
}

function boolean(form: FormData, key: string): boolean | undefined {
  const value = text(form, key);
  if (value === undefined) return undefined;
  const v = value.trim().toLowerCase();
  if (v === "true" || v === "1") return true;
  if (v === "false" || v === "0") return false;
  throw invalid(key, '"true" or "false"', value);
}

const MAX_SEED = 0xfffffffe;

/** temperature (OpenAI's, 0–1, default 0) and vLLM's sampling extras, form names → SamplingOptions. */
function readSampling(form: FormData): Omit<SamplingOptions, "signal"> {
  const sampling: Omit<SamplingOptions, "signal"> = { temperature: number(form, "temperature", 0, 1) ?? 0 };
  const maxTokens = integer(form, "max_completion_tokens", 1, 1 << 30) ?? integer(form, "max_tokens", 1, 1 << 30);
  if (maxTokens !== undefined) sampling.maxTokens = maxTokens;
  const topP = number(form, "top_p", 0, 1);
  if (topP !== undefined) sampling.topP = topP;
  const topK = integer(form, "top_k", -1, 1 << 30);
  if (topK !== undefined) sampling.topK = Math.max(0, topK);
  const minP = number(form, "min_p", 0, 1);
  if (minP !== undefined) sampling.minP = minP;
  const repetition = number(form, "repetition_penalty", 0, 100);
  if (repetition !== undefined) sampling.repeatPenalty = repetition;
  const presence = number(form, "presence_penalty", -2, 2);
  if (presence !== undefined) sampling.presencePenalty = presence;
  const frequency = number(form, "frequency_penalty", -2, 2);
  if (frequency !== undefined) sampling.frequencyPenalty = frequency;
  const seed = integer(form, "seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  // Any integer, as in chat completions; the sampler takes 0..2^32-2.
  if (seed !== undefined) sampling.seed = ((seed % (MAX_SEED + 1)) + MAX_SEED + 1) % (MAX_SEED + 1);
  return sampling;
}

/** Fields OpenAI defines whose effect this server cannot give: refused, rather than silently answering without it. */
function refuseUnsupported(form: FormData): void {
  if (boolean(form, "stream") === true) {
    throw new HttpError(400, "E_INVALID_ARGUMENT", "Streamed transcriptions (stream=true) are not supported by this server; send the request without stream to get the whole text at once.", {
      param: "stream",
    });
  }
  for (const key of ["timestamp_granularities[]", "timestamp_granularities"]) {
    if (form.getAll(key).some((v) => v !== "")) {
      throw new HttpError(400, "E_INVALID_ARGUMENT", "timestamp_granularities needs response_format verbose_json, which this server does not support: the model gives no timestamps.", {
        param: "timestamp_granularities",
      });
    }
  }
  for (const key of ["include[]", "include"]) {
    if (form.getAll(key).some((v) => v !== "")) {
      throw new HttpError(400, "E_INVALID_ARGUMENT", "include (token logprobs of a transcription) is not supported by this server.", { param: "include" });
    }
  }
}

function readFormat(form: FormData): TranscriptionFormat {
  const format = text(form, "response_format");
  if (format === undefined) return "json";
  if ((FORMATS as readonly string[]).includes(format)) return format as TranscriptionFormat;
  if (TIMED_FORMATS.includes(format)) {
    throw new HttpError(
      400,
      "E_INVALID_ARGUMENT",
      `response_format ${JSON.stringify(format)} is not supported by this server: it needs timestamps or speakers, which the model does not give. Use "json" (the default) or "text".`,
      { param: "response_format" },
    );
  }
  throw invalid("response_format", '"json" or "text"', format);
}

/** The uploaded clip: `file` must be one file part (not a text field). */
async function readFile(form: FormData): Promise<{ bytes: Uint8Array; name: string }> {
  const values = form.getAll("file");
  if (values.length === 0) {
    throw new HttpError(400, "E_INVALID_ARGUMENT", 'The request has no "file": send the audio as a multipart file field named file (curl: -F file=@clip.wav).', { param: "file" });
  }
  if (values.length > 1) throw new HttpError(400, "E_INVALID_ARGUMENT", `The form has ${values.length} fields named file; send one clip per request.`, { param: "file" });
  const file = values[0]!;
  if (typeof file === "string") {
    throw new HttpError(400, "E_INVALID_ARGUMENT", "file must be a file upload (a part with a filename; curl: -F file=@clip.wav), not a text field.", { param: "file" });
  }
  return { bytes: new Uint8Array(await file.arrayBuffer()), name: file.name };
}

/** Parses the multipart body (already read within the body limit) into a request; throws HttpError(400) naming the field at fault. */
export async function parseTranscriptionRequest(body: Uint8Array, contentType: string): Promise<TranscriptionRequest> {
  let form: FormData;
  try {
    form = await new Response(body, { headers: { "content-type": contentType } }).formData();
  } catch (error) {
    throw new HttpError(400, "E_INVALID_ARGUMENT", `The request body is not a valid multipart/form-data body (${(error as Error).message}).`, { cause: error });
  }
  refuseUnsupported(form);
  const model = text(form, "model");
  const responseFormat = readFormat(form);
  const sampling = readSampling(form);
  const instruction = transcriptionInstruction({ language: text(form, "language"), prompt: text(form, "prompt") });
  const file = await readFile(form);
  return { model, file, instruction, responseFormat, sampling };
}

/** A model without an audio encoder cannot transcribe: a 400 that says so, before anything is decoded. */
export function checkAudioModel(lm: MultimodalLM, modelName: string): void {
  const { capabilities } = lm.info;
  if (capabilities.audio) return;
  const has = capabilities.vision ? "vision (images and video) only" : "no media";
  throw new HttpError(
    400,
    "E_INVALID_ARGUMENT",
    `The model "${modelName}" cannot transcribe audio: its projector takes ${has}. Serve a model whose projector has an audio encoder (Ultravox, Qwen2-Audio; capabilities.audio in /v1/models).`,
    { param: "model" },
  );
}

const AUDIO_CODES = new Set(["E_AUDIO_DECODE", "E_AUDIO_TOO_LONG", "E_AUDIO_TIMEOUT", "E_INVALID_DATA_URL"]);

/** The library's errors about the clip, with `param: "file"` and the upload's name in place of "The audio buffer". */
function fileError(error: unknown, file: { bytes: Uint8Array; name: string }): unknown {
  if (!(error instanceof MultimodalLMError) || error instanceof HttpError) return error;
  if (!AUDIO_CODES.has(error.code) && !(error.param ?? "").startsWith("audios")) return error;
  const label = file.name ? `The file ${JSON.stringify(file.name)} (${file.bytes.length} bytes)` : `The file (${file.bytes.length} bytes)`;
  const message = error.message.replace(/^The audio buffer \(\d+ bytes\)/, label).split("audios[0]").join("file");
  return new HttpError(400, error.code, message, { param: "file", cause: error });
}

function usageOf(result: GenerateResult) {
  const { promptTokens, completionTokens, totalTokens, mediaTokens } = result.usage;
  return {
    type: "tokens" as const,
    input_tokens: promptTokens,
    input_token_details: { text_tokens: promptTokens - mediaTokens, audio_tokens: mediaTokens },
    output_tokens: completionTokens,
    total_tokens: totalTokens,
  };
}

/** Transcribes the clip and writes the answer: `{text, usage}` as JSON, or the text alone as text/plain. */
export async function runTranscription(lm: MultimodalLM, request: TranscriptionRequest, res: ServerResponse, signal: AbortSignal): Promise<CompletionOutcome> {
  let result: GenerateResult;
  try {
    result = await lm.generate({ prompt: request.instruction, audios: [request.file.bytes], ...request.sampling, signal });
  } catch (error) {
    throw fileError(error, request.file);
  }
  const outcome: CompletionOutcome = {
    promptTokens: result.usage.promptTokens,
    completionTokens: result.usage.completionTokens,
    timeToFirstTokenMs: result.timings.timeToFirstTokenMs,
  };
  if (request.responseFormat === "text") {
    res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
    res.end(result.text);
  } else {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ text: result.text, usage: usageOf(result) }));
  }
  return outcome;
}
