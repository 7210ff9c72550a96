// Native errors (an Error with a stable code) as the library's typed errors, for the in-process
// engine and the engine process alike.
import {
  AbortError,
  ContextOverflowError,
  EngineError,
  MediaMismatchError,
  ModelLoadError,
  MultimodalLMError,
  StateError,
  type MultimodalLMErrorCode,
} from "./errors.js";
import type { NativeModel } from "./native-types.js";
import type { GrammarChecks } from "./structured.js";

/** A native rejection (Error with a code) as the matching MultimodalLMError. */
export function fromNative(error: unknown, signal?: AbortSignal): unknown {
  // Already typed (the supervisor's E_ENGINE_CRASHED carries the signal and the log).
  if (error instanceof MultimodalLMError) return error;
  if (!(error instanceof Error) || typeof (error as { code?: unknown }).code !== "string") return error;
  const code = (error as unknown as { code: string }).code as MultimodalLMErrorCode;
  const message = error.message;
  switch (code) {
    case "E_ABORTED":
      return new AbortError(signal?.aborted ? "The operation was aborted." : message, { cause: signal?.reason });
    case "E_MODEL_LOAD":
      return new ModelLoadError(message);
    case "E_MEDIA_MISMATCH":
      return new MediaMismatchError(message);
    case "E_CONTEXT_OVERFLOW":
      return new ContextOverflowError(message);
    case "E_DISPOSED":
    case "E_NOT_LOADED":
    case "E_BUSY":
      return new StateError(code, message);
    case "E_ENGINE":
      return new EngineError(message);
    default:
      return new MultimodalLMError(code, message);
  }
}

/** llama.cpp's schema converter and grammar parser, with their errors as MultimodalLMErrors. */
export function grammarChecks(native: NativeModel): GrammarChecks {
  const mapped = <T>(run: () => T): T => {
    try {
      return run();
    } catch (error) {
      throw fromNative(error);
    }
  };
  return {
    schemaToGrammar: (json) => mapped(() => native.schemaToGrammar(json)),
    checkGrammar: (grammar) => mapped(() => native.checkGrammar(grammar)),
  };
}
