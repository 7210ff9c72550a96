// Small predicates and one message template, after sharp's lib/is.js:
// "Expected positive integer for width but received -3 of type number".
import { MultimodalLMError } from "./errors.js";

export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "string") return `${JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value)} of type string`;
  if (typeof value === "object") return `${Array.isArray(value) ? "an array" : "an object"}`;
  return `${String(value)} of type ${typeof value}`;
}

/** The one error every option check throws. */
export function invalidParameter(name: string, expected: string, value: unknown): MultimodalLMError {
  return new MultimodalLMError("E_INVALID_ARGUMENT", `Expected ${expected} for ${name} but received ${describeValue(value)}`, { param: name });
}

export const is = {
  defined: (v: unknown): boolean => v !== undefined && v !== null,
  object: (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v),
  string: (v: unknown): v is string => typeof v === "string",
  bool: (v: unknown): v is boolean => typeof v === "boolean",
  number: (v: unknown): v is number => typeof v === "number" && Number.isFinite(v),
  integer: (v: unknown): v is number => Number.isInteger(v),
  inRange: (v: number, min: number, max: number): boolean => v >= min && v <= max,
  fn: (v: unknown): v is (...args: never[]) => unknown => typeof v === "function",
};

/** Validators that return the value (or the default) and throw `invalidParameter` otherwise. */
export function optionalInteger(name: string, value: unknown, min: number, max: number, fallback: number): number;
export function optionalInteger(name: string, value: unknown, min: number, max: number): number | undefined;
export function optionalInteger(name: string, value: unknown, min: number, max: number, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  if (!is.integer(value) || !is.inRange(value, min, max)) {
    throw invalidParameter(name, `an integer between ${min} and ${max}`, value);
  }
  return value;
}

export function optionalNumber(name: string, value: unknown, min: number, max: number, fallback: number): number;
export function optionalNumber(name: string, value: unknown, min: number, max: number): number | undefined;
export function optionalNumber(name: string, value: unknown, min: number, max: number, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  if (!is.number(value) || !is.inRange(value, min, max)) {
    throw invalidParameter(name, `a number between ${min} and ${max}`, value);
  }
  return value;
}

export function optionalBoolean(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (!is.bool(value)) throw invalidParameter(name, "a boolean", value);
  return value;
}

export function optionalSignal(name: string, value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw invalidParameter(name, "an AbortSignal", value);
  return value;
}

/** Throws when `options` has a key not in `known`, naming the key and listing the known ones. */
export function rejectUnknownKeys(what: string, options: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new MultimodalLMError("E_INVALID_ARGUMENT", `Unknown option ${key} for ${what}. Known options: ${known.join(", ")}`);
    }
  }
}
