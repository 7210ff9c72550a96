// Loopback fixtures for the server tests: a media server that answers with files or redirects
// and counts what it was asked, and a DNS lookup that maps test names to loopback addresses.
import dns from "node:dns";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo, LookupFunction } from "node:net";
import path from "node:path";

export interface MediaServer {
  /** http://host:port */
  url: string;
  port: number;
  /** Paths requested so far. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * Serves files from `dir` on `host`. `/redirect?to=URL` answers 302 to URL; `/slow` never
 * finishes its body; `/big` streams `bigBytes` bytes.
 */
export async function startMediaServer(dir: string, host = "127.0.0.1"): Promise<MediaServer> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    requests.push(url.pathname);
    if (url.pathname === "/redirect") {
      res.writeHead(302, { location: url.searchParams.get("to") ?? "/" });
      res.end();
      return;
    }
    if (url.pathname === "/slow") {
      res.writeHead(200, { "content-type": "image/png" });
      res.write("x");
      return;
    }
    const file = path.join(dir, path.basename(url.pathname));
    if (!fs.existsSync(file)) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200);
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host}:${port}`,
    port,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A dns.lookup that answers `names` from the table and everything else from the system resolver. */
export function fakeDns(names: Record<string, string>): LookupFunction {
  return ((hostname: string, options: dns.LookupOptions, callback: (...args: unknown[]) => void) => {
    const address = names[hostname.toLowerCase()];
    if (address === undefined) return dns.lookup(hostname, options, callback as never);
    const family = address.includes(":") ? 6 : 4;
    if (options.all) callback(null, [{ address, family }]);
    else callback(null, address, family);
  }) as LookupFunction;
}
