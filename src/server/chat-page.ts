// The web chat page at "/": one self-contained HTML file (its CSS and script inlined by
// scripts/build-web.mjs), so it works offline, under any mount path, and with a strict CSP.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { fileURLToPath } from "node:url";

import { DEFAULT_VIDEO_FPS, DEFAULT_VIDEO_MAX_FRAMES, MAX_VIDEO_FRAMES } from "../media/video.js";
import { HttpError } from "./http-errors.js";

/** What the page needs to know before its first request; model name and capabilities come from /v1/models. */
export interface ChatPageConfig {
  maxBodyBytes: number;
  apiKeyRequired: boolean;
}

interface BuiltPage {
  html: string;
  csp: string;
}

// lib/server/chat-page.js and src/server/chat-page.ts both sit two levels below the package root;
// the built page is always lib/web/chat.html.
const PAGE_FILE = fileURLToPath(new URL("../../lib/web/chat.html", import.meta.url));
const CONFIG_MARKER = "<!--multimodal-lm:config-->";

let built: Promise<BuiltPage> | undefined;

function sha256(text: string): string {
  return `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`;
}

async function loadPage(): Promise<BuiltPage> {
  let html: string;
  try {
    html = await readFile(PAGE_FILE, "utf8");
  } catch (error) {
    throw new HttpError(
      503,
      "E_UNAVAILABLE",
      `The chat page is not built (${PAGE_FILE} is missing). Run "npm run build:ts" in the multimodal-lm package, or turn the page off (--no-ui, or the handler option ui: false).`,
      { cause: error },
    );
  }
  // Only the page's own inline script and style may run: no CDN, no injected markup.
  const scripts = [...html.matchAll(/<script type="module">([\s\S]*?)<\/script>/g)].map((m) => sha256(m[1]!));
  const styles = [...html.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => sha256(m[1]!));
  const csp = [
    "default-src 'none'",
    `script-src ${scripts.join(" ")}`,
    `style-src ${styles.join(" ")}`,
    "img-src 'self' blob: data:",
    "media-src 'self' blob: data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'self'",
  ].join("; ");
  return { html, csp };
}

/** The page's config as a JSON data block; `<` is escaped so no value can close the script element. */
function configBlock(config: ChatPageConfig): string {
  const json = JSON.stringify({
    ...config,
    video: { fps: DEFAULT_VIDEO_FPS, maxFrames: DEFAULT_VIDEO_MAX_FRAMES, maxFramesLimit: MAX_VIDEO_FRAMES },
  }).replace(/</g, "\\u003c");
  return `<script id="config" type="application/json">${json}</script>`;
}

export async function serveChatPage(req: IncomingMessage, res: ServerResponse, config: ChatPageConfig): Promise<void> {
  built ??= loadPage();
  let page: BuiltPage;
  try {
    page = await built;
  } catch (error) {
    // Try the file again next time (it may be built in the meantime).
    built = undefined;
    throw error;
  }
  const body = Buffer.from(page.html.replace(CONFIG_MARKER, configBlock(config)), "utf8");
  res.writeHead(200, {
    "content-type": "text/html; charset=utf-8",
    "content-length": String(body.length),
    "cache-control": "no-cache",
    "content-security-policy": page.csp,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  });
  res.end(req.method === "HEAD" ? undefined : body);
}
