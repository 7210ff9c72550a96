// Builds the chat page: compiles src/web/chat.ts (tsconfig.web.json) and writes one
// self-contained lib/web/chat.html with the CSS and script inlined, so the server has a single
// file to serve, it works under any mount path, and a CSP can pin both by hash.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
execFileSync(process.execPath, [tsc, "-p", path.join(root, "tsconfig.web.json")], { stdio: "inherit" });

const source = (name) => readFileSync(path.join(root, "src", "web", name), "utf8");
const script = readFileSync(path.join(root, "lib", "web", "chat.js"), "utf8");
if (/<\/script/i.test(script)) throw new Error("build-web: chat.js contains </script, which would end the inline script early");

const fill = (html, marker, content) => {
  if (!html.includes(marker)) throw new Error(`build-web: chat.html has no ${marker}`);
  // A function, so "$" in the content is not read as a replacement pattern.
  return html.replace(marker, () => content);
};
let html = source("chat.html");
html = fill(html, "<!--multimodal-lm:style-->", `<style>\n${source("chat.css")}</style>`);
html = fill(html, "<!--multimodal-lm:script-->", `<script type="module">\n${script}</script>`);
mkdirSync(path.join(root, "lib", "web"), { recursive: true });
writeFileSync(path.join(root, "lib", "web", "chat.html"), html);
// Only the assembled page is served; the intermediate script would just be a stray copy.
rmSync(path.join(root, "lib", "web", "chat.js"));
console.log(`build-web: lib/web/chat.html (${(Buffer.byteLength(html) / 1024).toFixed(1)} KiB)`);
