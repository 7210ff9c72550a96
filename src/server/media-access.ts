// The server's media policy: which local files and remote URLs a request may make the server read.
// Both are refused by default. Local paths must stay inside one directory after symlinks are
// followed; remote hosts must be allowed by name, and their addresses must be public unless a
// network is exempted, checked when connecting so a DNS answer cannot change between check and use.
import dns from "node:dns";
import { constants as fsConstants, realpathSync, statSync } from "node:fs";
import { open, realpath, stat, type FileHandle } from "node:fs/promises";
import type { LookupAddress } from "node:dns";
import net, { type LookupFunction } from "node:net";
import path from "node:path";
import { domainToASCII, fileURLToPath } from "node:url";

import ipaddr from "ipaddr.js";
import type { Agent } from "undici";

import { AbortError, FileNotFoundError, MediaNotAllowedError, MultimodalLMError, StateError } from "../errors.js";
import { DEFAULT_FETCH_MAX_REDIRECTS, DEFAULT_FETCH_TIMEOUT_MS, fetchBytes } from "../media/fetch.js";
import { invalidParameter, is, optionalBoolean, optionalInteger, optionalSignal, rejectUnknownKeys } from "../validate.js";
import type { MediaAccessOptions } from "./media-access-types.js";

/** What a media reference stands for. */
type MediaKind = "image" | "video" | "audio";

export type { MediaAccessOptions } from "./media-access-types.js";

export const DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_VIDEO_BYTES = 256 * 1024 * 1024;

/** The option names MediaAccess takes (the handler passes these through). */
export const MEDIA_ACCESS_OPTION_KEYS = [
  "allowedLocalMediaPath",
  "allowedMediaDomains",
  "allowAllMediaDomains",
  "allowedPrivateNetworks",
  "timeoutMs",
  "maxImageBytes",
  "maxVideoBytes",
  "maxRedirects",
  "lookup",
] as const;
// Same bounds as fetchBytes: setTimeout fires at once above 2^31-1 ms.
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const MAX_REDIRECTS = 20;
const READ_CHUNK_BYTES = 1024 * 1024;
// O_NONBLOCK so opening a FIFO returns at once instead of waiting for a writer; O_NOFOLLOW so a
// symlink swapped in after realpath is not followed. Both are 0 (absent) on Windows.
const OPEN_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0) | (fsConstants.O_NOFOLLOW ?? 0);

const FLAG_LOCAL = "--allowed-local-media-path DIR (option allowedLocalMediaPath)";
const FLAG_DOMAINS = "--allowed-media-domains host[,host] (option allowedMediaDomains)";
const FLAG_ALL_DOMAINS = "--allow-all-media-domains (option allowAllMediaDomains)";
const FLAG_PRIVATE = "--allowed-private-networks CIDR[,CIDR] (option allowedPrivateNetworks)";

type Address = ipaddr.IPv4 | ipaddr.IPv6;
type Network = [Address, number];

interface DomainRule {
  host: string;
  /** "*.example.com": subdomains of `host`, not `host` itself. */
  subdomains: boolean;
}

interface LocalRoot {
  /** The directory as configured, made absolute. */
  given: string;
  /** The same directory with symlinks resolved: what every real path must be inside. */
  real: string;
}

/** Applies the server's media policy to the media references in requests. */
export class MediaAccess {
  readonly #root: LocalRoot | undefined;
  readonly #domains: readonly DomainRule[];
  readonly #allowAllDomains: boolean;
  readonly #privateNetworks: readonly Network[];
  readonly #timeoutMs: number;
  readonly #maxImageBytes: number;
  readonly #maxVideoBytes: number;
  readonly #maxRedirects: number;
  readonly #lookup: LookupFunction;
  // undici is loaded on the first download: it costs about 20 MB of memory, and many servers never fetch.
  #agent: Promise<Agent> | undefined;
  #closed = false;

