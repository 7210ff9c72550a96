// llama.cpp's RPC backend from JS: reaching the servers before ggml does (ggml ends the process
// when it cannot connect), and serving this machine's CPU (`multimodal-lm rpc-server`).
import net from "node:net";

import { getBinding } from "./binding.js";
import { ModelLoadError } from "./errors.js";
import type { NativeDevice } from "./native-types.js";

const CONNECT_TIMEOUT_MS = 5000;

function split(endpoint: string): { host: string; port: number } {
  const at = endpoint.lastIndexOf(":");
  return { host: endpoint.slice(0, at).replace(/^\[(.*)\]$/, "$1"), port: Number(endpoint.slice(at + 1)) };
}

/** Resolves when a TCP connection to `endpoint` opens; rejects with the reason otherwise. */
function reach(endpoint: string): Promise<void> {
  const { host, port } = split(endpoint);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => socket.destroy(new Error(`no answer within ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * Checks that every RPC server answers before llama.cpp connects to it: ggml aborts the process on
 * a server it cannot reach. Rejects with E_MODEL_LOAD naming the server (`param` "rpc[i]").
 */
export async function checkRpcServers(endpoints: readonly string[]): Promise<void> {
  await Promise.all(
    endpoints.map(async (endpoint, i) => {
      try {
        await reach(endpoint);
      } catch (error) {
        const why = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
        throw Object.defineProperty(
          new ModelLoadError(
            `The RPC server at ${endpoint} cannot be reached (${why}). Start it on that machine with \`multimodal-lm rpc-server --host <its address> --port ${split(endpoint).port}\`, or fix the address.`,
            { cause: error },
          ),
          "param",
          { value: `rpc[${i}]`, enumerable: true },
        );
      }
    }),
  );
}

/**
 * RPC devices that engine processes (isolation: "process") registered, by name: systemInfo()
 * lists them beside this process's own. (This process does not connect to the servers itself: an
 * RPC server serves one client at a time, the engine.)
 */
const engineRpcDevices = new Map<string, NativeDevice>();

export function noteRpcDevices(devices: readonly NativeDevice[]): void {
  for (const device of devices) engineRpcDevices.set(device.name, device);
}

export function rpcDevicesOfEngines(): NativeDevice[] {
  return [...engineRpcDevices.values()];
}

export interface RpcServerOptions {
  /** Interface to listen on. Default 127.0.0.1: the protocol has no authentication. */
  host?: string;
  /** Default 50052, as llama.cpp's rpc-server. */
  port?: number;
  /** CPU threads for the work clients send. Default: the physical cores. */
  threads?: number;
  /** A directory where large tensors are cached between runs, so clients need not send them again. */
  cacheDir?: string;
}

/** Serves this machine's CPU to clients that load with `rpc`, until the process ends. */
export function startRpcServer(options: RpcServerOptions = {}): { endpoint: string } {
  const host = options.host ?? "127.0.0.1";
  const port = options.port ?? 50052;
  const endpoint = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  getBinding().startRpcServer(endpoint, options.cacheDir ?? "", options.threads ?? -1);
  return { endpoint };
}
