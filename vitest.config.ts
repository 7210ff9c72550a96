import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 600_000,
    // Native code runs in forked processes so a crash fails one file, not the runner.
    pool: "forks",
  },
});
