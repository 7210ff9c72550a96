// `multimodal-lm describe`: one request with every image, video and audio clip given, streamed to stdout.
import { Command } from "commander";

import type { ChatContentPart } from "../messages.js";
import type { GenerateResult } from "../multimodal-lm.js";
import type { TextStream } from "../stream.js";
import {
  addLoadOptions,
  addModelOption,
  addSamplingOptions,
  addVideoOptions,
  samplingFrom,
  videoFrom,
  type LoadFlags,
  type SamplingFlags,
  type VideoFlags,
} from "./flags.js";
import { classifyInput, type MediaInput } from "./inputs.js";
import { withModel } from "./model.js";
import { progressBar } from "./progress.js";
import { isAbortError, summary } from "./report.js";
import { onInterrupt } from "./signals.js";

interface DescribeFlags extends LoadFlags, SamplingFlags, VideoFlags {
  model: string;
  prompt?: string;
  json?: boolean;
  verbose?: boolean;
}

/**
 * "Describe this image.", "Describe these videos.", "Describe these images and videos."; audio
 * alone is transcribed ("Transcribe this audio.", as describeAudio), with other media described.
 */
export function defaultPrompt(media: MediaInput[]): string {
  const count = (kind: MediaInput["kind"]) => media.filter((m) => m.kind === kind).length;
  const audios = count("audio");
  if (audios === media.length) return audios === 1 ? "Transcribe this audio." : "Transcribe these audio clips.";
  if (media.length === 1) return `Describe this ${media[0]!.kind}.`;
  const names = [
    ["images", count("image")],
    ["videos", count("video")],
    ["audio clips", audios],
  ]
    .filter(([, n]) => (n as number) > 0)
    .map(([name]) => name as string);
  return `Describe these ${names.length === 1 ? names[0] : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`}.`;
}

export function describeCommand(): Command {
  const command = new Command("describe")
    .description("describe images and videos, or transcribe audio: all inputs go into one request, in order, and the answer streams to stdout")
    .argument("<inputs...>", "image, video or audio files, or URLs (http(s):, data:, file:)");
  addModelOption(command);
  command.option("-p, --prompt <text>", 'the question (default: "Describe this image.", "Describe this video.", "Describe these images." ...)');
  addLoadOptions(command);
  addSamplingOptions(command);
  addVideoOptions(command);
  command
    .option("--json", "print one JSON object (text, stopReason, usage, videos, timings) instead of streaming the text")
    .option("--verbose", "print token counts and speeds on stderr")
    .addHelpText(
      "after",
      "\nA local file is an image when sharp can read it, else an audio clip when its extension is an audio one\n" +
        "(.wav, .mp3, .flac, .ogg, .opus, .m4a, ...), else a video. An http(s) URL is a video or an audio clip when\n" +
        "its path ends in such an extension, else an image; a data: URL goes by its type. Audio needs a model that\n" +
        "takes it (an audio projector: Ultravox, Qwen2-Audio, Qwen2.5-Omni).\n\n" +
        "Examples:\n  multimodal-lm describe photo.jpg clip.mp4 -m model.gguf --fps 1 -p \"What changed?\"\n" +
        "  multimodal-lm describe interview.mp3 -m ultravox.gguf\n" +
        "  multimodal-lm describe talk.mp4 -m qwen2.5-omni.gguf --video-audio",
    )
    .action((inputs: string[], flags: DescribeFlags) => describe(inputs, flags));
  return command;
}

async function describe(inputs: string[], flags: DescribeFlags): Promise<void> {
  // Classified before loading, so a missing file fails at once.
  const media: MediaInput[] = [];
  for (const input of inputs) media.push({ input, kind: await classifyInput(input) });
  const prompt = flags.prompt ?? defaultPrompt(media);
  const interrupt = new AbortController();
  const stopListening = onInterrupt(() => interrupt.abort());
  try {
    await withModel(flags.model, flags, interrupt.signal, async (lm) => {
      const frames = progressBar("extracting frames");
      const hasVideo = media.some((m) => m.kind === "video");
      const options = {
        ...samplingFrom(flags),
        signal: interrupt.signal,
        video: { ...videoFrom(flags), ...(hasVideo ? { onProgress: (f: number) => frames.update(f) } : {}) },
      };
      let stream: TextStream<GenerateResult>;
      const firstVideo = media.findIndex((m) => m.kind === "video");
      const hasAudio = media.some((m) => m.kind === "audio");
      if (!hasAudio && (firstVideo < 0 || media.slice(firstVideo).every((m) => m.kind === "video"))) {
        // generate() puts images before videos, which is the order given here.
        const images = media.filter((m) => m.kind === "image").map((m) => m.input);
        const videos = media.filter((m) => m.kind === "video").map((m) => m.input);
        stream = lm.generateStream({ prompt, images, videos, ...options });
      } else {
        // A video before an image, or audio: content parts keep the order given.
        const parts: ChatContentPart[] = media.map((m): ChatContentPart =>
          m.kind === "image" ? { type: "image", image: m.input } : m.kind === "audio" ? { type: "audio", audio: m.input } : { type: "video", video: m.input },
        );
        stream = lm.chatStream({ messages: [{ role: "user", content: [...parts, { type: "text", text: prompt }] }], ...options });
      }
      try {
        for await (const piece of stream) {
          frames.stop();
          if (!flags.json) process.stdout.write(piece);
        }
      } finally {
        frames.stop();
      }
      const result = await stream.result;
      process.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : "\n");
      if (flags.verbose) process.stderr.write(`${summary(result)}\n`);
    });
  } catch (error) {
    if (interrupt.signal.aborted && isAbortError(error)) {
      process.stdout.write("\n");
      process.exitCode = 130;
      return;
    }
    throw error;
  } finally {
    stopListening();
  }
}
