/** Stable machine-readable error codes. Never renamed once published. */
export type MultimodalLMErrorCode =
  /** The native addon could not be loaded. */
  | "E_BINDING_LOAD"
  /** An argument or option failed validation; the message names it and what was expected. */
  | "E_INVALID_ARGUMENT";

/** Base class of every error multimodal-lm throws on purpose. */
export class MultimodalLMError extends Error {
  readonly code: MultimodalLMErrorCode;

  constructor(code: MultimodalLMErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** One place the loader looked for the native addon, and why it was not used. */
export interface BindingLoadAttempt {
  path: string;
  source: BindingSource;
  reason: string;
}

export type BindingSource = "MULTIMODAL_LM_BINARY" | "prebuild" | "local build" | "explicit";

/** The native addon could not be loaded from any candidate path. */
export class BindingLoadError extends MultimodalLMError {
  readonly attempts: readonly BindingLoadAttempt[];

  constructor(attempts: readonly BindingLoadAttempt[]) {
    const tried = attempts.length
      ? attempts.map((a) => `  - ${a.path} (${a.source}): ${a.reason}`).join("\n")
      : "  (no candidate paths)";
    super(
      "E_BINDING_LOAD",
      `multimodal-lm could not load its native addon. Tried:\n${tried}\n` +
        "To fix it: run `npm rebuild multimodal-lm` (in a git checkout: `npm run build:native`) to compile the addon; " +
        "that needs cmake 3.19+ and a C++17 compiler. To use a specific file, set MULTIMODAL_LM_BINARY=/path/to/multimodal_lm.node.",
    );
    this.attempts = attempts;
  }
}
