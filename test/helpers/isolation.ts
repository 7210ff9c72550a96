// The two places the engine can run: the MultimodalLM suites run once for each (vitest's
// describe.each), so isolation: "process" is held to everything in-process is.
import { MultimodalLM, type LoadOptions } from "../../src/index.js";

export const ISOLATIONS = ["none", "process"] as const;
export type Isolation = (typeof ISOLATIONS)[number];

/** MultimodalLM.load with a suite's isolation (an explicit isolation in the options wins). */
export function loader(isolation: Isolation): (options: LoadOptions) => Promise<MultimodalLM> {
  return (options) => MultimodalLM.load({ isolation, ...options });
}

// Real crashes of the pinned llama.cpp, for the isolation tests: its Jinja engine has no recursion
// limit, so a legal, bounded recursion overflows the native stack (SIGSEGV) on a long enough message.

/** Recurses once per character of each message, then renders it as Qwen's template does. */
export const DEEP_TEMPLATE =
  "{% macro r(n) %}{% if n > 0 %}{{ r(n - 1) }}{% endif %}{% endmacro %}" +
  "{% for m in messages %}{{ r(m['content'] | length) }}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
/**
 * Recurses without end whenever bos_token is set: every real request, never llama.cpp's probe at
 * load (it renders with an empty one). The recursion sits behind an `if`, as a bounded one would,
 * so no check on the template text can tell.
 */
export const ALWAYS_TEMPLATE =
  "{% macro r(n) %}{% if n > 0 %}{{ r(n + 1) }}{% endif %}{% endmacro %}{% if bos_token %}{{ r(1) }}{% endif %}" +
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";
/** A message long enough to overflow the stack through DEEP_TEMPLATE. */
export const POISON = "x".repeat(300_000);

/** Recurses without end whenever there are messages, so llama.cpp's own probe crashes at load. */
export const LOAD_CRASH_TEMPLATE = "{% macro r(n) %}{% if n >= 0 %}{{ r(n + 1) }}{% endif %}{% endmacro %}{% if messages %}{{ r(0) }}{% endif %}";
