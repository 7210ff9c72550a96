// `isolation: "process"`: the engine in a child process (child.ts), behind the same NativeModel
// interface MultimodalLM uses in process, so the class above it does not change.
//
// - Generation, image embedding, counting and cache clearing run in the child. Generation is
//   admitted to the child only while it has a free slot; the rest wait here, in order, and are
//   the requests "not started" that survive a crash.
// - Tokenizing, chat templates, output parsing and grammar checks are synchronous in the API, so
//   they run here on a vocabulary-only copy of the model (no weights, no context), loaded after the
//   child has loaded the same files (a template that crashes llama.cpp at load crashes the child).
// - Media are decoded here (sharp, ffmpeg) where the server's media policy runs; their pixels and
//   samples reach the child over a pipe of their own (payloads.ts).
//
// When the child dies, the requests it was running reject with E_ENGINE_CRASHED (signal or exit
// code, and the last lines of its log), "crash" is emitted, and after a backoff a new child loads
// the model again ("restart") and takes the waiting requests. More than `maxRestarts` crashes in
// `windowMs` and it gives up: every call then rejects with E_ENGINE_CRASHED until a new load().
import { fork, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { getBinding } from "../binding.js";
import { EngineCrashedError, type EngineExit } from "../errors.js";
import type {
  NativeChatParams,
  NativeDevice,
  NativeEmbedResult,
  NativeGenerateRequest,
  NativeGenerateResult,
  NativeLoadOptions,
  NativeMedia,
  NativeMediaSizeItem,
  NativeModel,
  NativeModelInfo,
  NativeParsedChat,
  NativeStats,
  NativeTokenCount,
  NativeTokenLogprob,
} from "../native-types.js";
import { noteRpcDevices } from "../rpc.js";
import { PayloadWriter } from "./payloads.js";
import type { FromChild, RemoteMethod, ToChild } from "./protocol.js";

export interface SupervisorOptions {
  /** Crashes tolerated within `windowMs`; one more and the supervisor gives up. Default 3. */
  maxRestarts: number;
  /** The window crashes are counted in, in ms. Default 60 000. */
  windowMs: number;
  /** Wait before the first restart, in ms, doubled for each crash in the window. Default 100. */
  backoffMs: number;
  /** Longest wait before a restart, in ms. Default 10 000. */
  maxBackoffMs: number;
  /**
   * A load (the first or a restart) that reports no progress for this long is stopped, in ms.
   * Default 300 000: after the weights, warm-up passes (a whole dummy image through a large vision
   * encoder, on a CPU) report nothing and can take a minute or more.
   */
  loadStallMs: number;
}

export const DEFAULT_SUPERVISOR: SupervisorOptions = { maxRestarts: 3, windowMs: 60_000, backoffMs: 100, maxBackoffMs: 10_000, loadStallMs: 300_000 };

export type EngineState = "starting" | "ready" | "restarting" | "failed" | "disposed";

export interface CrashEvent extends EngineExit {
  /** Requests that were running and rejected with E_ENGINE_CRASHED. */
  failedRequests: number;
  /** Requests waiting for the restarted engine. */
  waitingRequests: number;
  /** Whether the supervisor restarts the engine (false: it gave up). */
  willRestart: boolean;
  /** Crashes within the window, this one included. */
  recentCrashes: number;
}

export interface RestartEvent {
  /** Crashes within the window so far. */
  recentCrashes: number;
  /** From the crash to the new engine serving, in ms. */
  downtimeMs: number;
  /** The reload alone, in ms. */
  loadMs: number;
}

const LOG_TAIL_LINES = 20;

interface Call {
  id: number;
  method: RemoteMethod;
  args: unknown[];
  onEvent?: (piece: string | undefined, logprobs?: NativeTokenLogprob) => void;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** The child's entry: the compiled child.js beside this file, or child.ts run through tsx (tests on the sources). */
function childEntry(): { file: string; execArgv: string[] } {
  const js = fileURLToPath(new URL("./child.js", import.meta.url));
  if (existsSync(js)) return { file: js, execArgv: [] };
  return { file: fileURLToPath(new URL("./child.ts", import.meta.url)), execArgv: ["--import", "tsx"] };
}

function describeExit(exit: EngineExit): string {
  return exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.exitCode}`;
}

export class SupervisedEngine implements NativeModel {
  readonly events = new EventEmitter();
  private state: EngineState = "starting";
  private child: ChildProcess | undefined;
  private payloads: PayloadWriter | undefined;
  private vocab: NativeModel | undefined;
  private loadOptions: NativeLoadOptions | undefined;
  private logLevel = 0;
  private onLog: ((level: number, line: string) => void) | undefined;
  private parallel = 1;
  private running = 0;
  private readonly sent = new Map<number, Call>();
  private readonly waiting: Call[] = [];
  private lastStats: NativeStats | undefined;
  /** The cumulative counters of the engine processes before this one. */
  private earlierStats: NativeStats = this.zeroStats();
  private logTail: string[] = [];
  private crashTimes: number[] = [];
  private failure: EngineCrashedError | undefined;
  private nextInternalId = 0x7fff0000;
  private loadingId: number | undefined;
  private loadAborted = false;

  /**
   * `beforeRestart` runs before each restart; if it rejects, the supervisor gives up with its
   * error (an RPC server that is gone cannot be restarted from here).
   */
  constructor(
    private readonly options: SupervisorOptions = DEFAULT_SUPERVISOR,
    private readonly hooks: { beforeRestart?: () => Promise<void> } = {},
  ) {}

  get engineState(): EngineState {
    return this.state;
  }

  /** The engine process's pid (for tests and logs). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  // --- NativeModel: the child's calls ------------------------------------------------

  async load(
    id: number,
    options: NativeLoadOptions,
    onProgress: (fraction: number) => void,
    logLevel: number,
    onLog: ((level: number, line: string) => void) | undefined,
  ): Promise<NativeModelInfo> {
    this.loadOptions = options;
    this.logLevel = logLevel;
    this.onLog = onLog;
    this.loadingId = id;
    let info: NativeModelInfo;
    try {
      info = await this.startChild(id, onProgress);
    } finally {
      this.loadingId = undefined;
    }
    // The parent's synchronous half: vocabulary, templates, parsers. After the child, so a file
    // that crashes llama.cpp at load has crashed the child, not this process.
    const vocab = new (getBinding().NativeModel)();
    await vocab.load(this.internalId(), { ...options, vocabOnly: true }, () => {}, 0, undefined);
    this.vocab = vocab;
    this.parallel = info.parallel;
    if (this.state === "disposed") throw codedError("E_DISPOSED", "the model was disposed while loading");
    // (A crash in the moment since the engine loaded has it restarting already.)
    if (this.state === "starting") this.state = "ready";
    this.pump();
    return info;
  }

  generate(id: number, request: NativeGenerateRequest, onEvent: (piece: string | undefined, logprobs?: NativeTokenLogprob) => void): Promise<NativeGenerateResult> {
    return this.submit(id, "generate", [request], onEvent) as Promise<NativeGenerateResult>;
  }

  embedImage(id: number, media: NativeMedia): Promise<NativeEmbedResult> {
    return this.submit(id, "embedImage", [media]) as Promise<NativeEmbedResult>;
  }

  countTokens(id: number, prompt: string, media: NativeMediaSizeItem[], addSpecial: boolean): Promise<NativeTokenCount> {
    return this.submit(id, "countTokens", [prompt, media, addSpecial]) as Promise<NativeTokenCount>;
  }

  /** applyChat, run in the engine process (see MultimodalLM.applyChat). */
  applyChatInEngine(id: number, requestJson: string): Promise<NativeChatParams> {
    return this.submit(id, "applyChat", [requestJson]) as Promise<NativeChatParams>;
  }

  async clearCaches(id: number): Promise<void> {
    await this.submit(id, "clearCaches", []);
  }

  /** The engine's stats; the counters add up over every engine process this model has had. */
  stats(): NativeStats {
    const now = this.lastStats ?? this.zeroStats();
    const before = this.earlierStats;
    const waitingGenerations = this.waiting.filter((call) => call.method === "generate").length;
    return {
      requests: before.requests + now.requests,
      busySlots: Math.min(now.busySlots, this.running),
      queued: now.queued + waitingGenerations,
      reusedPositions: before.reusedPositions + now.reusedPositions,
      evaluatedPositions: before.evaluatedPositions + now.evaluatedPositions,
      imageCache: {
        ...now.imageCache,
        hits: before.imageCache.hits + now.imageCache.hits,
        misses: before.imageCache.misses + now.imageCache.misses,
        evictions: before.imageCache.evictions + now.imageCache.evictions,
      },
    };
  }

  private zeroStats(): NativeStats {
    return {
      requests: 0,
      busySlots: 0,
      queued: 0,
      reusedPositions: 0,
      evaluatedPositions: 0,
      imageCache: { hits: 0, misses: 0, evictions: 0, entries: 0, bytes: 0, capacityBytes: this.loadOptions?.imageCacheBytes ?? 0 },
    };
  }

  cancel(id: number): void {
    if (id === this.loadingId) {
      this.loadAborted = true;
      void this.stopChild();
      return;
    }
    const at = this.waiting.findIndex((call) => call.id === id);
    if (at >= 0) {
      const [call] = this.waiting.splice(at, 1);
      call!.reject(codedError("E_ABORTED", "the request was aborted before it started"));
      return;
    }
    if (this.sent.has(id)) this.post({ t: "cancel", id });
  }

  // --- NativeModel: synchronous, on the vocabulary-only model here ------------------

  applyChat(requestJson: string): NativeChatParams {
    return this.local().applyChat(requestJson);
  }
  parseChat(text: string, partial: boolean, format: number, parser: string, generationPrompt: string, continuation: boolean): NativeParsedChat {
    return this.local().parseChat(text, partial, format, parser, generationPrompt, continuation);
  }
  schemaToGrammar(schemaJson: string): string {
    return this.local().schemaToGrammar(schemaJson);
  }
  checkGrammar(grammar: string): void {
    this.local().checkGrammar(grammar);
  }
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Uint32Array {
    return this.local().tokenize(text, addSpecial, parseSpecial);
  }
  detokenize(tokens: Uint32Array): string {
    return this.local().detokenize(tokens);
  }

  async dispose(): Promise<void> {
    if (this.state === "disposed") return;
    this.state = "disposed";
    const disposed = codedError("E_DISPOSED", "the model was disposed while this request was waiting or running");
    for (const call of this.waiting.splice(0)) call.reject(disposed);
    for (const call of this.sent.values()) call.reject(disposed);
    this.sent.clear();
    this.running = 0;
    await this.stopChild();
    const vocab = this.vocab;
    this.vocab = undefined;
    await vocab?.dispose(this.internalId(), () => {});
  }

  stopForExit(): void {
    this.state = "disposed";
    this.child?.kill("SIGKILL");
    this.vocab?.stopForExit();
  }

  // --- internals -----------------------------------------------------------------------

  private local(): NativeModel {
    if (!this.vocab) throw codedError("E_NOT_LOADED", "the model is not loaded");
    return this.vocab;
  }

  private internalId(): number {
    return this.nextInternalId++;
  }

  private submit(id: number, method: RemoteMethod, args: unknown[], onEvent?: Call["onEvent"]): Promise<unknown> {
    if (this.state === "failed") return Promise.reject(this.failure);
    if (this.state === "disposed") return Promise.reject(codedError("E_DISPOSED", "the model has been disposed"));
    return new Promise((resolve, reject) => {
      this.waiting.push({ id, method, args, onEvent, resolve, reject });
      this.pump();
    });
  }

  /** Sends what may start: every non-generating call, and generations while a slot is free, in order. */
  private pump(): void {
    if (this.state !== "ready") return;
    for (let i = 0; i < this.waiting.length; ) {
      const call = this.waiting[i]!;
      if (call.method === "generate" && this.running >= this.parallel) {
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      this.dispatch(call);
    }
    this.updateRef();
  }

  private dispatch(call: Call): void {
    if (call.method === "generate") this.running++;
    this.sent.set(call.id, call);
    const args = this.payloads!.encode(call.args) as unknown[];
    this.post({ t: "call", id: call.id, method: call.method, args });
  }

  private post(message: ToChild): void {
    if (this.child?.connected) this.child.send(message);
  }

  /** The child keeps this process alive only while it has work, as the in-process engine does. */
  private updateRef(): void {
    const child = this.child;
    if (!child) return;
    const busy = this.sent.size > 0 || this.waiting.length > 0 || this.state === "starting" || this.state === "restarting";
    const channel = child.channel as unknown as { ref?: () => void; unref?: () => void } | undefined;
    if (busy) {
      child.ref();
      channel?.ref?.();
    } else {
      child.unref();
      channel?.unref?.();
    }
  }

  private settle(id: number): Call | undefined {
    const call = this.sent.get(id);
    if (!call) return undefined;
    this.sent.delete(id);
    if (call.method === "generate") this.running--;
    return call;
  }

  private onMessage(message: FromChild): void {
    switch (message.t) {
      case "log":
        this.remember(message.line);
        // The engine logs warnings at least (for crash reports); pass on what the caller asked for.
        if (this.logLevel > 0 && message.level >= this.logLevel) this.onLog?.(message.level, message.line);
        return;
      case "progress":
        return;
      case "event": {
        if (message.stats) this.lastStats = message.stats;
        this.sent.get(message.id)?.onEvent?.(message.piece, message.logprobs);
        return;
      }
      case "done":
      case "fail": {
        if (message.stats) this.lastStats = message.stats;
        const call = this.settle(message.id);
        if (call) {
          if (message.t === "done") call.resolve(message.value);
          else call.reject(codedError(message.code, message.message));
        }
        this.pump();
        return;
      }
    }
  }

  private remember(line: string): void {
    for (const part of line.split("\n")) {
      if (part.trim() === "") continue;
      this.logTail.push(part);
      if (this.logTail.length > LOG_TAIL_LINES) this.logTail.shift();
    }
  }

  /**
   * Starts a child and loads the model in it. Rejects with E_MODEL_LOAD when it dies or stalls
   * while loading (with what it wrote last), or with the load's own error.
   */
  private startChild(loadId: number, onProgress: (fraction: number) => void): Promise<NativeModelInfo> {
    const { file, execArgv } = childEntry();
    const env = { ...process.env };
    // ggml's abort handler would attach gdb for a backtrace, which can take seconds.
    env.GGML_NO_BACKTRACE ??= "1";
    const child = fork(file, [], {
      execArgv,
      env,
      serialization: "advanced",
      stdio: ["ignore", "inherit", "pipe", "ipc", "pipe"],
      // Its own process group: a Ctrl-C in the terminal goes to this process, which then disposes
      // the model; the engine must not die of it first and look like a crash. It still ends with
      // this process, through its IPC channel.
      detached: true,
    });
    this.child = child;
    this.logTail = [];
    const payloadPipe = child.stdio[4] as NodeJS.WritableStream & import("node:stream").Writable;
    payloadPipe.on("error", () => {});
    this.payloads = new PayloadWriter(payloadPipe);
    child.stderr!.setEncoding("utf8").on("data", (text: string) => {
      this.remember(text);
      process.stderr.write(text);
    });
    child.on("message", (message: FromChild) => this.onMessage(message));
    child.on("error", () => {});

    return new Promise<NativeModelInfo>((resolve, reject) => {
      let stall: NodeJS.Timeout | undefined;
      const arm = () => {
        clearTimeout(stall);
        stall = setTimeout(() => {
          cleanup();
          child.kill("SIGKILL");
          reject(
            codedError(
              "E_MODEL_LOAD",
              `The engine process stopped responding while loading ${this.loadOptions!.model} (no progress for ${this.options.loadStallMs} ms), so it was stopped. ` +
                "A chat template that loops for a very long time does this; check the model's template (or the chatTemplate option).",
            ),
          );
        }, this.options.loadStallMs);
      };
      const onLoadMessage = (message: FromChild) => {
        if (message.t === "progress" && message.id === loadId) {
          arm();
          onProgress(message.value);
        } else if (message.t === "log") {
          arm();
        } else if ((message.t === "done" || message.t === "fail") && message.id === loadId) {
          cleanup();
          if (message.t === "done") {
            if (message.stats) this.lastStats = message.stats;
            const { rpcDevices, ...info } = message.value as NativeModelInfo & { rpcDevices?: NativeDevice[] };
            if (rpcDevices) noteRpcDevices(rpcDevices);
            resolve(info as NativeModelInfo);
          } else {
            reject(codedError(message.code, message.message));
          }
        }
      };
      const onLoadExit = (code: number | null, signal: NodeJS.Signals | null) => {
        cleanup();
        const exit = { signal, exitCode: code, logTail: [...this.logTail] };
        if (this.loadAborted) {
          reject(codedError("E_ABORTED", "model loading was aborted"));
          return;
        }
        reject(
          Object.assign(
            codedError(
              this.state === "disposed" ? "E_DISPOSED" : "E_MODEL_LOAD",
              `The engine process ${describeExit(exit)} while loading ${this.loadOptions!.model}: llama.cpp cannot load this model (a malformed or inconsistent file, or a chat template that crashes it). ` +
                (exit.logTail.length > 0 ? `Its last output: ${exit.logTail.slice(-5).join(" | ")}` : "It wrote nothing first."),
            ),
            { exit },
          ),
        );
      };
      const cleanup = () => {
        clearTimeout(stall);
        child.off("message", onLoadMessage);
        child.off("exit", onLoadExit);
        if (this.state !== "disposed") child.on("exit", (code, signal) => this.onExit(child, code, signal));
      };
      child.on("message", onLoadMessage);
      child.once("exit", onLoadExit);
      arm();
      // The engine asks for warnings at least, so a crash report has llama.cpp's last words.
      const level = this.logLevel > 0 ? Math.min(this.logLevel, 3) : 3;
      child.send({ t: "load", id: loadId, options: this.loadOptions!, logLevel: level } satisfies ToChild);
    });
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.child || this.state === "disposed" || this.state === "failed") return;
    this.child = undefined;
    const exit: EngineExit = { signal, exitCode: code, logTail: [...this.logTail] };
    const counted = this.stats();
    this.earlierStats = { ...counted, busySlots: 0, queued: 0, imageCache: { ...counted.imageCache, entries: 0, bytes: 0 } };
    this.lastStats = undefined;
    const running = [...this.sent.values()];
    this.sent.clear();
    this.running = 0;
    const now = Date.now();
    this.crashTimes = this.crashTimes.filter((t) => now - t < this.options.windowMs);
    this.crashTimes.push(now);
    const willRestart = this.crashTimes.length <= this.options.maxRestarts;
    const lastWords = exit.logTail.length > 0 ? ` Its last output: ${exit.logTail.slice(-5).join(" | ")}` : "";
    for (const call of running) {
      call.reject(
        new EngineCrashedError(
          `The engine process ${describeExit(exit)} while running this request` +
            (running.length > 1 ? ` (and ${running.length - 1} other${running.length > 2 ? "s" : ""} running with it)` : "") +
            `. ${willRestart ? "It is being restarted; requests that had not started will run there." : "The supervisor gave up restarting it."}${lastWords}`,
          exit,
        ),
      );
    }
    if (!willRestart) this.giveUp(exit);
    this.events.emit("crash", {
      ...exit,
      failedRequests: running.length,
      waitingRequests: this.waiting.length,
      willRestart,
      recentCrashes: this.crashTimes.length,
    } satisfies CrashEvent);
    if (!willRestart) return;
    this.state = "restarting";
    const delay = Math.min(this.options.backoffMs * 2 ** (this.crashTimes.length - 1), this.options.maxBackoffMs);
    setTimeout(() => void this.restart(now), delay);
  }

  /** Stops restarting: every call from now on rejects with why (`reason`, or the crash count). */
  private giveUp(exit: EngineExit, reason?: string): void {
    this.state = "failed";
    this.failure = new EngineCrashedError(
      reason ??
        `The engine process crashed ${this.crashTimes.length} times within ${Math.round(this.options.windowMs / 1000)} s (the last time ${describeExit(exit)}), ` +
          "so the supervisor stopped restarting it. The model or the requests sent to it crash llama.cpp; fix that, then load the model again." +
          (exit.logTail.length > 0 ? ` Its last output: ${exit.logTail.slice(-5).join(" | ")}` : ""),
      exit,
    );
    for (const call of this.waiting.splice(0)) call.reject(this.failure);
    void this.stopChild();
  }

  private async restart(crashedAt: number): Promise<void> {
    if (this.state !== "restarting") return;
    const started = Date.now();
    try {
      await this.hooks.beforeRestart?.();
    } catch (error) {
      if (this.state !== "restarting") return;
      const why = error instanceof Error ? error.message : String(error);
      this.giveUp({ signal: null, exitCode: null, logTail: [...this.logTail] }, `The engine process died, and cannot be restarted: ${why} Load the model again once that is fixed.`);
      return;
    }
    try {
      await this.startChild(this.internalId(), () => {});
    } catch (error) {
      if (this.state !== "restarting") return;
      const exit = (error as { exit?: EngineExit }).exit;
      if (exit) {
        // It died again while loading: one more crash.
        this.onExit(this.child!, exit.exitCode, exit.signal);
        return;
      }
      // The files changed or vanished: nothing to restart.
      this.giveUp({ signal: null, exitCode: null, logTail: [...this.logTail, error instanceof Error ? error.message : String(error)] });
      return;
    }
    if (this.state !== "restarting") {
      await this.stopChild();
      return;
    }
    this.state = "ready";
    const now = Date.now();
    this.events.emit("restart", { recentCrashes: this.crashTimes.length, downtimeMs: now - crashedAt, loadMs: now - started } satisfies RestartEvent);
    this.pump();
  }

  private async stopChild(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
    await exited;
    clearTimeout(timer);
  }
}
