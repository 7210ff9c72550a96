import js from "@eslint/js";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["lib/", "build/", "build-*/", "vendor/", "node_modules/", "prebuilds/", "test-output/", ".cache/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  { languageOptions: { globals: globals.node } },
  // The chat page's script runs in the browser.
  { files: ["src/web/**"], languageOptions: { globals: globals.browser } },
  {
    rules: {
      // `for await (const _ of stream)` and `await using _lm = ...` name values on purpose.
      "@typescript-eslint/no-unused-vars": ["error", { varsIgnorePattern: "^_", argsIgnorePattern: "^_" }],
    },
  },
);
