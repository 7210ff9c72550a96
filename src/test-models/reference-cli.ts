/**
 * Drives the reference `llama-mtmd-cli` (built from the vendored tree by `npm run build:reference`)
 * for parity checks, working around its unflushed log output.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../binding.js";

/** Path of `llama-mtmd-cli` in a build directory (default: the package's `build/`). */
export function referenceCliPath(buildDir = join(packageRoot, "build")): string {
  return join(buildDir, "bin", process.platform === "win32" ? "llama-mtmd-cli.exe" : "llama-mtmd-cli");
}

function requireReferenceCli(cli: string): string {
  if (!existsSync(cli)) {
    throw new Error(`${cli} is missing: run \`npm run build:reference\` (npm test runs it first).`);
  }
  return cli;
}

const MARKER = "<<<MULTIMODAL_LM_RESPONSE>>>";

export interface ReferenceRun {
  /** The generated text. */
  text: string;
  /** Runs it took to get one complete output. */
  attempts: number;
  stdout: string;
  stderr: string;
}

export interface ReferenceRequest {
  model: string;
  mmproj: string;
  images: string[];
  prompt: string;
  nPredict?: number;
  seed?: number;
  extraArgs?: string[];
  maxAttempts?: number;
  /** The CLI to run (default: `referenceCliPath()`). */
  cli?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Run the reference CLI with greedy sampling and the model's own chat template (`--jinja`).
 *
 * llama-mtmd-cli prints through llama.cpp's asynchronous logger, which is not flushed at exit,
 * so a run can exit 0 with its output cut short. After the response marker a complete run
 * prints "\n\n", the response (plus "\n" if it hit end-of-generation) and a final "\n\n";
 * anything shorter is a truncated read and the run is repeated. A truncated reference is never
 * returned.
 */
export function runReference(req: ReferenceRequest): ReferenceRun {
  const cli = requireReferenceCli(req.cli ?? referenceCliPath());
  const args = ["-m", req.model, "--mmproj", req.mmproj];
  for (const image of req.images) args.push("--image", image);
  args.push("-p", req.prompt, "--jinja", "--temp", "0", "--seed", String(req.seed ?? 42), "-n", String(req.nPredict ?? 16));
  args.push(...(req.extraArgs ?? []));
  const maxAttempts = req.maxAttempts ?? 40;
  let last = "";
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    const r = spawnSync(cli, args, {
      encoding: "utf8",
      env: { ...process.env, ...req.env, MTMD_TEST_RESPONSE_MARKER: MARKER },
      timeout: 120_000,
    });
    if (r.error) throw r.error;
    if (r.status !== 0) {
      throw new Error(`llama-mtmd-cli exited with ${r.status ?? r.signal}: ${r.stderr.slice(-2000)}`);
    }
    const at = r.stdout.indexOf(`${MARKER}\n\n`);
    const body = at < 0 ? "" : r.stdout.slice(at + MARKER.length + 2);
    if (body.length > 2 && body.endsWith("\n\n")) {
      return { text: body.replace(/\n{2,3}$/, ""), attempts: attempt, stdout: r.stdout, stderr: r.stderr };
    }
    last = r.stdout;
  }
  throw new Error(`llama-mtmd-cli gave no complete output in ${maxAttempts} runs; last stdout: ${JSON.stringify(last)}`);
}

export interface LoaderRejection {
  status: number | null;
  signal: NodeJS.Signals | null;
  /** stderr of a run whose log reached the load error (the logger may cut it short). */
  stderr: string;
}

/**
 * Ask the reference CLI to load `model` and report how it ended. Retries (a few times) only to
 * see the error text, which the unflushed logger can drop; the exit status is always real.
 */
export function loadWithReference(model: string, mmproj: string, image: string, expectInLog: RegExp, cli = referenceCliPath()): LoaderRejection {
  requireReferenceCli(cli);
  let result: LoaderRejection = { status: null, signal: null, stderr: "" };
  for (let attempt = 0; attempt < 20; attempt++) {
    const r = spawnSync(cli, ["-m", model, "--mmproj", mmproj, "--image", image, "-p", "hi", "-n", "1"], {
      encoding: "utf8",
      timeout: 60_000,
    });
    if (r.error) throw r.error;
    result = { status: r.status, signal: r.signal, stderr: r.stderr };
    if (r.status !== 1 || r.signal !== null || expectInLog.test(r.stderr)) return result;
  }
  return result;
}

export interface ReferenceChatRequest {
  model: string;
  mmproj: string;
  /** One user turn, text only. */
  prompt: string;
  nPredict?: number;
  seed?: number;
  cli?: string;
  timeoutMs?: number;
}

/**
 * Text-only reference run. llama-mtmd-cli answers a prompt without images only in its chat
 * mode, so this types the prompt on stdin, waits for the next "> " prompt (printed through the
 * same logger after the response, so the response is complete), then types /quit.
 */
export function runReferenceChat(req: ReferenceChatRequest): Promise<ReferenceRun> {
  const cli = requireReferenceCli(req.cli ?? referenceCliPath());
  const args = ["-m", req.model, "--mmproj", req.mmproj, "--jinja", "--temp", "0", "--seed", String(req.seed ?? 42), "-n", String(req.nPredict ?? 16)];
  return new Promise((resolve, reject) => {
    const child = spawn(cli, args, { env: { ...process.env, MTMD_TEST_RESPONSE_MARKER: MARKER }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let text: string | undefined;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`llama-mtmd-cli chat mode gave no complete response in time; stdout: ${JSON.stringify(stdout)}`));
    }, req.timeoutMs ?? 60_000);
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
      const at = stdout.indexOf(`${MARKER}\n`);
      if (text !== undefined || at < 0) return;
      const body = stdout.slice(at + MARKER.length + 1);
      const end = body.indexOf("\n> ");
      if (end < 0) return;
      // After the marker line: "\n", the response (then "\n" if it hit end-of-generation), "\n> ".
      text = body.slice(0, end).replace(/^\n/, "").replace(/\n$/, "");
      child.stdin.end("/quit\n");
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (text !== undefined) resolve({ text, attempts: 1, stdout, stderr });
      else reject(new Error(`llama-mtmd-cli exited with ${code} before responding: ${stderr.slice(-2000)}`));
    });
    child.stdin.write(`${req.prompt}\n`);
  });
}
