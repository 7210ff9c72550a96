// llama.cpp's llama-server (built from the vendored tree by `npm run build:reference`) as a
// reference for parity tests: started on a free port in 18100-18199, ready once /health answers
// 200, stopped with SIGTERM (SIGKILL if it lingers).
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { packageRoot } from "../../src/binding.js";

/** build/bin/llama-server of this package. */
export function llamaServerPath(): string {
  return path.join(packageRoot, "build", "bin", process.platform === "win32" ? "llama-server.exe" : "llama-server");
}

export interface LlamaServer {
  url: string;
  port: number;
  /** POST a JSON body to `route`; the parsed JSON answer (an error answer too), with the status. */
  post(route: string, body: unknown): Promise<{ status: number; json: unknown }>;
  /** The end of its log. */
  logTail(chars?: number): string;
  stop(): Promise<void>;
}

const PORTS = { first: 18100, last: 18199 };
// A port this process handed out stays taken (two servers of one test file never race for one).
const handedOut = new Set<number>();

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
  });
}

async function freePort(): Promise<number> {
  // Start at a pid-dependent port, so that test files running side by side rarely try the same one.
  const span = PORTS.last - PORTS.first + 1;
  const offset = process.pid % span;
  for (let k = 0; k < span; k++) {
    const port = PORTS.first + ((offset + k) % span);
    if (handedOut.has(port)) continue;
    if (await portIsFree(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port in ${PORTS.first}-${PORTS.last} for llama-server`);
}

function exitOf(child: ChildProcess): Promise<string> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(`exited with ${child.exitCode ?? child.signalCode}`);
    else child.once("exit", (code, signal) => resolve(`exited with ${code ?? signal}`));
  });
}

/**
 * Starts llama-server with `args` (everything but --host/--port) and waits until it is ready.
 * A start that loses its port to another process is tried again on the next free port.
 */
export async function startLlamaServer(args: string[], { readyTimeoutMs = 180_000 } = {}): Promise<LlamaServer> {
  const bin = llamaServerPath();
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-llama-server-"));
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const logFile = path.join(logDir, `llama-server-${port}.log`);
    const fd = fs.openSync(logFile, "w");
    const child = spawn(bin, [...args, "--host", "127.0.0.1", "--port", String(port)], { stdio: ["ignore", fd, fd] });
    fs.closeSync(fd);
    const exited = exitOf(child);
    const url = `http://127.0.0.1:${port}`;
    const logTail = (chars = 4000) => {
      try {
        return fs.readFileSync(logFile, "utf8").slice(-chars);
      } catch {
        return "";
      }
    };
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(logDir, { recursive: true, force: true });
    };
    const deadline = performance.now() + readyTimeoutMs;
    let early: string | undefined;
    for (;;) {
      const status = await fetch(`${url}/health`).then(
        (r) => r.status,
        () => 0,
      );
      if (status === 200) break;
      early = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))]);
      if (early !== undefined) break;
      if (performance.now() > deadline) {
        const tail = logTail();
        await stop();
        throw new Error(`llama-server did not answer /health with 200 within ${readyTimeoutMs / 1000} s; its log ends:\n${tail}`);
      }
    }
    if (early !== undefined) {
      const tail = logTail();
      if (attempt < 5 && /bind|address already in use/i.test(tail)) continue;
      await stop();
      throw new Error(`llama-server ${early} before it was ready (${bin} ${args.join(" ")}); its log ends:\n${tail}`);
    }
    const post = async (route: string, body: unknown) => {
      const r = await fetch(`${url}${route}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      return { status: r.status, json: (await r.json()) as unknown };
    };
    return { url, port, post, logTail, stop };
  }
}