  constructor(options: MediaAccessOptions = {}) {
    if (!is.object(options)) throw invalidParameter("options", "an object", options);
    rejectUnknownKeys("MediaAccess", options, MEDIA_ACCESS_OPTION_KEYS);
    const o = options as Record<string, unknown>;
    this.#root = o.allowedLocalMediaPath === undefined ? undefined : openRoot(o.allowedLocalMediaPath);
    this.#domains = parseDomains(o.allowedMediaDomains);
    this.#allowAllDomains = optionalBoolean("allowAllMediaDomains", o.allowAllMediaDomains, false);
    this.#privateNetworks = parseNetworks(o.allowedPrivateNetworks);
    this.#timeoutMs = optionalInteger("timeoutMs", o.timeoutMs, 1, MAX_TIMEOUT_MS, DEFAULT_FETCH_TIMEOUT_MS);
    this.#maxImageBytes = optionalInteger("maxImageBytes", o.maxImageBytes, 1, Number.MAX_SAFE_INTEGER, DEFAULT_MAX_IMAGE_BYTES);
    this.#maxVideoBytes = optionalInteger("maxVideoBytes", o.maxVideoBytes, 1, Number.MAX_SAFE_INTEGER, DEFAULT_MAX_VIDEO_BYTES);
    this.#maxRedirects = optionalInteger("maxRedirects", o.maxRedirects, 0, MAX_REDIRECTS, DEFAULT_FETCH_MAX_REDIRECTS);
    if (o.lookup !== undefined && !is.fn(o.lookup)) throw invalidParameter("lookup", "a function like dns.lookup", o.lookup);
    this.#lookup = (o.lookup as LookupFunction | undefined) ?? (dns.lookup as LookupFunction);
  }

