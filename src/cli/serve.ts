// `multimodal-lm serve`: the OpenAI-compatible server on a loaded model, with an access log on
// stderr, until SIGINT or SIGTERM.
import { basename } from "node:path";
import { inspect } from "node:util";

import { Command, Option } from "commander";
import ipaddr from "ipaddr.js";

import type { RequestLog } from "../server/options.js";
import type { ServeOptions } from "../server/options.js";
import { checkServeOptions, startServer } from "../server/serve.js";
import { addLoadOptions, addNumberOption, collectList, type LoadFlags } from "./flags.js";
import { loadModel } from "./model.js";
import { isAbortError } from "./report.js";
import { onInterrupt } from "./signals.js";

interface ServeFlags extends LoadFlags {
  host: string;
  port: number;
  modelName?: string;
  apiKey?: string;
  allowedLocalMediaPath?: string;
  allowedMediaDomains?: string[];
  allowAllMediaDomains?: boolean;
  allowedPrivateNetworks?: string[];
  maxBodyMb: number;
  maxQueue: number;
  ui: boolean;
  metrics: boolean;
}

export function serveCommand(): Command {
  const command = new Command("serve")
    .description("serve the model with the OpenAI API (/v1/chat/completions, /v1/models, /health), Prometheus metrics at /metrics and a web chat page at /")
    .argument("<model.gguf>", "text model GGUF file");
  addLoadOptions(command, { slots: true });
  command.option("--host <host>", "interface to listen on; 0.0.0.0 for every interface", "127.0.0.1");
  addNumberOption(command, "--port <n>", "port; 0 picks a free one", { integer: true, min: 0, max: 65535 }, 8000);
  command
    .option("--model-name <name>", "model name /v1/models reports (default: the model file's name without .gguf)")
    .addOption(new Option("--api-key <key>", "require Authorization: Bearer <key> on /v1 endpoints and /metrics").env("MULTIMODAL_LM_API_KEY"))
    .option("--allowed-local-media-path <dir>", "let requests read local media files inside this directory (default: none)")
    .option("--allowed-media-domains <hosts>", "let requests fetch media from these hosts (comma-separated or repeated; *.example.com for subdomains)", collectList)
    .option("--allow-all-media-domains", "let requests fetch media from any public host")
    .option("--allowed-private-networks <cidrs>", "private networks media may still come from, e.g. 192.168.1.0/24 (comma-separated or repeated)", collectList);
  addNumberOption(command, "--max-body-mb <n>", "largest request body, in MiB", { positive: true }, 64);
  addNumberOption(command, "--max-queue <n>", "requests that may wait for a free slot (beyond the --parallel slots that run); more get 429", { integer: true, min: 0 }, 16);
  command
    .option("--no-ui", "do not serve the web chat page at /")
    .option("--no-metrics", "do not serve Prometheus metrics at /metrics")
    .addHelpText("after", "\nExample:\n  multimodal-lm serve model.gguf --port 8080 --allowed-local-media-path ./media")
    .action((model: string, flags: ServeFlags) => serve(model, flags));
  return command;
}

/** Whether `host` names this machine only (localhost, 127.0.0.0/8, ::1). */
export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  try {
    return ipaddr.process(host).range() === "loopback";
  } catch {
    return false;
  }
}

/** POST /v1/chat/completions 200 123ms 45+16 tokens */
export function accessLogLine(log: RequestLog): string {
  let line = `${log.method} ${log.path} ${log.status} ${Math.round(log.durationMs)}ms`;
  if (log.promptTokens !== undefined) line += ` ${log.promptTokens}+${log.completionTokens ?? 0} tokens`;
  if (log.code) line += ` ${log.code}`;
  if (log.aborted) line += " (client went away)";
  return line;
}

async function serve(model: string, flags: ServeFlags): Promise<void> {
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const loading = new AbortController();
  const stopListening = onInterrupt(() => {
    loading.abort();
    stop();
  });
  try {
    const modelName = flags.modelName ?? basename(model).replace(/\.gguf$/i, "");
    const options: ServeOptions = {
      host: flags.host,
      port: flags.port,
      modelName,
      ...(flags.apiKey !== undefined ? { apiKey: flags.apiKey } : {}),
      ...(flags.allowedLocalMediaPath !== undefined ? { allowedLocalMediaPath: flags.allowedLocalMediaPath } : {}),
      ...(flags.allowedMediaDomains !== undefined ? { allowedMediaDomains: flags.allowedMediaDomains } : {}),
      ...(flags.allowAllMediaDomains ? { allowAllMediaDomains: true } : {}),
      ...(flags.allowedPrivateNetworks !== undefined ? { allowedPrivateNetworks: flags.allowedPrivateNetworks } : {}),
      maxBodyBytes: Math.round(flags.maxBodyMb * 1024 * 1024),
      maxQueue: flags.maxQueue,
      ui: flags.ui,
      metrics: flags.metrics,
      onRequest: (log) => {
        process.stderr.write(`${accessLogLine(log)}\n`);
        // Clients get a generic message for internal errors; the details belong in the log.
        if (log.code === "E_INTERNAL" && log.error !== undefined) process.stderr.write(`${inspect(log.error)}\n`);
      },
    };
    // A bad media flag fails now, not after the model has loaded.
    await checkServeOptions(options);
    let lm;
    try {
      lm = await loadModel(model, { ...flags, slots: true }, loading.signal);
    } catch (error) {
      if (loading.signal.aborted && isAbortError(error)) return;
      throw error;
    }
    // The engine process (--isolation process): say when it dies and when it is back.
    lm.on("crash", (crash) => {
      const how = crash.signal ? `was killed by ${crash.signal}` : `exited with code ${crash.exitCode}`;
      const next = crash.willRestart
        ? "restarting it"
        : `gave up after ${crash.recentCrashes} crashes in a short time; requests get 503 until the server is restarted`;
      process.stderr.write(
        `multimodal-lm: the engine process ${how}; ${crash.failedRequests} running request(s) failed, ${crash.waitingRequests} waiting; ${next}\n` +
          (crash.logTail.length > 0 ? `multimodal-lm: its last output: ${crash.logTail.slice(-3).join(" | ")}\n` : ""),
      );
    });
    lm.on("restart", (restart) => process.stderr.write(`multimodal-lm: the engine is serving again (${Math.round(restart.downtimeMs)} ms after the crash)\n`));
    try {
      const server = await startServer(lm, options);
      try {
        process.stdout.write(`multimodal-lm: serving ${modelName} at ${server.url}/v1\n`);
        if (flags.ui) process.stdout.write(`multimodal-lm: chat page at ${server.url}/\n`);
        if (!flags.apiKey && !isLoopback(flags.host)) {
          process.stderr.write(
            `warning: listening on ${flags.host} without an API key: anyone who can reach this machine can use the model. ` +
              "Pass --api-key (or set MULTIMODAL_LM_API_KEY).\n",
          );
        }
        if (flags.allowedLocalMediaPath === undefined) {
          process.stderr.write("note: requests may not read local files; allow a directory with --allowed-local-media-path <dir>\n");
        }
        if (!flags.allowAllMediaDomains && !flags.allowedMediaDomains?.length) {
          process.stderr.write("note: requests may not fetch media URLs; allow hosts with --allowed-media-domains <host,...> (data: URLs always work)\n");
        }
        await stopped;
        // A second Ctrl-C does not wait for running requests.
        onInterrupt(() => process.exit(130));
        process.stderr.write("multimodal-lm: shutting down\n");
      } finally {
        await server.close();
      }
    } finally {
      await lm.dispose();
    }
  } finally {
    stopListening();
  }
}
