// How long large media take to reach the engine process of isolation: "process", on the payload
// pipe (src/engine/payloads.ts: written from the array's own memory, one copy in the engine) and,
// for comparison, inside an IPC message (structured clone). `node bench/payloads.mjs` (after
// npm run build:ts); prints a markdown table. The child only acknowledges what it received.
import { fork } from "node:child_process";
import net from "node:net";
import { fileURLToPath } from "node:url";

import { PayloadReader, PayloadWriter } from "../lib/engine/payloads.js";

if (process.argv[2] === "child") {
  const reader = new PayloadReader(new net.Socket({ fd: 4, readable: true, writable: false }));
  process.on("message", async (m) => {
    let bytes = 0;
    if (m.pipe) for (let i = 0; i < m.count; i++) bytes += (await reader.take(m.first + i)).length;
    else for (const frame of m.frames) bytes += frame.byteLength;
    process.send({ bytes });
  });
  process.on("disconnect", () => process.exit(0));
} else {
  const child = fork(fileURLToPath(import.meta.url), ["child"], { serialization: "advanced", stdio: ["ignore", "inherit", "inherit", "ipc", "pipe"] });
  const writer = new PayloadWriter(child.stdio[4]);
  let next = 0;
  const ack = () => new Promise((resolve) => child.once("message", resolve));
  const frame = () => new Uint8Array(1920 * 1080 * 3).fill(7);
  const rows = [];
  for (const count of [1, 16]) {
    const frames = Array.from({ length: count }, frame);
    const time = async (viaPipe) => {
      const samples = [];
      for (let round = 0; round < 7; round++) {
        const t0 = performance.now();
        if (viaPipe) {
          const first = next;
          writer.encode(frames);
          next += count;
          child.send({ pipe: true, first, count });
        } else {
          child.send({ pipe: false, frames });
        }
        const { bytes } = await ack();
        if (bytes !== count * frames[0].byteLength) throw new Error(`got ${bytes} bytes`);
        samples.push(performance.now() - t0);
      }
      return samples.sort((a, b) => a - b)[3];
    };
    rows.push(`| ${count} × 1920×1080 RGB (${((count * frames[0].byteLength) / 1e6).toFixed(1)} MB) | ${(await time(true)).toFixed(1)} | ${(await time(false)).toFixed(1)} |`);
  }
  console.log("| media | payload pipe (ms, median of 7) | IPC structured clone (ms) |\n|---|---:|---:|\n" + rows.join("\n"));
  child.disconnect();
}