  /**
   * Resolves a media reference taken from an HTTP request into what MultimodalLM reads: a data:
   * URL unchanged, a download as a Buffer, a local image as a Buffer, a local video as its real
   * path (ffmpeg reads it). Throws `MediaNotAllowedError` (E_MEDIA_NOT_ALLOWED) when the policy
   * refuses it, naming the option that would allow it.
   */
  async resolve(ref: string, kind: MediaKind, signal?: AbortSignal): Promise<Buffer | string> {
    if (!is.string(ref) || ref.length === 0) throw invalidParameter("ref", "a non-empty string", ref);
    if (kind !== "image" && kind !== "video" && kind !== "audio") throw invalidParameter("kind", '"image", "video" or "audio"', kind);
    optionalSignal("signal", signal);
    if (this.#closed) throw new StateError("E_DISPOSED", "This MediaAccess is closed; create a new one to resolve media.");
    if (signal?.aborted) throw new AbortError("Resolving the media was aborted before it started.", { cause: signal.reason });

    // The library decodes data: URLs itself and reports a bad one as E_INVALID_DATA_URL.
    if (/^data:/i.test(ref)) return ref;
    // Two or more letters before ":" so a Windows drive ("C:\\x") still reads as a path.
    const scheme = /^([a-z][a-z0-9+.-]+):/i.exec(ref)?.[1]?.toLowerCase();
    if (scheme === undefined) return this.#resolveLocal(ref, ref, kind, signal);
    if (scheme !== "http" && scheme !== "https" && scheme !== "file") {
      throw new MultimodalLMError(
        "E_INVALID_ARGUMENT",
        `The media reference ${quote(ref)} uses the unsupported scheme "${scheme}:". ` +
          'Use an http: or https: URL, a data: URL, a file: URL or a path (a relative path containing ":" must start with "./").',
      );
    }
    if (!URL.canParse(ref)) throw new MultimodalLMError("E_INVALID_ARGUMENT", `The media reference ${quote(ref)} is not a valid URL. Check its spelling.`);
    const url = new URL(ref);
    if (scheme === "file") {
      if (!this.#root) throw localRefused(ref);
      let file: string;
      try {
        file = fileURLToPath(url);
      } catch (error) {
        throw new MultimodalLMError("E_INVALID_ARGUMENT", `The media reference ${quote(ref)} is not a local file: URL: ${(error as Error).message}`, {
          cause: error,
        });
      }
      return this.#resolveLocal(file, ref, kind, signal);
    }
    return this.#download(url, kind, signal);
  }

  /** Closes the connections kept for downloads. Later calls to `resolve` fail with E_DISPOSED. */
  async close(): Promise<void> {
    this.#closed = true;
    const agent = this.#agent;
    this.#agent = undefined;
    // destroy, not close: a download still running would otherwise hold shutdown for up to timeoutMs.
    await (await agent)?.destroy();
  }

  async #resolveLocal(file: string, ref: string, kind: MediaKind, signal: AbortSignal | undefined): Promise<Buffer | string> {
    const root = this.#root;
    if (!root) throw localRefused(ref);
    if (file.includes("\0")) throw new MultimodalLMError("E_INVALID_ARGUMENT", `The media path ${quote(ref)} contains a NUL character.`);
    const absolute = path.resolve(root.real, file);
    // Refused before touching the filesystem, so a request cannot probe which files exist elsewhere.
    if (!isInside(root.real, absolute) && !isInside(root.given, absolute)) throw outsideRoot(ref, root, "is");

    const what = kind === "image" ? "Image" : kind === "video" ? "Video" : "Audio";
    const missing = (why: string, cause?: unknown) => new FileNotFoundError(absolute, `${what} file ${quote(ref)} ${why}`, { cause });
    const special = (why: string) => new MediaNotAllowedError(`${what} file ${quote(ref)} ${why}`);
    let real: string;
    try {
      real = await realpath(absolute);
    } catch (error) {
      throw missing(describeFsError(error, root), error);
    }
    if (!isInside(root.real, real)) throw outsideRoot(ref, root, "resolves through a symbolic link to a file that is");

    // stat first so a device or FIFO is refused without being opened at all; then fstat the opened
    // file, in case it was replaced in between.
    let handle: FileHandle | undefined;
    try {
      const before = await stat(real);
      if (!before.isFile()) throw special(notRegular(before));
      handle = await open(real, OPEN_FLAGS);
      const info = await handle.stat();
      if (!info.isFile()) throw special(notRegular(info));
      // ffmpeg reads videos and audio clips from the vetted path.
      if (kind !== "image") return real;
      return await readCapped(handle, this.#maxImageBytes, ref, signal);
    } catch (error) {
      if (error instanceof MultimodalLMError) throw error;
      throw missing(describeFsError(error, root), error);
    } finally {
      await handle?.close();
    }
  }

  async #download(url: URL, kind: MediaKind, signal: AbortSignal | undefined): Promise<Buffer> {
    // Checked before the agent exists, so a refused request costs nothing; fetchBytes checks it again.
    this.#checkRemote(url, false);
    let hops = 0;
    const checkUrl = (target: URL): void => this.#checkRemote(target, hops++ > 0);
    this.#agent ??= import("undici").then(({ Agent }) => new Agent({ connect: { lookup: this.#vettedLookup } }));
    const { bytes } = await fetchBytes(url, {
      dispatcher: await this.#agent,
      checkUrl,
      signal,
      timeoutMs: this.#timeoutMs,
      // Audio clips share the video cap: both are files ffmpeg decodes.
      maxBytes: kind === "image" ? this.#maxImageBytes : this.#maxVideoBytes,
      maxRedirects: this.#maxRedirects,
      limitNames: {
        timeoutMs: "the server option timeoutMs",
        maxBytes: `the server option ${kind === "image" ? "maxImageBytes" : "maxVideoBytes"}`,
        maxRedirects: "the server option maxRedirects",
      },
    });
    return bytes;
  }

  /** The domain allowlist, and the address check for IP literals (which never reach the lookup). */
  #checkRemote(url: URL, redirected: boolean): void {
    const host = url.hostname.replace(/\.$/, "");
    const what = redirected ? `A redirect to ${host}` : `Remote media from ${host}`;
    if (!this.#allowAllDomains && !this.#domains.some((rule) => matchesDomain(rule, host))) {
      if (this.#domains.length === 0) {
        throw new MediaNotAllowedError(
          `${what} is refused: this server allows no media domains. Start it with --allowed-media-domains ${host} ` +
            `(option allowedMediaDomains) to allow this host, or ${FLAG_ALL_DOMAINS} to allow any public host.`,
        );
      }
      throw new MediaNotAllowedError(
        `${what} is refused: ${host} is not in the server's allowed media domains. Add it with ${FLAG_DOMAINS}, ` +
          `or allow any public host with ${FLAG_ALL_DOMAINS}.`,
      );
    }
    const literal = host.startsWith("[") ? host.slice(1, -1) : host;
    if (net.isIP(literal)) this.#checkAddress(literal, `${what} is refused: ${literal}`);
  }

