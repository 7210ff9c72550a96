// The server's media policy against real files, symlinks, FIFOs and loopback HTTP servers.
// On Linux all of 127.0.0.0/8 is loopback: the "exempt" asset server listens on 127.0.0.2 and is
// allowed through allowedPrivateNetworks, while the "internal" server on 127.0.0.1 must never be reached.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import dns from "node:dns";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo, LookupFunction } from "node:net";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { Agent } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { FetchError, FileNotFoundError, MediaNotAllowedError, MultimodalLMError } from "../src/errors.js";
import { fetchBytes } from "../src/media/fetch.js";
import { MediaAccess, type MediaAccessOptions } from "../src/server/media-access.js";
import { rejection as caught } from "./helpers/rejection.js";

const posix = process.platform !== "win32";
const linux = process.platform === "linux";

const imageBytes = randomBytes(3000);
const videoBytes = randomBytes(5000);
const secretBytes = Buffer.from("top secret: must never be served");

function thrown(fn: () => unknown): MultimodalLMError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(MultimodalLMError);
    return error as MultimodalLMError;
  }
  throw new Error("expected a throw");
}

/** Rejects if `promise` takes longer than `ms`: a FIFO must never make resolve() hang. */
async function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

const accesses: MediaAccess[] = [];
function media(options?: MediaAccessOptions): MediaAccess {
  const access = new MediaAccess(options);
  accesses.push(access);
  return access;
}

afterAll(async () => {
  await Promise.all(accesses.map((access) => access.close()));
});

