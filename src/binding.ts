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
const REQUIRED_EXPORTS = ["systemInfo", "mediaMarker", "checkDevices"] as const;

export interface BindingCandidate {
  path: string;
  source: BindingSource;
}

/**
 * Where the addon may live, in load order: an explicit MULTIMODAL_LM_BINARY,
 * then prebuilds/<platform>-<arch>/ (prebuildify layout), then the local cmake-js build.
 */
export function bindingCandidates(root: string = packageRoot, env: NodeJS.ProcessEnv = process.env): BindingCandidate[] {
  const candidates: BindingCandidate[] = [];
  if (env.MULTIMODAL_LM_BINARY) {
    candidates.push({ path: path.resolve(env.MULTIMODAL_LM_BINARY), source: "MULTIMODAL_LM_BINARY" });
  }
  const prebuildDir = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
  const prebuilt = fs.existsSync(prebuildDir)
    ? fs
        .readdirSync(prebuildDir)
        .filter((name) => name.endsWith(".node"))
        .sort()
    : [];
  // Listed even when absent, so a load error shows where prebuilds would be.
  if (prebuilt.length === 0) prebuilt.push("multimodal_lm.glibc.node");
  for (const name of prebuilt) candidates.push({ path: path.join(prebuildDir, name), source: "prebuild" });
  for (const config of ["Release", "Debug"]) {
    candidates.push({ path: path.join(root, "build", config, ADDON_FILE), source: "local build" });
  }
  return candidates;
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