  /** Throws when `address` is not public unicast and not in an allowed private network. */
  #checkAddress(address: string, prefix: string): void {
    let parsed: Address;
    try {
      parsed = ipaddr.process(address);
    } catch (error) {
      throw new MediaNotAllowedError(`${prefix} is not a valid IP address.`, { cause: error });
    }
    const range = parsed.range();
    if (range === "unicast") return;
    if (this.#privateNetworks.some(([network, bits]) => network.kind() === parsed.kind() && parsed.match(network, bits))) return;
    throw new MediaNotAllowedError(
      `${prefix} is a ${range} address, and the server does not fetch media from loopback, private, link-local or other ` +
        `non-public addresses. To allow a trusted network, start it with ${FLAG_PRIVATE}.`,
    );
  }

  /**
   * The agent's DNS lookup: resolves every address and fails if any is blocked. Checking here, at
   * connect time, means the address checked is the address connected to (no DNS rebinding).
   */
  readonly #vettedLookup: LookupFunction = (hostname, options, callback) => {
    this.#lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, "", 0);
      const list: LookupAddress[] = Array.isArray(addresses) ? addresses : [{ address: addresses, family: net.isIP(addresses) }];
      if (list.length === 0) return callback(Object.assign(new Error(`No address found for ${hostname}`), { code: "ENOTFOUND" }), "", 0);
      try {
        for (const { address } of list) this.#checkAddress(address, `Remote media from ${hostname} is refused: it resolves to ${address}, which`);
      } catch (refusal) {
        return callback(refusal as Error, "", 0);
      }
      if (options.all) callback(null, list);
      else callback(null, list[0]!.address, list[0]!.family);
    });
  };
}

function openRoot(value: unknown): LocalRoot {
  if (!is.string(value) || value.length === 0) throw invalidParameter("allowedLocalMediaPath", "a directory path", value);
  const given = path.resolve(value);
  let real: string;
  try {
    real = realpathSync.native(given);
  } catch (error) {
    throw new FileNotFoundError(
      given,
      `The allowed local media directory ${given} (allowedLocalMediaPath) does not exist or cannot be read: ` +
        `${(error as NodeJS.ErrnoException).code ?? (error as Error).message}. Create it, or pass an existing directory.`,
      { cause: error },
    );
  }
  if (!statSync(real).isDirectory()) {
    throw new MultimodalLMError(
      "E_INVALID_ARGUMENT",
      `The allowed local media directory ${given} (allowedLocalMediaPath) is not a directory. Pass the directory that holds the media files.`,
    );
  }
  return { given, real };
}

