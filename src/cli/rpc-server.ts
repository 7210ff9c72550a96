// `multimodal-lm rpc-server`: serves this machine's CPU to models loaded elsewhere with --rpc (the
// library's `rpc` option), with ggml's RPC server from the same addon. Workers need only this package.
import { mkdirSync } from "node:fs";
import net from "node:net";
import { homedir } from "node:os";
import { join } from "node:path";

import { Command } from "commander";

import { MultimodalLMError } from "../errors.js";
import { startRpcServer } from "../rpc.js";
import { addNumberOption } from "./flags.js";
import { isLoopback } from "./serve.js";
import { onInterrupt } from "./signals.js";

interface RpcServerFlags {
  host: string;
  port: number;
  threads?: number;
  cache?: boolean;
}

/** Where --cache keeps tensors: $XDG_CACHE_HOME/multimodal-lm/rpc, or ~/.cache/multimodal-lm/rpc. */
export function rpcCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "multimodal-lm", "rpc");
}

export function rpcServerCommand(): Command {
  const command = new Command("rpc-server").description(
    "serve this machine's CPU to a model loaded elsewhere with --rpc host:port (llama.cpp's RPC backend): its layers run here",
  );
  command.option("--host <host>", "interface to listen on; the protocol has no authentication, so keep it on a private network", "127.0.0.1");
  addNumberOption(command, "--port <n>", "port", { integer: true, min: 1, max: 65535 }, 50052);
  addNumberOption(command, "--threads <n>", "CPU threads (default: the physical cores)", { integer: true, min: 1 });
  command
    .option("--cache", `keep large tensors in a local cache (${rpcCacheDir()}), so a client that loads the same model again need not send them`)
    .addHelpText(
      "after",
      "\nOn each worker:\n  multimodal-lm rpc-server --host 192.168.1.20 --port 50052\n" +
        "Then, where the model is loaded:\n  multimodal-lm serve model.gguf --rpc 192.168.1.20:50052,192.168.1.21:50052",
    )
    .action((flags: RpcServerFlags) => rpcServer(flags));
  return command;
}

/** ggml's server only logs a port it cannot bind: find out here, with a clear error. */
function checkPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        new MultimodalLMError(
          "E_INVALID_ARGUMENT",
          error.code === "EADDRINUSE"
            ? `Port ${port} on ${host} is already in use. Pick another with --port.`
            : `Cannot listen on ${host}:${port} (${error.code ?? error.message}). Check --host and --port.`,
        ),
      ),
    );
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

async function rpcServer(flags: RpcServerFlags): Promise<void> {
  if (!isLoopback(flags.host)) {
    process.stderr.write(
      `WARNING: listening on ${flags.host}: llama.cpp's RPC protocol has no authentication and no encryption. Anyone who can reach ` +
        `${flags.host}:${flags.port} can run code paths of this machine's ggml and read or write its memory buffers. ` +
        "Use it only on a private network you trust, behind a firewall.\n",
    );
  }
  let cacheDir: string | undefined;
  if (flags.cache) {
    cacheDir = rpcCacheDir();
    mkdirSync(cacheDir, { recursive: true });
  }
  await checkPortFree(flags.host, flags.port);
  const { endpoint } = startRpcServer({ host: flags.host, port: flags.port, threads: flags.threads, cacheDir });
  process.stderr.write(`multimodal-lm: rpc-server serving this machine's CPU at ${endpoint}\n`);
  // Runs until SIGINT or SIGTERM.
  await new Promise<void>((resolve) => {
    const keepAlive = setInterval(() => {}, 1 << 30);
    onInterrupt(() => {
      clearInterval(keepAlive);
      resolve();
    });
  });
}
