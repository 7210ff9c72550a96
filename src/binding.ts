import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { BindingLoadError, type BindingLoadAttempt, type BindingSource } from "./errors.js";
import type { NativeBinding } from "./native-types.js";

const require = createRequire(import.meta.url);

/** The package root: this file lives in src/ (tests) or lib/ (published). */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const ADDON_FILE = "multimodal_lm.node";
const REQUIRED_EXPORTS = ["systemInfo", "mediaMarker", "checkDevices", "NativeModel"] as const;

export interface BindingCandidate {
  path: string;
  source: BindingSource;
}

function modifiedAt(file: string): number | undefined {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return undefined;
  }
}

/**
 * Where the addon may live, in load order: prebuilds/<platform>-<arch>/ (prebuildify's layout),
 * then the local cmake-js build. A local build that is newer than every prebuild goes first: it
 * was made on purpose (a from-source install with MULTIMODAL_LM_GPU, or a developer rebuild).
 * MULTIMODAL_LM_BINARY, when set, is the only candidate: a file asked for by name that is missing
 * or broken must fail, not give way silently to another build.
 */
export function bindingCandidates(root: string = packageRoot, env: NodeJS.ProcessEnv = process.env): BindingCandidate[] {
  if (env.MULTIMODAL_LM_BINARY) return [{ path: path.resolve(env.MULTIMODAL_LM_BINARY), source: "MULTIMODAL_LM_BINARY" }];

  const prebuildDir = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
  const prebuiltNames = fs.existsSync(prebuildDir)
    ? fs
        .readdirSync(prebuildDir)
        .filter((name) => name.endsWith(".node"))
        .sort()
    : [];
  // Listed even when absent, so a load error shows where prebuilds would be.
  if (prebuiltNames.length === 0) prebuiltNames.push("multimodal_lm.glibc.node");
  const prebuilt: BindingCandidate[] = prebuiltNames.map((name) => ({ path: path.join(prebuildDir, name), source: "prebuild" }));

  const local: BindingCandidate[] = ["Release", "Debug"].map((config) => ({
    path: path.join(root, "build", config, ADDON_FILE),
    source: "local build",
  }));

  const newestPrebuild = Math.max(-Infinity, ...prebuilt.map((c) => modifiedAt(c.path) ?? -Infinity));
  const localTime = modifiedAt(local[0]!.path);
  const localFirst = localTime !== undefined && localTime > newestPrebuild;
  return localFirst ? [...local, ...prebuilt] : [...prebuilt, ...local];
}

function describeLoadFailure(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  // dlopen messages repeat the path; keep the reason.
  return message.split("\n")[0]!.replace(/^.*?\.node: /, "");
}

/**
 * Loads the first candidate that is a working multimodal-lm addon. Throws one
 * BindingLoadError listing every path tried and why each failed.
 */
export function loadBinding(candidates: ReadonlyArray<BindingCandidate | string> = bindingCandidates()): NativeBinding {
  const attempts: BindingLoadAttempt[] = [];
  for (const candidate of candidates) {
    const { path: file, source } = typeof candidate === "string" ? { path: candidate, source: "explicit" as const } : candidate;
    if (!fs.existsSync(file)) {
      attempts.push({ path: file, source, reason: "not found" });
      continue;
    }
    let loaded: Partial<NativeBinding>;
    try {
      loaded = require(file) as Partial<NativeBinding>;
    } catch (error) {
      attempts.push({ path: file, source, reason: describeLoadFailure(error) });
      continue;
    }
    const missing = REQUIRED_EXPORTS.filter((name) => typeof loaded[name] !== "function");
    if (missing.length > 0) {
      attempts.push({ path: file, source, reason: `not a multimodal-lm addon (missing ${missing.join(", ")})` });
      continue;
    }
    return loaded as NativeBinding;
  }
  throw new BindingLoadError(attempts);
}

let cached: NativeBinding | undefined;

/** The process-wide addon, loaded on first use. */
export function getBinding(): NativeBinding {
  cached ??= loadBinding();
  return cached;
}
