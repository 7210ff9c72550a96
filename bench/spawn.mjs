// Child processes with their peak RSS, measured the same way for every side: GNU time's %M
// (the kernel's maxrss) when /usr/bin/time is GNU time, else VmHWM polled from /proc.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const GNU_TIME = "/usr/bin/time";
// Generous, for --large on a slow machine: it only stops a run that hangs.
const TIMEOUT_MS = 30 * 60_000;
let scratch;
let runs = 0;

// Children run in their own process group, so that a timeout or Ctrl-C stops the command
// under GNU time too, not only time itself.
const live = new Set();
/** Sends `signal` (default SIGKILL) to the child's whole process group. */
export function killGroup(child, signal = "SIGKILL") {
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/** Children started elsewhere (the servers of the concurrent scenario) that Ctrl-C must stop too. */
export function track(child) {
  live.add(child);
  child.once("close", () => live.delete(child));
}
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    for (const child of live) killGroup(child);
    cleanUp();
    process.exit(signal === "SIGINT" ? 130 : 143);
  });
}

/** This process's temp folder (removed by cleanUp). */
export function scratchDir() {
  scratch ??= fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-bench-"));
  return scratch;
}

function scratchFile() {
  return path.join(scratchDir(), `rss-${++runs}`);
}

function probeGnuTime() {
  if (!fs.existsSync(GNU_TIME)) return false;
  const file = scratchFile();
  const r = spawnSync(GNU_TIME, ["-f", "%M", "-o", file, process.execPath, "-e", ""], { stdio: "ignore" });
  return r.status === 0 && /^\d+\s*$/.test(fs.readFileSync(file, "utf8"));
}

/** How peak RSS is measured here: "gnu-time", "proc-vmhwm" or "none". */
export const rssMethod = probeGnuTime() ? "gnu-time" : fs.existsSync("/proc/self/status") ? "proc-vmhwm" : "none";

/** The peak RSS (VmHWM) of a running process, from /proc; undefined where that cannot be read. */
export function readVmHwmBytes(pid) {
  try {
    const kb = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb ? Number(kb) * 1024 : undefined;
  } catch {
    return undefined; // gone already
  }
}

/**
 * Runs `command` to its end. `input` is written to its stdin, which then stays open;
 * `onStdout(chunk, child)` and `onStderr(chunk, child)` see the output as it arrives (to answer
 * on stdin). Resolves to { code, signal, stdout, stderr, peakRssBytes }, with a null RSS where it
 * cannot be measured; rejects when the command cannot start or runs for more than 30 minutes.
 */
export function spawnMeasured(command, args, { input, onStdout, onStderr } = {}) {
  const rssFile = rssMethod === "gnu-time" ? scratchFile() : undefined;
  const child = rssFile
    ? spawn(GNU_TIME, ["-f", "%M", "-o", rssFile, command, ...args], { detached: true })
    : spawn(command, args, { detached: true });
  live.add(child);
  let peak = null;
  const poll =
    rssMethod === "proc-vmhwm"
      ? setInterval(() => {
          const bytes = readVmHwmBytes(child.pid);
          if (bytes !== undefined) peak = Math.max(peak ?? 0, bytes);
        }, 20)
      : undefined;
  let stdout = "";
  let stderr = "";
  child.stdin.on("error", () => {}); // EPIPE when it exits before reading
  if (input === undefined) child.stdin.end();
  else child.stdin.write(input);
  child.stdout.setEncoding("utf8").on("data", (chunk) => {
    stdout += chunk;
    onStdout?.(chunk, child);
  });
  child.stderr.setEncoding("utf8").on("data", (chunk) => {
    stderr += chunk;
    onStderr?.(chunk, child);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      killGroup(child);
      reject(new Error(`${path.basename(command)} ran longer than ${TIMEOUT_MS / 60_000} minutes and was stopped`));
    }, TIMEOUT_MS);
    child.on("error", (error) => {
      live.delete(child);
      clearTimeout(timer);
      clearInterval(poll);
      reject(new Error(`could not start ${command}: ${error.message}`));
    });
    child.on("close", (code, signal) => {
      live.delete(child);
      clearTimeout(timer);
      clearInterval(poll);
      if (rssFile) {
        // GNU time writes "Command exited with non-zero status N" before %M when the command fails.
        const kb = /(\d+)\s*$/.exec(fs.existsSync(rssFile) ? fs.readFileSync(rssFile, "utf8") : "")?.[1];
        peak = kb ? Number(kb) * 1024 : null;
        fs.rmSync(rssFile, { force: true });
      }
      resolve({ code, signal, stdout, stderr, peakRssBytes: peak });
    });
  });
}

/** Runs a Node script that prints one JSON line; resolves to that object plus peakRssBytes. */
export async function runNodeScript(script, job) {
  const r = await spawnMeasured(process.execPath, [script, JSON.stringify(job)]);
  const last = r.stdout.trim().split("\n").at(-1) ?? "";
  if (r.code !== 0 || !last.startsWith("{")) {
    throw new Error(`${path.basename(script)} (${job.mode ?? "run"}) failed with ${r.code ?? r.signal}:\n${r.stderr.trim().slice(-3000)}`);
  }
  return { ...JSON.parse(last), peakRssBytes: r.peakRssBytes };
}

/** Removes this process's scratch folder. */
export function cleanUp() {
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
}
