import { expect } from "vitest";

import { MultimodalLMError } from "../../src/index.js";

/** The MultimodalLMError a promise rejects with; fails the test if it resolves or rejects with anything else. */
export async function rejection(promise: Promise<unknown>): Promise<MultimodalLMError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected a rejection").toBeInstanceOf(MultimodalLMError);
  return error as MultimodalLMError;
}
