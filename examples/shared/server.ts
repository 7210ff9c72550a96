// Shared by the server examples: the --port option, and a clean shutdown on Ctrl-C or SIGTERM.
import { usageError } from "./model.js";

/** parseArgs options for `--port` (0 picks a free port). */
export const portOptions = { port: { type: "string", default: "8000" } } as const;

/** The port to listen on: 0 to 65535. */
export function portOption(value: string): number {
  const port = Number(value);
  if (value.trim() === "" || !Number.isInteger(port) || port < 0 || port > 65535) usageError(`--port takes a port number (0 picks a free one), not ${JSON.stringify(value)}.`);
  return port;
}

/**
 * Runs `cleanup` on the first SIGINT or SIGTERM, then exits with code 0 (1 if cleanup failed).
 * A second signal exits at once.
 */
export function onShutdown(cleanup: () => Promise<void>): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    console.error(`${signal}: shutting down`);
    cleanup().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
