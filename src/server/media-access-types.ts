// What the server's media policy allows. Local files and remote URLs are both refused by default,
// as in vLLM (--allowed-local-media-path, --allowed-media-domains) and llama-server.
import type { LookupFunction } from "node:net";

export interface MediaAccessOptions {
  /**
   * Directory that local media (file:// URLs and plain paths) must be inside, after following
   * symlinks. Relative paths in requests are taken relative to it. Default: none, so every local
   * path is refused.
   */
  allowedLocalMediaPath?: string;
  /**
   * Hostnames that http(s) media may come from: "example.com" matches that host only,
   * "*.example.com" its subdomains. Default: none, so every remote URL is refused.
   */
  allowedMediaDomains?: string[];
  /** Allow http(s) media from any domain. Private, loopback and link-local addresses stay blocked. Default false. */
  allowAllMediaDomains?: boolean;
  /**
   * Networks (CIDR, or a single address) that remote media may reach even though they are private,
   * loopback or link-local, e.g. a media server on the LAN: ["192.168.1.0/24"]. Default: none.
   * IPv4 is written as four decimal parts; a single address means /32 (IPv4) or /128 (IPv6).
   */
  allowedPrivateNetworks?: string[];
  /** Time limit for one download, redirects included, in ms. Default 30 000. */
  timeoutMs?: number;
  /** Largest image download or local image file, in bytes. Default 64 MiB. */
  maxImageBytes?: number;
  /** Largest video download, in bytes. Default 256 MiB. Local videos are not read here (ffmpeg reads them by path), so not capped. */
  maxVideoBytes?: number;
  /** Redirects followed; each hop is checked again. Default 5. */
  maxRedirects?: number;
  /** DNS lookup used for remote hosts (its answers are checked before connecting). Default: dns.lookup. For tests. */
  lookup?: LookupFunction;
}
