#!/usr/bin/env node
// The multimodal-lm command line: describe, chat, serve and rpc-server.
import { readFileSync } from "node:fs";

import { Command } from "commander";

import { chatCommand } from "./chat.js";
import { describeCommand } from "./describe.js";
import { reportError } from "./report.js";
import { rpcServerCommand } from "./rpc-server.js";
import { serveCommand } from "./serve.js";

function packageVersion(): string {
  // lib/cli/index.js → package.json, two levels up (also from src/cli/).
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

function createProgram(): Command {
  const program = new Command("multimodal-lm")
    .description("Run vision-language models locally on llama.cpp's multimodal engine (libmtmd).")
    .version(packageVersion(), "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .helpCommand("help [command]", "show help for a command")
    .showHelpAfterError("(add --help for usage)")
    .addHelpText(
      "after",
      "\nThe projector (mmproj) is found beside the model when --mmproj is not given: the only mmproj*.gguf there,\n" +
        "or the one named after the model. Set MULTIMODAL_LM_LOG=info to see llama.cpp's log.\n\n" +
        "Examples:\n" +
        "  multimodal-lm describe photo.jpg -m model.gguf\n" +
        "  multimodal-lm chat -m model.gguf --system \"You are terse.\"\n" +
        "  multimodal-lm serve model.gguf --port 8080",
    );
  // addCommand() does not pass the program's settings (help flag, help after errors) down.
  for (const command of [describeCommand(), chatCommand(), serveCommand(), rpcServerCommand()]) program.addCommand(command.copyInheritedSettings(program));
  return program;
}

async function flush(stream: NodeJS.WriteStream): Promise<void> {
  await new Promise<void>((resolve) => stream.write("", () => resolve()));
}

async function main(argv: string[]): Promise<void> {
  // `multimodal-lm describe x.png | head -c 10`: a closed pipe is not an error.
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw error;
  });
  try {
    await createProgram().parseAsync(argv);
  } catch (error) {
    process.exitCode = reportError(error);
  }
  // Exit explicitly once output is written: an idle keep-alive socket or a paused stdin must not hold the process.
  await flush(process.stdout);
  await flush(process.stderr);
  process.exit();
}

await main(process.argv);
