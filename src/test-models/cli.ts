#!/usr/bin/env node
/**
 * Writes a test-model recipe (random-weight GGUF text model + mmproj) to a directory.
 * `npm run test-model -- --help` for usage.
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { SingleBar } from "cli-progress";
import { MultimodalLMError } from "../errors.js";
import { writeTestImage } from "./image.js";
import { RECIPES, writeTestModel, type HeadKind, type MatrixTypeName } from "./recipe.js";

const USAGE = `Usage: npm run test-model -- <recipe> [options]

Writes <recipe>.gguf and mmproj-<recipe>.gguf with deterministic random weights.

Options:
  --out <dir>           Directory to write to, relative to where you run it (default: ./test-models)
  --seed <n>            Weight seed, 0..4294967295 (default: 0)
  --text-type <t>       f32 | f16 | q8_0 (default: f32 for tiny recipes, q8_0 for bench)
  --vision-type <t>     f32 | f16 | q8_0 (default: f32 for tiny recipes, f16 for bench)
  --head <h>            printable | random | tied | multibyte (default: printable for tiny, tied for bench)
  --image-size <px>     Projector image size (gemma3-tiny only: a multiple of 56; default 224 = 16 tokens per image)
  --image               Also write test-image.png (84x84) next to the models
  --list                List the recipes
  -h, --help            Show this help

Recipes:
${RECIPES.map((r) => `  ${r.name.padEnd(20)}${r.description}`).join("\n")}
`;

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      seed: { type: "string" },
      "text-type": { type: "string" },
      "vision-type": { type: "string" },
      head: { type: "string" },
      "image-size": { type: "string" },
      image: { type: "boolean" },
      list: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.list) {
    for (const r of RECIPES) process.stdout.write(`${r.name}\t${r.kind}\t${r.description}\n`);
    return 0;
  }
  if (positionals.length !== 1) {
    process.stderr.write(`Expected exactly one recipe name.\n\n${USAGE}`);
    return 2;
  }
  const seed = values.seed === undefined ? undefined : Number(values.seed);
  if (values.seed !== undefined && (values.seed.trim() === "" || !Number.isInteger(seed))) {
    throw new MultimodalLMError("E_INVALID_ARGUMENT", `Expected an integer for --seed but received "${values.seed}"`);
  }
  const imageSize = values["image-size"] === undefined ? undefined : Number(values["image-size"]);
  if (values["image-size"] !== undefined && (values["image-size"].trim() === "" || !Number.isInteger(imageSize))) {
    throw new MultimodalLMError("E_INVALID_ARGUMENT", `Expected an integer for --image-size but received "${values["image-size"]}"`);
  }
  // `npm run` starts scripts in the package root; resolve --out where the user typed it.
  const out = resolve(process.env.INIT_CWD ?? process.cwd(), values.out ?? "test-models");
  const bar = new SingleBar({
    format: "writing {file} [{bar}] {percentage}% | {done} of {total}",
    hideCursor: true,
    stream: process.stderr,
  });
  let started = false;
  const t0 = performance.now();
  const files = await writeTestModel(positionals[0]!, out, {
    seed,
    textType: values["text-type"] as MatrixTypeName | undefined,
    visionType: values["vision-type"] as MatrixTypeName | undefined,
    head: values.head as HeadKind | undefined,
    imageSize,
    onProgress: (p) => {
      const payload = { file: p.file.slice(out.length + 1), done: mib(p.bytesWritten), total: mib(p.totalBytes) };
      if (!started) {
        bar.start(p.totalBytes, 0, payload);
        started = true;
      }
      bar.update(p.bytesWritten, payload);
    },
  });
  if (started) bar.stop();
  const seconds = ((performance.now() - t0) / 1000).toFixed(1);
  process.stdout.write(`model:  ${files.model}\nmmproj: ${files.mmproj}\n`);
  if (values.image) process.stdout.write(`image:  ${await writeTestImage(join(out, "test-image.png"), { width: 84, height: 84 })}\n`);
  process.stdout.write(`${mib(files.bytes)} in ${seconds} s (${JSON.stringify(files.options)})\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`test-model: ${message}\n`);
    const usageError = err instanceof Error && "code" in err && String(err.code).startsWith("ERR_PARSE_ARGS");
    if (usageError) process.stderr.write(`\n${USAGE}`);
    // Bad arguments exit 2; anything else (a disk error, say) exits 1.
    process.exitCode = err instanceof MultimodalLMError || usageError ? 2 : 1;
  },
);
