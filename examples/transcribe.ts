// Transcribes one audio clip: streams the text, then prints how long the clip is, how many tokens
// it became, the token counts and the timings.
//   npx tsx examples/transcribe.ts [audio] [--prompt "..."] [--max-tokens 128]
//                                  [--model model.gguf --mmproj mmproj.gguf]
// [audio] is a path or an http(s)/file:/data: URL of anything ffmpeg reads (WAV, MP3, FLAC, Ogg,
// M4A, the sound of a video...). Without --model it uses the tiny generated Qwen2-Audio test model
// (random weights: the "transcription" is gibberish, but every step runs for real); without a
// clip, a 2 s 440 Hz tone made here as WAV bytes in memory (nothing is written to disk).
// Needs ffmpeg to decode the audio (Debian/Ubuntu: apt-get install ffmpeg, or npm install
// ffmpeg-static). For the text alone, without streaming: `await lm.describeAudio(clip)`.
import path from "node:path";

import { loadAudio, MultimodalLM, MultimodalLMError, type AudioInput } from "multimodal-lm";
import { ensureTestModel } from "multimodal-lm/test-models";

import { generationOptions, integerOption, modelFiles, modelOptions, parseOptions } from "./shared/model.js";
import { printStream, timingsLine, usageLine } from "./shared/report.js";

const { values, positionals } = parseOptions({ allowPositionals: true, options: { ...modelOptions, ...generationOptions } });
const maxTokens = integerOption(values["max-tokens"], "--max-tokens", 128);

/** A mono 16-bit PCM WAV of a sine tone, as bytes. */
function toneWav(seconds: number, hz: number, sampleRate = 16_000): Buffer {
  const samples = Math.round(seconds * sampleRate);
  const wav = Buffer.alloc(44 + samples * 2);
  wav.write("RIFF", 0, "latin1");
  wav.writeUInt32LE(36 + samples * 2, 4);
  wav.write("WAVEfmt ", 8, "latin1");
  wav.writeUInt32LE(16, 16); // fmt chunk size
  wav.writeUInt16LE(1, 20); // PCM
  wav.writeUInt16LE(1, 22); // mono
  wav.writeUInt32LE(sampleRate, 24);
  wav.writeUInt32LE(sampleRate * 2, 28); // bytes per second
  wav.writeUInt16LE(2, 32); // bytes per frame
  wav.writeUInt16LE(16, 34); // bits per sample
  wav.write("data", 36, "latin1");
  wav.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) wav.writeInt16LE(Math.round(0.5 * 32767 * Math.sin((2 * Math.PI * hz * i) / sampleRate)), 44 + i * 2);
  return wav;
}

try {
  const clip: AudioInput = positionals[0] ?? toneWav(2, 440);
  const label = positionals[0] ?? "a 2 s 440 Hz tone";
  // Decoded once before the model loads, so that a missing file, a clip with no sound or a missing
  // ffmpeg fails at once; it also gives the clip's length. (Every llama.cpp audio encoder so far
  // takes 16 kHz; generateStream decodes the clip again at the model's own rate.)
  const audio = await loadAudio(clip, 16_000);

  const files = values.model === undefined && values.mmproj === undefined ? await ensureTestModel("qwen2audio-tiny") : await modelFiles(values);
  console.error(`loading ${values.model === undefined ? "the tiny random-weight test model qwen2audio-tiny (its text is gibberish)" : path.basename(files.model)}`);
  await using lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });

  const result = await printStream(
    lm.generateStream({
      prompt: values.prompt ?? "Transcribe this audio.",
      audios: [clip],
      maxTokens,
    }),
  );
  const { mediaTokens } = result.usage;
  console.log(
    `\naudio: ${label}, ${audio.seconds.toFixed(2)} s → ${mediaTokens} tokens (${(mediaTokens / audio.seconds).toFixed(1)} per second) ` +
      `at ${lm.info.audioSampleRate} Hz`,
  );
  console.log(usageLine(result));
  console.log(timingsLine(result));
} catch (error) {
  // The library's errors are typed: one line with the code and what to do; anything else is a bug.
  if (!(error instanceof MultimodalLMError)) throw error;
  console.error(`error ${error.code}: ${error.message}`);
  process.exitCode = 1;
}
