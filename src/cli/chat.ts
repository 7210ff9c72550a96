// `multimodal-lm chat`: a terminal conversation. Lines are user messages; /image and /video attach
// media to the next one. Piped stdin is read as a script, without prompts, so it can be tested.
import { basename } from "node:path";
import { createInterface } from "node:readline";

import { Command } from "commander";

import { MultimodalLMError } from "../errors.js";
import type { ChatContentPart, ChatMessage } from "../messages.js";
import type { MultimodalLM } from "../multimodal-lm.js";
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
import { checkImageInput, checkVideoInput, type MediaKind } from "./inputs.js";
import { loadModel } from "./model.js";
import { progressBar } from "./progress.js";
import { isAbortError, reportError, summary } from "./report.js";
import { onInterrupt } from "./signals.js";

interface ChatFlags extends LoadFlags, SamplingFlags, VideoFlags {
  model: string;
  system?: string;
  verbose?: boolean;
}

const COMMANDS = `Commands:
  /image <path|url>  attach an image to the next message
  /video <path|url>  attach a video to the next message (--video-audio: with its sound)
  /audio <path|url>  attach an audio clip to the next message (models that take audio)
  /reset             forget the conversation (the --system message stays)
  /help              show this list
  /exit, /quit       leave (also Ctrl-D)
Ctrl-C stops a reply; at the prompt it leaves.`;

export function chatCommand(): Command {
  const command = new Command("chat").description("chat in the terminal, with images, videos and audio attached by /image, /video and /audio");
  addModelOption(command);
  command.option("--system <text>", "system message that starts the conversation");
  addLoadOptions(command);
  addSamplingOptions(command);
  addVideoOptions(command);
  command
    .option("--verbose", "print token counts and speeds on stderr after each reply")
    .addHelpText("after", `\n${COMMANDS}\n\nWhen stdin is not a terminal, its lines are read as a script, without prompts.`)
    .action((flags: ChatFlags) => chat(flags));
  return command;
}

async function chat(flags: ChatFlags): Promise<void> {
  const loading = new AbortController();
  const stopLoading = onInterrupt(() => loading.abort());
  let lm: MultimodalLM;
  try {
    lm = await loadModel(flags.model, flags, loading.signal);
  } catch (error) {
    if (loading.signal.aborted && isAbortError(error)) {
      process.exitCode = 130;
      return;
    }
    throw error;
  } finally {
    stopLoading();
  }
  try {
    await new ChatSession(lm, flags).run();
  } finally {
    await lm.dispose();
  }
}

class ChatSession {
  private readonly interactive = Boolean(process.stdin.isTTY);
  private history: ChatMessage[];
  private attached: ChatContentPart[] = [];
  private generation: AbortController | undefined;

  constructor(
    private readonly lm: MultimodalLM,
    private readonly flags: ChatFlags,
  ) {
    this.history = this.fresh();
  }

  private fresh(): ChatMessage[] {
    return this.flags.system !== undefined ? [{ role: "system", content: this.flags.system }] : [];
  }

  async run(): Promise<void> {
    const rl = createInterface({
      input: process.stdin,
      ...(this.interactive ? { output: process.stdout, prompt: "> " } : {}),
      terminal: this.interactive,
    });
    let closed = false;
    rl.on("close", () => (closed = true));
    // Ctrl-C stops the reply being generated; with none, it ends the chat. SIGTERM always ends it.
    let terminated = false;
    const interrupt = (signal: NodeJS.Signals = "SIGINT") => {
      terminated ||= signal === "SIGTERM";
      this.generation?.abort();
      if (!this.generation || terminated) rl.close();
    };
    rl.on("SIGINT", () => interrupt());
    const stopListening = onInterrupt(interrupt);
    if (this.interactive) {
      process.stderr.write(`Chatting with ${basename(this.flags.model)}. /help lists the commands; Ctrl-D leaves.\n`);
      rl.prompt();
    }
    let byCommand = false;
    try {
      for await (const line of rl) {
        if (terminated) break;
        byCommand = await this.handle(line.trim());
        if (byCommand || terminated) break;
        if (this.interactive && !closed) rl.prompt();
      }
    } finally {
      stopListening();
      rl.close();
    }
    // Ctrl-C or Ctrl-D left the cursor after the prompt; give the shell a fresh line.
    if (this.interactive && !byCommand) process.stdout.write("\n");
  }

  /** Handles one line; true when the chat should end. */
  private async handle(line: string): Promise<boolean> {
    if (line === "") return false;
    if (!line.startsWith("/")) {
      await this.reply(line);
      return false;
    }
    const space = line.search(/\s/);
    const command = space < 0 ? line : line.slice(0, space);
    const argument = space < 0 ? "" : unquote(line.slice(space + 1).trim());
    switch (command) {
      case "/image":
      case "/video":
      case "/audio":
        await this.attach(command.slice(1) as MediaKind, argument);
        return false;
      case "/reset":
        this.history = this.fresh();
        this.attached = [];
        process.stderr.write("conversation cleared\n");
        return false;
      case "/help":
        process.stderr.write(`${COMMANDS}\n`);
        return false;
      case "/exit":
      case "/quit":
        return true;
      default:
        process.stderr.write(`multimodal-lm: unknown command ${command}; /help lists the commands\n`);
        return false;
    }
  }

  private async attach(kind: MediaKind, input: string): Promise<void> {
    if (input === "") {
      process.stderr.write(`multimodal-lm: /${kind} needs a path or URL: /${kind} <path|url>\n`);
      return;
    }
    try {
      await (kind === "image" ? checkImageInput(input) : checkVideoInput(input));
    } catch (error) {
      if (!(error instanceof MultimodalLMError)) throw error;
      reportError(error);
      if (kind === "image" && error.code === "E_IMAGE_DECODE") process.stderr.write("(for a video, use /video; for sound, /audio)\n");
      return;
    }
    this.attached.push(kind === "image" ? { type: "image", image: input } : kind === "audio" ? { type: "audio", audio: input } : { type: "video", video: input });
    process.stderr.write(`attached ${kind} ${input}\n`);
  }

  private async reply(text: string): Promise<void> {
    const message: ChatMessage = { role: "user", content: this.attached.length > 0 ? [...this.attached, { type: "text", text }] : text };
    this.attached = [];
    const generation = new AbortController();
    this.generation = generation;
    const frames = progressBar("extracting frames");
    let wrote = false;
    try {
      const stream = this.lm.chatStream({
        messages: [...this.history, message],
        ...samplingFrom(this.flags),
        video: { ...videoFrom(this.flags), onProgress: (f) => frames.update(f) },
        signal: generation.signal,
      });
      for await (const piece of stream) {
        frames.stop();
        process.stdout.write(piece);
        wrote = true;
      }
      const result = await stream.result;
      process.stdout.write("\n");
      this.history.push(message, { role: "assistant", content: result.text });
      if (this.flags.verbose) process.stderr.write(`${summary(result)}\n`);
    } catch (error) {
      if (wrote) process.stdout.write("\n");
      if (generation.signal.aborted && isAbortError(error)) {
        process.stderr.write("(stopped; this message and its reply are not kept)\n");
      } else if (error instanceof MultimodalLMError) {
        reportError(error);
        process.stderr.write("(this message is not kept; attach its media again to retry)\n");
      } else {
        throw error;
      }
    } finally {
      frames.stop();
      this.generation = undefined;
    }
  }
}

/** /image "my photo.jpg" and /image my photo.jpg both name the file "my photo.jpg". */
function unquote(text: string): string {
  const quoted = /^(["'])(.*)\1$/.exec(text);
  return quoted ? quoted[2]! : text;
}
