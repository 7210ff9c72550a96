// The engine process of `isolation: "process"`: hosts one in-process native model and runs the
// calls its parent sends over IPC (protocol.ts). If llama.cpp aborts, only this process dies; the
// parent's supervisor (supervised.ts) fails the requests it was running and starts another.
// It exits when the parent goes away (the IPC channel closes), so it is never left behind.
import net from "node:net";

import { getBinding } from "../binding.js";
import type { NativeModel, NativeStats } from "../native-types.js";
import { isPayloadRef, type FromChild, type PayloadRef, type ToChild } from "./protocol.js";
import { PayloadReader } from "./payloads.js";

const PAYLOAD_FD = 4;

function send(message: FromChild): void {
  process.send?.(message);
}

function fail(id: number, error: unknown, stats: NativeStats | undefined): void {
  const code = typeof (error as { code?: unknown })?.code === "string" ? (error as { code: string }).code : "E_ENGINE";
  const message = error instanceof Error ? error.message : String(error);
  send({ t: "fail", id, code, message, stats });
}

let native: NativeModel | undefined;
const reader = new PayloadReader(new net.Socket({ fd: PAYLOAD_FD, readable: true, writable: false }));

/** Puts the typed arrays that came on the payload pipe back where the message names them. */
async function resolvePayloads(value: unknown): Promise<unknown> {
  if (isPayloadRef(value)) {
    const ref = value as PayloadRef;
    const bytes = await reader.take(ref.__payload);
    return ref.kind === "f32" ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  if (Array.isArray(value)) return Promise.all(value.map(resolvePayloads));
  if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) out[key] = await resolvePayloads(inner);
    return out;
  }
  return value;
}

function statsOf(model: NativeModel | undefined): NativeStats | undefined {
  try {
    return model?.stats();
  } catch {
    return undefined;
  }
}

async function handle(message: ToChild): Promise<void> {
  if (message.t === "cancel") {
    native?.cancel(message.id);
    return;
  }
  if (message.t === "load") {
    const model = new (getBinding().NativeModel)();
    native = model;
    try {
      const info = await model.load(
        message.id,
        message.options,
        (value) => send({ t: "progress", id: message.id, value }),
        message.logLevel,
        message.logLevel > 0 ? (level, line) => send({ t: "log", level, line }) : undefined,
      );
      const rpcDevices = message.options.rpc ? getBinding().systemInfo().devices.filter((d) => d.backend === "RPC") : [];
      send({ t: "done", id: message.id, value: { ...info, rpcDevices }, stats: statsOf(model) });
    } catch (error) {
      fail(message.id, error, undefined);
    }
    return;
  }
  const model = native;
  if (!model) {
    fail(message.id, Object.assign(new Error("the engine process has no model loaded"), { code: "E_NOT_LOADED" }), undefined);
    return;
  }
  const { id, method } = message;
  try {
    const args = (await resolvePayloads(message.args)) as unknown[];
    let value: unknown;
    switch (method) {
      case "generate": {
        // Stats ride on at most one event every 50 ms, so the parent's copy stays current while a reply streams.
        let lastStats = 0;
        value = await model.generate(id, args[0] as Parameters<NativeModel["generate"]>[1], (piece, logprobs) => {
          const now = Date.now();
          const stats = now - lastStats >= 50 ? statsOf(model) : undefined;
          if (stats) lastStats = now;
          send({ t: "event", id, piece, ...(logprobs ? { logprobs } : {}), ...(stats ? { stats } : {}) });
        });
        break;
      }
      case "embedImage":
        value = await model.embedImage(id, args[0] as Parameters<NativeModel["embedImage"]>[1], () => {});
        break;
      case "countTokens":
        value = await model.countTokens(id, args[0] as string, args[1] as Parameters<NativeModel["countTokens"]>[2], args[2] as boolean, () => {});
        break;
      case "clearCaches":
        value = await model.clearCaches(id, () => {});
        break;
      case "applyChat":
        value = model.applyChat(args[0] as string);
        break;
    }
    send({ t: "done", id, value, stats: statsOf(model) });
  } catch (error) {
    fail(id, error, statsOf(model));
  }
}

process.on("message", (message: ToChild) => {
  void handle(message);
});
// The parent is gone (it exited, was killed, or let go of this engine): stop at once.
process.on("disconnect", () => {
  native?.stopForExit();
  process.exit(0);
});
