// A node:http server around the OpenAI handler, bound to loopback unless told otherwise.
import http from "node:http";
import type { AddressInfo } from "node:net";

import { MultimodalLMError } from "../errors.js";
import type { MultimodalLM } from "../multimodal-lm.js";
import { invalidParameter, is, optionalInteger } from "../validate.js";
import { checkHandlerOptions, createOpenAIHandler, type OpenAIHandler } from "./handler.js";
import type { ServeOptions } from "./options.js";

export interface RunningServer {
  /** http://host:port, with the real port when 0 was asked for. */
  url: string;
  host: string;
  port: number;
  server: http.Server;
  handler: OpenAIHandler;
  /** Stops listening, aborts running requests, and closes idle connections. The model stays loaded. */
  close(): Promise<void>;
}

export const DEFAULT_HOST = "127.0.0.1";
export const DEFAULT_PORT = 8000;

/**
 * Serves a loaded model over HTTP with the OpenAI API.
 *
 * ```ts
 * const server = await startServer(lm, { port: 8000, allowedLocalMediaPath: "./media" });
 * console.log(`${server.url}/v1`);
 * ```
 */
function splitServeOptions(options: unknown): { host: string; port: number; handlerOptions: ServeOptions } {
  if (!is.object(options)) throw invalidParameter("options", "an object", options);
  const { host = DEFAULT_HOST, port, ...handlerOptions } = options as ServeOptions;
  if (!is.string(host) || host.length === 0) throw invalidParameter("host", "a host name or address", host);
  return { host, port: optionalInteger("port", port, 0, 65535, DEFAULT_PORT), handlerOptions };
}

/** Checks the options without a model or a socket, so a bad one is reported before a long model load. */
export async function checkServeOptions(options: ServeOptions): Promise<void> {
  await checkHandlerOptions(splitServeOptions(options).handlerOptions);
}

export async function startServer(lm: MultimodalLM, options: ServeOptions = {}): Promise<RunningServer> {
  const { host, port, handlerOptions } = splitServeOptions(options);
  const handler = createOpenAIHandler(lm, handlerOptions);
  const server = http.createServer(handler);
  // Generation can take minutes; don't cut long requests (Node's default is 5 minutes).
  server.requestTimeout = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    await handler.close();
    const code = (error as NodeJS.ErrnoException).code;
    const hint =
      code === "EADDRINUSE" ? `Port ${port} is in use; pick another with --port (0 picks a free one).` : code === "EACCES" ? `Not allowed to listen on port ${port}; use a port above 1023.` : "";
    throw new MultimodalLMError("E_INVALID_ARGUMENT", `Cannot listen on ${host}:${port}: ${(error as Error).message}. ${hint}`.trim(), { cause: error });
  }
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${shownHost}:${address.port}`,
    host: address.address,
    port: address.port,
    server,
    handler,
    close: () =>
      (closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await handler.close();
        server.closeIdleConnections();
        // Connections still open finish their last answer first; then they are cut.
        const cut = setTimeout(() => server.closeAllConnections(), 1000);
        await stopped;
        clearTimeout(cut);
      })()),
  };
}