function parseDomains(value: unknown): DomainRule[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw invalidParameter("allowedMediaDomains", "an array of host names", value);
  return value.map((entry, i): DomainRule => {
    const name = `allowedMediaDomains[${i}]`;
    if (!is.string(entry)) throw invalidParameter(name, "a host name", entry);
    if (entry === "*") throw invalidParameter(name, 'a host name ("*" alone is not one: use allowAllMediaDomains)', entry);
    const subdomains = entry.startsWith("*.");
    const bare = (subdomains ? entry.slice(2) : entry).replace(/\.$/, "");
    // Normalized as the URL parser will normalize request URLs (case, IDN to punycode, IPv4 and IPv6
    // forms). domainToASCII stops at "/", "?", "#" and a backslash instead of failing, so those are refused first.
    const host = /[/?#\\@%]/.test(bare) ? "" : /^\[.*\]$/.test(bare) ? canonicalHost(bare) : domainToASCII(bare);
    if (!host || host.includes("*") || (subdomains && net.isIP(host))) throw invalidParameter(name, 'a host name such as "example.com" or "*.example.com"', entry);
    return { host, subdomains };
  });
}

function canonicalHost(bracketed: string): string {
  return URL.canParse(`http://${bracketed}/`) ? new URL(`http://${bracketed}/`).hostname : "";
}

function matchesDomain(rule: DomainRule, host: string): boolean {
  if (!rule.subdomains) return host === rule.host;
  return host.endsWith(`.${rule.host}`) && !net.isIP(host);
}

function parseNetworks(value: unknown): Network[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw invalidParameter("allowedPrivateNetworks", "an array of CIDR ranges", value);
  return value.map((entry, i): Network => {
    const name = `allowedPrivateNetworks[${i}]`;
    const expected = 'a CIDR range or an IP address, such as "192.168.1.0/24" or "10.0.0.5"';
    if (!is.string(entry)) throw invalidParameter(name, expected, entry);
    // Only dotted-quad IPv4: ipaddr.js would also read "010.1" (octal, short forms), which surprises.
    const [address = "", bits] = entry.split("/");
    if (!ipaddr.IPv6.isValid(address) && !ipaddr.IPv4.isValidFourPartDecimal(address)) throw invalidParameter(name, expected, entry);
    let network: Network;
    try {
      network = bits === undefined ? single(ipaddr.parse(address)) : ipaddr.parseCIDR(entry);
    } catch {
      throw invalidParameter(name, expected, entry);
    }
    // Addresses are checked after ipaddr.process (IPv4-mapped IPv6 becomes IPv4), so networks are too.
    const [ip, prefix] = network;
    if (ip.kind() === "ipv6" && (ip as ipaddr.IPv6).isIPv4MappedAddress() && prefix >= 96) return [(ip as ipaddr.IPv6).toIPv4Address(), prefix - 96];
    return network;
  });
}

function single(ip: Address): Network {
  return [ip, ip.kind() === "ipv4" ? 32 : 128];
}

/** Whether `child` is `parent` or below it. A plain prefix test would let /media-evil pass for /media. */
function isInside(parent: string, child: string): boolean {
  const relative = path.relative(parent, child);
  return relative === "" || (relative !== ".." && !relative.startsWith(`..${path.sep}`) && !path.isAbsolute(relative));
}

async function readCapped(handle: FileHandle, maxBytes: number, ref: string, signal: AbortSignal | undefined): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    if (signal?.aborted) throw new AbortError(`Reading ${quote(ref)} was aborted.`, { cause: signal.reason });
    const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, maxBytes - total + 1));
    const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
    if (bytesRead === 0) break;
    total += bytesRead;
    // The size is counted while reading, not taken from stat: the file may grow meanwhile.
    if (total > maxBytes) {
      throw new MediaNotAllowedError(
        `Image file ${quote(ref)} is larger than the server's ${maxBytes}-byte limit for images. Raise it with the server option maxImageBytes if the file is expected.`,
      );
    }
    chunks.push(chunk.subarray(0, bytesRead));
  }
  return Buffer.concat(chunks, total);
}

function localRefused(ref: string): MediaNotAllowedError {
  return new MediaNotAllowedError(
    `Local media ${quote(ref)} is refused: this server allows no local media directory. Start it with ${FLAG_LOCAL} ` +
      "to serve files from DIR, or send the media inline as a data: URL.",
  );
}

function outsideRoot(ref: string, root: LocalRoot, how: string): MediaNotAllowedError {
  return new MediaNotAllowedError(
    `Local media ${quote(ref)} ${how} outside the allowed media directory ${root.given}. Only files inside it can be used; ` +
      `to serve another directory, start the server with ${FLAG_LOCAL} pointing there.`,
  );
}

function notRegular(info: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean }): string {
  if (info.isDirectory()) return "is refused: it is a directory, not a media file. Name the file itself.";
  const type = info.isFIFO() ? "a FIFO" : info.isSocket() ? "a socket" : "a device or other special file";
  // Reading a FIFO or device could block or never end; no option allows them.
  return `is refused: it is ${type}, and the server only reads regular files.`;
}

function describeFsError(error: unknown, root: LocalRoot): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT" || code === "ENOTDIR") return `does not exist. Check the path (relative paths resolve against ${root.given}).`;
  if (code === "ELOOP") return "is a symbolic link loop, or was replaced by a symbolic link while it was opened.";
  return `could not be read (${code ?? (error as Error).message}).`;
}

/** A reference for messages: quoted (no line breaks from the request get through) and shortened. */
function quote(ref: string): string {
  return JSON.stringify(ref.length > 200 ? `${ref.slice(0, 197)}...` : ref);
}
