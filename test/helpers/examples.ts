// Runs the scripts in examples/ as subprocesses through tsx, as `npx tsx examples/<name>` does,
// and keeps track of them so a failing test leaves none running (call killExamples in afterEach).
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";

export const root = path.resolve(import.meta.dirname, "..", "..");

const children = new Set<ChildProcess>();

export interface ExampleRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunningExample {
  child: ChildProcess;
  /** The base URL from its `listening at http://...` line. */
  url: string;
  /** Everything written so far. */
  output(): { stdout: string; stderr: string };
  /** Sends SIGTERM and resolves to the exit code. */
  stop(): Promise<number | null>;
}

function spawnExample(name: string, args: string[]): ChildProcess {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "examples", name), ...args], {
    cwd: root,
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, FORCE_COLOR: "0" },
  });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** The exit code once the process has exited. */
export function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(child.exitCode) : child.once("exit", (code) => resolve(code))));
}

/** Runs examples/<name> with `args` to the end; `input` is written to its stdin (then closed). */
export function runExample(name: string, args: string[] = [], input = ""): Promise<ExampleRun> {
  const child = spawnExample(name, args);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdin!.end(input);
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    // "close": after the exit and the end of both output pipes.
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Starts a server example (with `--port 0` unless `args` name a port); resolves once it prints `listening at <url>`. */
export function startExample(name: string, args: string[] = []): Promise<RunningExample> {
  const child = spawnExample(name, args.includes("--port") ? args : [...args, "--port", "0"]);
  child.stdin!.end();
  let stdout = "";
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      stdout += d.toString();
      // The whole line: a chunk may end in the middle of the port. (Resolving again is a no-op.)
      const match = /listening at (http:\/\/\S+)\r?\n/.exec(stdout);
      if (match) {
        resolve({
          child,
          url: match[1]!.replace(/\/+$/, ""),
          output: () => ({ stdout, stderr }),
          stop: () => {
            child.kill("SIGTERM");
            return exited(child);
          },
        });
      }
    });
    child.once("error", reject);
    child.once("exit", (code, signal) => reject(new Error(`examples/${name} exited (${code ?? signal}) before listening:\n${stdout}\n${stderr}`)));
  });
}

/** Kills every example still running (SIGKILL); for afterEach. */
export function killExamples(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  children.clear();
}