describe("local media", () => {
  let tmp: string;
  /** tmp/x/allowed: the allowed directory. */
  let allowed: string;
  /** tmp/x/allowed-evil: shares the allowed directory's name as a prefix. */
  let sibling: string;
  let access: MediaAccess;

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-access-"));
    allowed = path.join(tmp, "x", "allowed");
    sibling = path.join(tmp, "x", "allowed-evil");
    fs.mkdirSync(path.join(allowed, "sub"), { recursive: true });
    fs.mkdirSync(path.join(allowed, "dir"));
    fs.mkdirSync(sibling);
    fs.writeFileSync(path.join(allowed, "photo.png"), imageBytes);
    fs.writeFileSync(path.join(allowed, "sub", "nested.png"), imageBytes);
    fs.writeFileSync(path.join(allowed, "clip.mp4"), videoBytes);
    fs.writeFileSync(path.join(allowed, "..dotdot.png"), imageBytes);
    fs.writeFileSync(path.join(sibling, "secret.png"), secretBytes);
    fs.writeFileSync(path.join(tmp, "outside.png"), secretBytes);
    if (posix) {
      fs.symlinkSync(path.join(tmp, "outside.png"), path.join(allowed, "link-out.png"));
      fs.symlinkSync("../allowed-evil", path.join(allowed, "link-evil"));
      fs.symlinkSync("photo.png", path.join(allowed, "link-in.png"));
      fs.symlinkSync(path.join(allowed, "sub"), path.join(allowed, "link-sub"));
      fs.symlinkSync(path.join(tmp, "missing.png"), path.join(allowed, "dangling.png"));
      fs.symlinkSync(allowed, path.join(tmp, "alias"));
      execFileSync("mkfifo", [path.join(allowed, "fifo.png")]);
    }
    access = media({ allowedLocalMediaPath: allowed });
  });

  afterAll(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("refuses every local path and file: URL when no directory is allowed", async () => {
    const none = media();
    for (const ref of ["photo.png", path.join(allowed, "photo.png"), pathToFileURL(path.join(allowed, "photo.png")).href, "./photo.png"]) {
      const error = await caught(none.resolve(ref, "image"));
      expect(error).toBeInstanceOf(MediaNotAllowedError);
      expect(error.code).toBe("E_MEDIA_NOT_ALLOWED");
      expect(error.message).toBe(
        `Local media ${JSON.stringify(ref)} is refused: this server allows no local media directory. ` +
          "Start it with --allowed-local-media-path DIR (option allowedLocalMediaPath) to serve files from DIR, or send the media inline as a data: URL.",
      );
    }
    expect((await caught(none.resolve("clip.mp4", "video"))).code).toBe("E_MEDIA_NOT_ALLOWED");
  });

  it("reads images into Buffers from relative paths, absolute paths and file: URLs", async () => {
    for (const ref of [
      "photo.png",
      "./photo.png",
      "sub/../photo.png",
      path.join(allowed, "photo.png"),
      pathToFileURL(path.join(allowed, "photo.png")).href,
      "sub/nested.png",
      `file://${allowed}/sub/%6eested.png`,
      "..dotdot.png",
    ]) {
      const result = await access.resolve(ref, "image");
      expect(Buffer.isBuffer(result), ref).toBe(true);
      expect((result as Buffer).equals(imageBytes), ref).toBe(true);
    }
  });

  it("returns videos as their real path, for ffmpeg to read", async () => {
    const real = fs.realpathSync(path.join(allowed, "clip.mp4"));
    expect(await access.resolve("clip.mp4", "video")).toBe(real);
    expect(await access.resolve(pathToFileURL(path.join(allowed, "clip.mp4")).href, "video")).toBe(real);
    // Audio, like video, is read by ffmpeg from the vetted path.
    expect(await access.resolve("clip.mp4", "audio")).toBe(real);
  });

  it("refuses ../ traversal in plain paths and file: URLs, including %2e%2e", async () => {
    for (const ref of [
      "../allowed-evil/secret.png",
      "sub/../../../outside.png",
      "../../outside.png",
      `file://${allowed}/../../outside.png`,
      `file://${allowed}/%2e%2e/%2e%2e/outside.png`,
      `file://${allowed}/%2E%2e/allowed-evil/secret.png`,
      `file://${allowed}/sub/.%2e/.%2E/allowed-evil/secret.png`,
    ]) {
      const error = await caught(access.resolve(ref, "image"));
      expect(error.code, ref).toBe("E_MEDIA_NOT_ALLOWED");
      expect(error.message, ref).toBe(
        `Local media ${JSON.stringify(ref)} is outside the allowed media directory ${allowed}. Only files inside it can be used; ` +
          "to serve another directory, start the server with --allowed-local-media-path DIR (option allowedLocalMediaPath) pointing there.",
      );
      expect(error.message).not.toContain(secretBytes.toString());
    }
  });

  it("refuses absolute paths outside, and the sibling directory that shares the prefix", async () => {
    for (const ref of [
      path.join(tmp, "outside.png"),
      path.join(sibling, "secret.png"),
      pathToFileURL(path.join(sibling, "secret.png")).href,
      "/etc/passwd",
      path.dirname(allowed),
    ]) {
      expect((await caught(access.resolve(ref, "image"))).code, ref).toBe("E_MEDIA_NOT_ALLOWED");
      expect((await caught(access.resolve(ref, "video"))).code, ref).toBe("E_MEDIA_NOT_ALLOWED");
    }
  });

  it("refuses an outside path before touching the filesystem: missing or not, the answer is the same", async () => {
    const missing = await caught(access.resolve(path.join(tmp, "does-not-exist.png"), "image"));
    expect(missing.code).toBe("E_MEDIA_NOT_ALLOWED");
    expect(missing.message).toContain("is outside the allowed media directory");
  });

  it.runIf(posix)("follows symlinks: refused when they lead outside, allowed when they stay inside", async () => {
    for (const ref of ["link-out.png", "link-evil/secret.png", pathToFileURL(path.join(allowed, "link-out.png")).href]) {
      const error = await caught(access.resolve(ref, "image"));
      expect(error.code, ref).toBe("E_MEDIA_NOT_ALLOWED");
      expect(error.message).toBe(
        `Local media ${JSON.stringify(ref)} resolves through a symbolic link to a file that is outside the allowed media directory ${allowed}. ` +
          "Only files inside it can be used; to serve another directory, start the server with --allowed-local-media-path DIR (option allowedLocalMediaPath) pointing there.",
      );
      expect((await caught(access.resolve(ref, "video"))).code).toBe("E_MEDIA_NOT_ALLOWED");
    }
    expect(((await access.resolve("link-in.png", "image")) as Buffer).equals(imageBytes)).toBe(true);
    expect(((await access.resolve("link-sub/nested.png", "image")) as Buffer).equals(imageBytes)).toBe(true);
    expect(await access.resolve("link-in.png", "video")).toBe(fs.realpathSync(path.join(allowed, "photo.png")));
  });

  it.runIf(posix)("accepts the allowed directory named through a symlink, and paths through either name", async () => {
    const alias = media({ allowedLocalMediaPath: path.join(tmp, "alias") });
    expect(((await alias.resolve("photo.png", "image")) as Buffer).equals(imageBytes)).toBe(true);
    expect(((await alias.resolve(path.join(tmp, "alias", "photo.png"), "image")) as Buffer).equals(imageBytes)).toBe(true);
    expect(((await alias.resolve(path.join(allowed, "photo.png"), "image")) as Buffer).equals(imageBytes)).toBe(true);
    expect((await caught(alias.resolve("../outside.png", "image"))).code).toBe("E_MEDIA_NOT_ALLOWED");
  });

  it.runIf(posix)("refuses a FIFO at once, without waiting for a writer", async () => {
    const started = performance.now();
    for (const kind of ["image", "video"] as const) {
      const error = await within(2000, caught(access.resolve("fifo.png", kind)));
      expect(error).toBeInstanceOf(MediaNotAllowedError);
      expect(error.code).toBe("E_MEDIA_NOT_ALLOWED");
      expect(error.message).toBe(`${kind === "image" ? "Image" : "Video"} file "fifo.png" is refused: it is a FIFO, and the server only reads regular files.`);
    }
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("refuses a directory, including the allowed directory itself", async () => {
    for (const ref of ["dir", "sub/", ".", allowed, pathToFileURL(allowed).href]) {
      const error = await caught(access.resolve(ref, "image"));
      expect(error.code, ref).toBe("E_MEDIA_NOT_ALLOWED");
      expect(error.message).toBe(`Image file ${JSON.stringify(ref)} is refused: it is a directory, not a media file. Name the file itself.`);
    }
    expect((await caught(access.resolve("dir", "video"))).code).toBe("E_MEDIA_NOT_ALLOWED");
  });

  it("a missing file inside the directory → E_FILE_NOT_FOUND", async () => {
    for (const ref of ["nope.png", "sub/nope.png", "photo.png/nope", ...(posix ? ["dangling.png"] : [])]) {
      const error = await caught(access.resolve(ref, "image"));
      expect(error).toBeInstanceOf(FileNotFoundError);
      expect(error.code, ref).toBe("E_FILE_NOT_FOUND");
      expect(error.message).toBe(`Image file ${JSON.stringify(ref)} does not exist. Check the path (relative paths resolve against ${allowed}).`);
    }
    expect((await caught(access.resolve("nope.mp4", "video"))).message).toMatch(/^Video file "nope.mp4" does not exist/);
  });

  it("caps image reads at maxImageBytes; videos are not read", async () => {
    const small = media({ allowedLocalMediaPath: allowed, maxImageBytes: 1000 });
    const error = await caught(small.resolve("photo.png", "image"));
    expect(error.code).toBe("E_MEDIA_NOT_ALLOWED");
    expect(error.message).toBe(
      'Image file "photo.png" is larger than the server\'s 1000-byte limit for images. Raise it with the server option maxImageBytes if the file is expected.',
    );
    expect(((await media({ allowedLocalMediaPath: allowed, maxImageBytes: 3000 }).resolve("photo.png", "image")) as Buffer).length).toBe(3000);
    expect(await small.resolve("clip.mp4", "video")).toBe(fs.realpathSync(path.join(allowed, "clip.mp4")));
  });

  it("rejects malformed local references with E_INVALID_ARGUMENT", async () => {
    expect((await caught(access.resolve("photo.png\0.txt", "image"))).message).toBe('The media path "photo.png\\u0000.txt" contains a NUL character.');
    const encodedSlash = await caught(access.resolve(`file://${allowed}/sub%2fnested.png`, "image"));
    expect(encodedSlash.code).toBe("E_INVALID_ARGUMENT");
    expect(encodedSlash.message).toContain("is not a local file: URL");
    expect((await caught(access.resolve("file://fileserver/share/photo.png", "image"))).code).toBe(posix ? "E_INVALID_ARGUMENT" : "E_MEDIA_NOT_ALLOWED");
  });

  it("checks the allowed directory when constructed", () => {
    const missing = thrown(() => new MediaAccess({ allowedLocalMediaPath: path.join(tmp, "nowhere") }));
    expect(missing).toBeInstanceOf(FileNotFoundError);
    expect(missing.message).toBe(
      `The allowed local media directory ${path.join(tmp, "nowhere")} (allowedLocalMediaPath) does not exist or cannot be read: ENOENT. Create it, or pass an existing directory.`,
    );
    const file = thrown(() => new MediaAccess({ allowedLocalMediaPath: path.join(tmp, "outside.png") }));
    expect(file.code).toBe("E_INVALID_ARGUMENT");
    expect(file.message).toBe(
      `The allowed local media directory ${path.join(tmp, "outside.png")} (allowedLocalMediaPath) is not a directory. Pass the directory that holds the media files.`,
    );
  });
});

describe("references", () => {
  it("returns data: URLs unchanged; the library decodes them", async () => {
    const none = media();
    for (const ref of ["data:image/png;base64,iVBORw0KGgo=", "DATA:video/mp4;base64,AAAA", "data:,not base64 at all"]) {
      expect(await none.resolve(ref, "image")).toBe(ref);
    }
  });

  it("rejects unsupported schemes, naming the supported forms", async () => {
    const all = media({ allowAllMediaDomains: true, allowedLocalMediaPath: os.tmpdir() });
    for (const [ref, scheme] of [
      ["ftp://example.com/a.png", "ftp"],
      ["javascript:alert(1)", "javascript"],
      ["gopher://127.0.0.1:70/", "gopher"],
      ["ws://example.com/x", "ws"],
    ]) {
      const error = await caught(all.resolve(ref!, "image"));
      expect(error.code).toBe("E_INVALID_ARGUMENT");
      expect(error.message).toBe(
        `The media reference ${JSON.stringify(ref)} uses the unsupported scheme "${scheme}:". ` +
          'Use an http: or https: URL, a data: URL, a file: URL or a path (a relative path containing ":" must start with "./").',
      );
    }
    expect((await caught(all.resolve("http://", "image"))).message).toBe('The media reference "http://" is not a valid URL. Check its spelling.');
  });

  it("validates resolve's arguments", async () => {
    const access = media();
    expect((await caught(access.resolve("", "image"))).message).toBe('Expected a non-empty string for ref but received "" of type string');
    expect((await caught(access.resolve(42 as never, "image"))).message).toBe("Expected a non-empty string for ref but received 42 of type number");
    expect((await caught(access.resolve("a.png", "time_series" as never))).message).toBe('Expected "image", "video" or "audio" for kind but received "time_series" of type string');
    expect((await caught(access.resolve("a.png", "image", "stop" as never))).code).toBe("E_INVALID_ARGUMENT");
    const reason = new Error("gone");
    const aborted = await caught(access.resolve("data:,x", "image", AbortSignal.abort(reason)));
    expect(aborted.code).toBe("E_ABORTED");
    expect(aborted.cause).toBe(reason);
  });

  it("refuses to work after close()", async () => {
    const access = new MediaAccess({ allowAllMediaDomains: true });
    await access.close();
    await access.close();
    const error = await caught(access.resolve("data:,x", "image"));
    expect(error.code).toBe("E_DISPOSED");
  });
});

describe("options", () => {
  it.each([
    [{ allowedMediaDomains: "example.com" }, 'Expected an array of host names for allowedMediaDomains but received "example.com" of type string'],
    [{ allowedMediaDomains: [5] }, "Expected a host name for allowedMediaDomains[0] but received 5 of type number"],
    [{ allowedMediaDomains: ["*"] }, 'Expected a host name ("*" alone is not one: use allowAllMediaDomains) for allowedMediaDomains[0] but received "*" of type string'],
    [{ allowedMediaDomains: ["ok.com", "exa mple.com"] }, 'Expected a host name such as "example.com" or "*.example.com" for allowedMediaDomains[1] but received "exa mple.com" of type string'],
    [{ allowedMediaDomains: ["a*.example.com"] }, 'Expected a host name such as "example.com" or "*.example.com" for allowedMediaDomains[0] but received "a*.example.com" of type string'],
    [{ allowedMediaDomains: ["example.com/path"] }, 'Expected a host name such as "example.com" or "*.example.com" for allowedMediaDomains[0] but received "example.com/path" of type string'],
    [{ allowedMediaDomains: ["user@example.com"] }, 'Expected a host name such as "example.com" or "*.example.com" for allowedMediaDomains[0] but received "user@example.com" of type string'],
    [{ allowedMediaDomains: ["example.com\\x"] }, 'Expected a host name such as "example.com" or "*.example.com" for allowedMediaDomains[0] but received "example.com\\\\x" of type string'],
    [{ allowedMediaDomains: ["example.com:8080"] }, 'Expected a host name such as "example.com" or "*.example.com" for allowedMediaDomains[0] but received "example.com:8080" of type string'],
    [{ allowedMediaDomains: ["*.0.0.1"] }, 'Expected a host name such as "example.com" or "*.example.com" for allowedMediaDomains[0] but received "*.0.0.1" of type string'],
    [{ allowedPrivateNetworks: "10.0.0.0/8" }, 'Expected an array of CIDR ranges for allowedPrivateNetworks but received "10.0.0.0/8" of type string'],
    [{ allowedPrivateNetworks: ["10.0.0.0/33"] }, 'Expected a CIDR range or an IP address, such as "192.168.1.0/24" or "10.0.0.5" for allowedPrivateNetworks[0] but received "10.0.0.0/33" of type string'],
    [{ allowedPrivateNetworks: ["not-an-ip"] }, 'Expected a CIDR range or an IP address, such as "192.168.1.0/24" or "10.0.0.5" for allowedPrivateNetworks[0] but received "not-an-ip" of type string'],
    [{ allowedPrivateNetworks: ["10.1"] }, 'Expected a CIDR range or an IP address, such as "192.168.1.0/24" or "10.0.0.5" for allowedPrivateNetworks[0] but received "10.1" of type string'],
    [{ allowedPrivateNetworks: ["fd00::/129"] }, 'Expected a CIDR range or an IP address, such as "192.168.1.0/24" or "10.0.0.5" for allowedPrivateNetworks[0] but received "fd00::/129" of type string'],
    [{ allowedPrivateNetworks: [null] }, 'Expected a CIDR range or an IP address, such as "192.168.1.0/24" or "10.0.0.5" for allowedPrivateNetworks[0] but received null'],
    [{ allowAllMediaDomains: "yes" }, 'Expected a boolean for allowAllMediaDomains but received "yes" of type string'],
    [{ allowedLocalMediaPath: "" }, 'Expected a directory path for allowedLocalMediaPath but received "" of type string'],
    [{ timeoutMs: 0 }, "Expected an integer between 1 and 2147483647 for timeoutMs but received 0 of type number"],
    [{ maxImageBytes: -1 }, "Expected an integer between 1 and 9007199254740991 for maxImageBytes but received -1 of type number"],
    [{ maxVideoBytes: 1.5 }, "Expected an integer between 1 and 9007199254740991 for maxVideoBytes but received 1.5 of type number"],
    [{ maxRedirects: 21 }, "Expected an integer between 0 and 20 for maxRedirects but received 21 of type number"],
    [{ lookup: "8.8.8.8" }, 'Expected a function like dns.lookup for lookup but received "8.8.8.8" of type string'],
    [{ allowedDomains: [] }, "Unknown option allowedDomains for MediaAccess. Known options: allowedLocalMediaPath, allowedMediaDomains, allowAllMediaDomains, allowedPrivateNetworks, timeoutMs, maxImageBytes, maxVideoBytes, maxRedirects, lookup"],
  ])("rejects %j", (options, message) => {
    const error = thrown(() => new MediaAccess(options as never));
    expect(error.code).toBe("E_INVALID_ARGUMENT");
    expect(error.message).toBe(message);
  });

  it("accepts CIDRs, single addresses, IPv6 and wildcard domains", () => {
    expect(
      () =>
        new MediaAccess({
          allowedMediaDomains: ["Example.COM.", "*.cdn.example.com", "bücher.example", "[::1]", "10.0.0.5"],
          allowedPrivateNetworks: ["192.168.1.0/24", "10.0.0.5", "fd00::/8", "::1", "::ffff:10.1.0.0/112"],
        }),
    ).not.toThrow();
  });
});

describe.runIf(linux)("remote media", () => {
  /** The asset server on 127.0.0.2, reachable once 127.0.0.2/32 is allowed. */
  let exempt: http.Server;
  let exemptPort: number;
  /** An internal service on 127.0.0.1 that no request may reach. */
  let internal: http.Server;
  let internalPort: number;
  let internalConnections = 0;
  let internalRequests = 0;
  const lookups: string[] = [];
  /** rebind.test answers 127.0.0.2 first, then 127.0.0.1. */
  let rebindCalls = 0;

  const names: Record<string, string[]> = {
    "media.test": ["127.0.0.2"],
    "cdn.media.test": ["127.0.0.2"],
    "a.b.media.test": ["127.0.0.2"],
    "evilmedia.test": ["127.0.0.2"],
    "other.test": ["127.0.0.2"],
    "evil.test": ["127.0.0.1"],
    "mixed.test": ["127.0.0.2", "127.0.0.1"],
    "v6.test": ["::1"],
  };
  const lookup: LookupFunction = (hostname, options, callback) => {
    const name = hostname.replace(/\.$/, "").toLowerCase();
    lookups.push(name);
    let addresses = names[name];
    if (name === "rebind.test") addresses = [rebindCalls++ === 0 ? "127.0.0.2" : "127.0.0.1"];
    if (!addresses) return dns.lookup(hostname, options, callback);
    const list = addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
    if (options.all) callback(null, list);
    else callback(null, list[0]!.address, list[0]!.family);
  };
  const exemptNet = ["127.0.0.2/32"];
  const at = (host: string, route: string) => `http://${host}:${exemptPort}${route}`;
  const redirectTo = (host: string, target: string) => at(host, `/redirect?to=${encodeURIComponent(target)}`);

  beforeAll(async () => {
    exempt = http.createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname === "/img.png") res.writeHead(200, { "content-type": "image/png", "content-length": imageBytes.length }).end(imageBytes);
      else if (url.pathname === "/clip.mp4") res.writeHead(200, { "content-length": videoBytes.length }).end(videoBytes);
      else if (url.pathname === "/close.png") res.writeHead(200, { connection: "close" }).end(imageBytes);
      else if (url.pathname === "/chunked") {
        res.writeHead(200);
        res.write(videoBytes);
        res.end(videoBytes);
      } else if (url.pathname === "/redirect") res.writeHead(302, { location: url.searchParams.get("to") ?? "/" }).end();
      else if (url.pathname === "/hang") res.flushHeaders();
      else if (url.pathname === "/headers") res.end(JSON.stringify(req.headers));
      else res.writeHead(404).end();
    });
    internal = http.createServer((_req, res) => {
      internalRequests++;
      res.end(secretBytes);
    });
    internal.on("connection", () => internalConnections++);
    await new Promise<void>((resolve) => exempt.listen(0, "127.0.0.2", resolve));
    await new Promise<void>((resolve) => internal.listen(0, "127.0.0.1", resolve));
    exemptPort = (exempt.address() as AddressInfo).port;
    internalPort = (internal.address() as AddressInfo).port;
  });

  afterEach(() => {
    expect(internalConnections, "the internal server was connected to").toBe(0);
    expect(internalRequests, "the internal server got a request").toBe(0);
  });

  afterAll(async () => {
    await Promise.all(accesses.map((access) => access.close()));
    for (const server of [exempt, internal]) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  const expectRefused = async (promise: Promise<unknown>, message: string | RegExp): Promise<MultimodalLMError> => {
    const error = await caught(promise);
    expect(error).toBeInstanceOf(MediaNotAllowedError);
    expect(error.code).toBe("E_MEDIA_NOT_ALLOWED");
    if (typeof message === "string") expect(error.message).toBe(message);
    else expect(error.message).toMatch(message);
    return error;
  };
  const loopbackRefusal = (subject: string) =>
    `${subject} is a loopback address, and the server does not fetch media from loopback, private, link-local or other non-public addresses. ` +
    "To allow a trusted network, start it with --allowed-private-networks CIDR[,CIDR] (option allowedPrivateNetworks).";

  it("refuses every remote URL when no domain is allowed", async () => {
    const none = media({ lookup, allowedPrivateNetworks: exemptNet });
    await expectRefused(
      none.resolve(at("media.test", "/img.png"), "image"),
      "Remote media from media.test is refused: this server allows no media domains. Start it with --allowed-media-domains media.test " +
        "(option allowedMediaDomains) to allow this host, or --allow-all-media-domains (option allowAllMediaDomains) to allow any public host.",
    );
    expect(lookups).toEqual([]);
  });

  it("downloads from an allowed domain (case and trailing dot ignored)", async () => {
    const access = media({ lookup, allowedMediaDomains: ["Media.Test."], allowedPrivateNetworks: exemptNet });
    for (const ref of [at("media.test", "/img.png"), at("MEDIA.test.", "/img.png")]) {
      const result = await access.resolve(ref, "image");
      expect(Buffer.isBuffer(result)).toBe(true);
      expect((result as Buffer).equals(imageBytes)).toBe(true);
    }
    expect(((await access.resolve(at("media.test", "/clip.mp4"), "video")) as Buffer).equals(videoBytes)).toBe(true);
  });

  it("refuses a domain that is not allowed, without resolving it", async () => {
    lookups.length = 0;
    const access = media({ lookup, allowedMediaDomains: ["media.test"], allowedPrivateNetworks: exemptNet });
    await expectRefused(
      access.resolve(at("other.test", "/img.png"), "image"),
      "Remote media from other.test is refused: other.test is not in the server's allowed media domains. Add it with " +
        "--allowed-media-domains host[,host] (option allowedMediaDomains), or allow any public host with --allow-all-media-domains (option allowAllMediaDomains).",
    );
    await expectRefused(access.resolve(at("cdn.media.test", "/img.png"), "image"), /^Remote media from cdn\.media\.test is refused/);
    expect(lookups).toEqual([]);
  });

  it("*.domain matches subdomains only", async () => {
    const access = media({ lookup, allowedMediaDomains: ["*.media.test"], allowedPrivateNetworks: exemptNet });
    expect(((await access.resolve(at("cdn.media.test", "/img.png"), "image")) as Buffer).equals(imageBytes)).toBe(true);
    expect(((await access.resolve(at("a.b.media.test", "/img.png"), "image")) as Buffer).equals(imageBytes)).toBe(true);
    await expectRefused(access.resolve(at("media.test", "/img.png"), "image"), /^Remote media from media\.test is refused/);
    await expectRefused(access.resolve(at("evilmedia.test", "/img.png"), "image"), /^Remote media from evilmedia\.test is refused/);
  });

  it("allows an IP literal only when it is both an allowed domain and in an allowed network", async () => {
    const exemptOnly = media({ allowedMediaDomains: ["127.0.0.2"], allowedPrivateNetworks: ["127.0.0.2"] });
    expect(((await exemptOnly.resolve(`http://127.0.0.2:${exemptPort}/img.png`, "image")) as Buffer).equals(imageBytes)).toBe(true);
    const noNetwork = media({ allowedMediaDomains: ["127.0.0.2"] });
    await expectRefused(noNetwork.resolve(`http://127.0.0.2:${exemptPort}/img.png`, "image"), loopbackRefusal("Remote media from 127.0.0.2 is refused: 127.0.0.2"));
  });

  it("re-checks the address of every redirect hop", async () => {
    const all = media({ lookup, allowAllMediaDomains: true, allowedPrivateNetworks: exemptNet });
    expect(((await all.resolve(redirectTo("media.test", at("other.test", "/img.png")), "image")) as Buffer).equals(imageBytes)).toBe(true);
    await expectRefused(
      all.resolve(redirectTo("media.test", `http://127.0.0.1:${internalPort}/secret`), "image"),
      loopbackRefusal("A redirect to 127.0.0.1 is refused: 127.0.0.1"),
    );
    await expectRefused(
      all.resolve(redirectTo("media.test", `http://evil.test:${internalPort}/secret`), "image"),
      loopbackRefusal("Remote media from evil.test is refused: it resolves to 127.0.0.1, which"),
    );
    await expectRefused(all.resolve(redirectTo("media.test", `http://[::1]:${internalPort}/secret`), "video"), /^A redirect to \[::1\] is refused: ::1 is a loopback address/);
  });

  it("re-checks the domain of every redirect hop", async () => {
    const access = media({ lookup, allowedMediaDomains: ["media.test"], allowedPrivateNetworks: exemptNet });
    expect(((await access.resolve(redirectTo("media.test", at("media.test", "/img.png")), "image")) as Buffer).equals(imageBytes)).toBe(true);
    await expectRefused(
      access.resolve(redirectTo("media.test", at("other.test", "/img.png")), "image"),
      "A redirect to other.test is refused: other.test is not in the server's allowed media domains. Add it with " +
        "--allowed-media-domains host[,host] (option allowedMediaDomains), or allow any public host with --allow-all-media-domains (option allowAllMediaDomains).",
    );
    const redirects = media({ lookup, allowedMediaDomains: ["media.test"], allowedPrivateNetworks: exemptNet, maxRedirects: 0 });
    expect((await caught(redirects.resolve(redirectTo("media.test", at("media.test", "/img.png")), "image"))).code).toBe("E_FETCH");
  });

  it("refuses a name whose DNS answer is blocked, even if only one of several addresses is", async () => {
    const access = media({ lookup, allowedMediaDomains: ["evil.test", "mixed.test", "v6.test"], allowedPrivateNetworks: exemptNet });
    await expectRefused(access.resolve(`http://evil.test:${internalPort}/secret`, "image"), loopbackRefusal("Remote media from evil.test is refused: it resolves to 127.0.0.1, which"));
    await expectRefused(access.resolve(`http://mixed.test:${internalPort}/secret`, "image"), /^Remote media from mixed\.test is refused: it resolves to 127\.0\.0\.1, which is a loopback/);
    await expectRefused(access.resolve(`http://v6.test:${internalPort}/secret`, "image"), /^Remote media from v6\.test is refused: it resolves to ::1, which is a loopback/);
  });

  it("refuses localhost through the system resolver", async () => {
    const all = media({ allowAllMediaDomains: true });
    await expectRefused(all.resolve(`http://localhost:${internalPort}/secret`, "image"), /^Remote media from localhost is refused: it resolves to (127\.0\.0\.1|::1), which is a loopback/);
  });

  it("checks at connect time, so a DNS answer that changes (rebinding) is caught", async () => {
    const access = media({ lookup, allowedMediaDomains: ["rebind.test"], allowedPrivateNetworks: exemptNet });
    // /close.png closes the connection, so the second request connects (and resolves) again.
    expect(((await access.resolve(`http://rebind.test:${exemptPort}/close.png`, "image")) as Buffer).equals(imageBytes)).toBe(true);
    await expectRefused(access.resolve(`http://rebind.test:${exemptPort}/close.png`, "image"), /^Remote media from rebind\.test is refused: it resolves to 127\.0\.0\.1/);
    expect(rebindCalls).toBe(2);
  });

  it("parses hosts like the WHATWG URL parser: a backslash ends the authority", async () => {
    const ref = `http://127.0.0.1:${internalPort}\\@media.test/img.png`;
    expect(new URL(ref).hostname).toBe("127.0.0.1");
    const domains = media({ lookup, allowedMediaDomains: ["media.test"], allowedPrivateNetworks: exemptNet });
    await expectRefused(domains.resolve(ref, "image"), /^Remote media from 127\.0\.0\.1 is refused: 127\.0\.0\.1 is not in the server's allowed media domains/);
    const all = media({ lookup, allowAllMediaDomains: true, allowedPrivateNetworks: exemptNet });
    await expectRefused(all.resolve(ref, "image"), loopbackRefusal("Remote media from 127.0.0.1 is refused: 127.0.0.1"));
  });

  it("refuses loopback, mapped, unspecified and private IP literals in every spelling", async () => {
    const all = media({ lookup, allowAllMediaDomains: true, allowedPrivateNetworks: exemptNet });
    for (const [host, address, range] of [
      ["[::1]", "::1", "loopback"],
      ["[::ffff:127.0.0.1]", "::ffff:7f00:1", "loopback"],
      ["0x7f000001", "127.0.0.1", "loopback"],
      ["2130706433", "127.0.0.1", "loopback"],
      ["127.1", "127.0.0.1", "loopback"],
      ["0.0.0.0", "0.0.0.0", "unspecified"],
      ["[::]", "::", "unspecified"],
      ["10.0.0.1", "10.0.0.1", "private"],
      ["169.254.169.254", "169.254.169.254", "linkLocal"],
      ["100.64.0.1", "100.64.0.1", "carrierGradeNat"],
      ["[fd00::1]", "fd00::1", "uniqueLocal"],
      ["[fe80::1]", "fe80::1", "linkLocal"],
    ]) {
      await expectRefused(all.resolve(`http://${host}:${internalPort}/secret`, "image"), new RegExp(`is refused: ${address!.replace(/[.:]/g, "\\$&")} is a ${range} address`));
    }
  });

  it("caps downloads at maxImageBytes or maxVideoBytes, by kind", async () => {
    const access = media({ lookup, allowedMediaDomains: ["media.test"], allowedPrivateNetworks: exemptNet, maxImageBytes: 4000, maxVideoBytes: 20_000 });
    const declared = await caught(access.resolve(at("media.test", "/clip.mp4"), "image"));
    expect(declared).toBeInstanceOf(FetchError);
    expect(declared.code).toBe("E_FETCH");
    expect(declared.message).toContain("is larger than the 4000-byte limit (Content-Length: 5000). Raise the limit with the server option maxImageBytes");
    const streamed = await caught(access.resolve(at("media.test", "/chunked"), "image"));
    expect(streamed.code).toBe("E_FETCH");
    expect(streamed.message).toContain("is larger than the 4000-byte limit (more than 4000 bytes received)");
    expect(((await access.resolve(at("media.test", "/chunked"), "video")) as Buffer).length).toBe(10_000);
    const small = media({ lookup, allowedMediaDomains: ["media.test"], allowedPrivateNetworks: exemptNet, maxVideoBytes: 9000 });
    const video = await caught(small.resolve(at("media.test", "/chunked"), "video"));
    expect(video.code).toBe("E_FETCH");
    expect(video.message).toContain("Raise the limit with the server option maxVideoBytes");
  });

  it("times out a server that never answers", async () => {
    const access = media({ lookup, allowedMediaDomains: ["media.test"], allowedPrivateNetworks: exemptNet, timeoutMs: 200 });
    const started = performance.now();
    const error = await caught(access.resolve(at("media.test", "/hang"), "image"));
    expect(error.code).toBe("E_FETCH");
    expect(error.message).toContain("timed out after 200 ms");
    expect(error.message).toContain("Raise the limit with the server option timeoutMs");
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("aborts a download through the signal", async () => {
    const access = media({ lookup, allowedMediaDomains: ["media.test"], allowedPrivateNetworks: exemptNet });
    const controller = new AbortController();
    const reason = new Error("client went away");
    setTimeout(() => controller.abort(reason), 50);
    const error = await caught(access.resolve(at("media.test", "/hang"), "video", controller.signal));
    expect(error.code).toBe("E_ABORTED");
    expect(error.cause).toBe(reason);
  });

  it("close() drops the agent; a closed MediaAccess refuses further work", async () => {
    const access = new MediaAccess({ lookup, allowedMediaDomains: ["media.test"], allowedPrivateNetworks: exemptNet });
    expect(((await access.resolve(at("media.test", "/img.png"), "image")) as Buffer).equals(imageBytes)).toBe(true);
    await access.close();
    expect((await caught(access.resolve(at("media.test", "/img.png"), "image"))).code).toBe("E_DISPOSED");
  });

  describe("fetchBytes with dispatcher and checkUrl", () => {
    it("calls checkUrl with the first URL and every redirect target", async () => {
      const seen: string[] = [];
      const agent = new Agent();
      try {
        const target = `http://127.0.0.2:${exemptPort}/img.png`;
        const start = `http://127.0.0.2:${exemptPort}/redirect?to=${encodeURIComponent(target)}`;
        const result = await fetchBytes(start, { dispatcher: agent, checkUrl: (url) => void seen.push(url.href), headers: { "x-test": "1" } });
        expect(result.bytes.equals(imageBytes)).toBe(true);
        expect(result.finalUrl).toBe(target);
        expect(seen).toEqual([start, target]);
      } finally {
        await agent.close();
      }
    });

    it("sends headers and URL credentials through undici's fetch", async () => {
      const agent = new Agent();
      try {
        const result = await fetchBytes(`http://user:pw@127.0.0.2:${exemptPort}/headers`, { dispatcher: agent, headers: { "x-test": "1" } });
        const seen = JSON.parse(result.bytes.toString()) as Record<string, string>;
        expect(seen["x-test"]).toBe("1");
        expect(seen.authorization).toBe(`Basic ${Buffer.from("user:pw").toString("base64")}`);
      } finally {
        await agent.close();
      }
    });

    it("rethrows a MultimodalLMError from checkUrl or the lookup as itself", async () => {
      const refusal = new MediaNotAllowedError("no");
      expect(
        await caught(
          fetchBytes(`http://127.0.0.2:${exemptPort}/img.png`, {
            checkUrl: () => {
              throw refusal;
            },
          }),
        ),
      ).toBe(refusal);
      const agent = new Agent({ connect: { lookup: (_host, _options, callback) => callback(refusal, "", 0) } });
      try {
        expect(await caught(fetchBytes(`http://media.test:${exemptPort}/img.png`, { dispatcher: agent }))).toBe(refusal);
      } finally {
        await agent.close();
      }
    });

    it("validates the new options", async () => {
      expect((await caught(fetchBytes("http://127.0.0.2/", { dispatcher: {} as never }))).message).toBe(
        "Expected an undici Dispatcher (such as an Agent) for options.dispatcher but received an object",
      );
      expect((await caught(fetchBytes("http://127.0.0.2/", { checkUrl: true as never }))).message).toBe(
        "Expected a function for options.checkUrl but received true of type boolean",
      );
    });
  });
});
