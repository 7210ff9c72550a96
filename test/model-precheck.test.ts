// The native pre-check (native/gguf-check.cpp) on files that are valid GGUF but inconsistent.
// Each broken variant below, derived from a tiny recipe, made the pinned llama.cpp kill the whole
// process before the check (the signal seen without it is noted beside it), and must now be
// refused with E_MODEL_LOAD and a message that names the file and the key or tensor at fault.
// Every unmodified tiny recipe, and variants that real converters write, must still load.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM } from "../src/index.js";
import { GGMLType, GGUFValueType, type GGUFWriter } from "../src/gguf/index.js";
import { buildRecipe, ensureTestModel } from "../src/test-models/index.js";
import type { RecipeBuild } from "../src/test-models/recipe.js";
import { LOAD_CRASH_TEMPLATE } from "./helpers/isolation.js";
import { rejection } from "./helpers/rejection.js";

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-precheck-"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function replaceTensor(w: GGUFWriter, name: string, ne: number[]): void {
  w.removeTensor(name).addTensor({ name, ne, type: GGMLType.F32, data: new Float32Array(ne.reduce((a, b) => a * b, 1)) });
}
function replaceUint32(w: GGUFWriter, key: string, value: number): void {
  w.deleteKey(key).setUint32(key, value);
}
function replaceTemplate(w: GGUFWriter, template: string): void {
  w.deleteKey("tokenizer.chat_template").setString("tokenizer.chat_template", template);
}
function setRopeSections(w: GGUFWriter, sections: number[]): void {
  w.deleteKey("qwen2vl.rope.dimension_sections").setArray("qwen2vl.rope.dimension_sections", GGUFValueType.INT32, sections);
}

/** Writes a recipe, changed by `change`, into its own folder under the temp dir. */
async function variant(recipe: string, change: (b: RecipeBuild) => void): Promise<{ model: string; mmproj: string }> {
  const { build } = buildRecipe(recipe);
  change(build);
  const dir = fs.mkdtempSync(path.join(tmp, `${recipe}-`));
  const model = path.join(dir, "model.gguf");
  const mmproj = path.join(dir, "mmproj.gguf");
  await build.text.write(model);
  await build.mmproj.write(mmproj);
  return { model, mmproj };
}

const RECURSIVE_MACRO = "{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}";
const HUGE_RANGE = "{% for i in range(1000000000) %}x{% endfor %}";

interface Broken {
  name: string;
  recipe: string;
  change: (b: RecipeBuild) => void;
  chatTemplate?: string;
  /** Which file the message names. */
  names: "model" | "mmproj" | "none";
  message: RegExp;
}

// qwen2vl-tiny: vision width 128, FFN 256, 2 blocks of 2 heads, 14 px patches, merger mm.0
// 512 x 512 and mm.2 512 x 256; text head dimension 64, M-RoPE sections [8, 12, 12, 0].
const BROKEN: Broken[] = [
  {
    name: "mm.0 with an input width that is not a multiple of the vision width", // SIGABRT at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceTensor(b.mmproj, "mm.0.weight", [500, 512]),
    names: "mmproj",
    message: /mm\.0\.weight is 500 x 512, but its input width 500 is not a multiple of clip\.vision\.embedding_length 128/,
  },
  {
    name: "mm.2 that does not take mm.0's output", // SIGABRT at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceTensor(b.mmproj, "mm.2.weight", [300, 256]),
    names: "mmproj",
    message: /mm\.2\.weight is 300 x 256, but mm\.0\.weight is 512 x 512 \(expected 512 x \.\.\./,
  },
  {
    name: "attn_q with the wrong input width", // SIGABRT at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceTensor(b.mmproj, "v.blk.0.attn_q.weight", [100, 128]),
    names: "mmproj",
    message: /v\.blk\.0\.attn_q\.weight is 100 x 128, but clip\.vision\.embedding_length is 128 \(expected 128 x \.\.\.\)/,
  },
  {
    name: "ffn_up with the wrong input width", // SIGABRT at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceTensor(b.mmproj, "v.blk.0.ffn_up.weight", [100, 256]),
    names: "mmproj",
    message: /v\.blk\.0\.ffn_up\.weight is 100 x 256, but clip\.vision\.embedding_length is 128/,
  },
  {
    name: "ffn_up whose output is not ffn_down's input", // SIGABRT at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceTensor(b.mmproj, "v.blk.0.ffn_up.weight", [128, 200]),
    names: "mmproj",
    message: /v\.blk\.0\.ffn_up\.weight is 128 x 200, but v\.blk\.0\.ffn_down\.weight is 256 x 128/,
  },
  {
    name: "a vision head count of 0", // SIGABRT at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceUint32(b.mmproj, "clip.vision.attention.head_count", 0),
    names: "mmproj",
    message: /clip\.vision\.attention\.head_count is 0 \(expected at least 1\)/,
  },
  {
    name: "a vision head count that does not divide the width", // SIGABRT at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceUint32(b.mmproj, "clip.vision.attention.head_count", 5),
    names: "mmproj",
    message: /clip\.vision\.attention\.head_count is 5, which does not divide clip\.vision\.embedding_length 128/,
  },
  {
    name: "a patch size that is not the patch embedding's kernel", // SIGABRT at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceUint32(b.mmproj, "clip.vision.patch_size", 13),
    names: "mmproj",
    message: /clip\.vision\.patch_size is 13, but v\.patch_embd\.weight is a 14 x 14 kernel \(expected patch_size 14\)/,
  },
  {
    name: "M-RoPE sections larger than the head", // SIGABRT at load (ggml_mrope_cache_init)
    recipe: "qwen2vl-tiny",
    change: (b) => setRopeSections(b.text, [64, 64, 64, 64]),
    names: "model",
    message: /qwen2vl\.rope\.dimension_sections is \[64, 64, 64, 64\], which sums to 256, more than the head dimension 64/,
  },
  {
    name: "a vision block without attn_q", // SIGSEGV at load
    recipe: "qwen2vl-tiny",
    change: (b) => b.mmproj.removeTensor("v.blk.1.attn_q.weight"),
    names: "mmproj",
    message: /v\.blk\.1\.attn_q\.weight is missing \(block 0 has it; clip\.vision\.block_count is 2\)/,
  },
  {
    name: "a Qwen2-VL projector without the second temporal patch embedding", // SIGSEGV at load
    recipe: "qwen2vl-tiny",
    change: (b) => b.mmproj.removeTensor("v.patch_embd.weight.1"),
    names: "mmproj",
    message: /v\.patch_embd\.weight\.1 is missing \(the qwen2vl_merger projector always uses both temporal slices/,
  },
  {
    name: "a vision block count of 0", // SIGABRT at the first image
    recipe: "qwen2vl-tiny",
    change: (b) => replaceUint32(b.mmproj, "clip.vision.block_count", 0),
    names: "mmproj",
    message: /clip\.vision\.block_count is 0, but the file has vision blocks \(v\.blk\.0\.attn_q\.weight\)/,
  },
  {
    name: "a Gemma 3 pooling that does not divide the patch grid", // SIGABRT at the first image
    recipe: "gemma3-tiny",
    change: (b) => b.mmproj.setUint32("clip.vision.projector.scale_factor", 3),
    names: "mmproj",
    message: /clip\.vision\.projector\.scale_factor is 3, which does not divide the 16 patches per side \(clip\.vision\.image_size 224 \/ clip\.vision\.patch_size 14\)/,
  },
  {
    name: "an audio head count that does not divide the width", // SIGABRT at load
    recipe: "ultravox-tiny",
    change: (b) => replaceUint32(b.mmproj, "clip.audio.attention.head_count", 3),
    names: "mmproj",
    message: /clip\.audio\.attention\.head_count is 3, which does not divide clip\.audio\.embedding_length 160/,
  },
  {
    name: "an audio block count of 0", // SIGSEGV at load
    recipe: "ultravox-tiny",
    change: (b) => replaceUint32(b.mmproj, "clip.audio.block_count", 0),
    names: "mmproj",
    message: /clip\.audio\.block_count is 0, but the file has audio blocks \(a\.blk\.0\.attn_q\.weight\)/,
  },
  {
    name: "an audio block without attn_q", // SIGSEGV at load
    recipe: "ultravox-tiny",
    change: (b) => b.mmproj.removeTensor("a.blk.1.attn_q.weight"),
    names: "mmproj",
    message: /a\.blk\.1\.attn_q\.weight is missing \(block 0 has it; clip\.audio\.block_count is 2\)/,
  },
  {
    name: "a macro in the model's chat template that always calls itself", // SIGSEGV at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceTemplate(b.text, RECURSIVE_MACRO),
    names: "model",
    message: /chat template \(tokenizer\.chat_template of .*\) would crash or hang llama\.cpp: macro r calls itself outside any/,
  },
  {
    name: "a macro in the chatTemplate option that always calls itself", // SIGSEGV at load
    recipe: "qwen2vl-tiny",
    change: () => {},
    chatTemplate: RECURSIVE_MACRO,
    names: "none",
    message: /chat template \(the chatTemplate option\) would crash or hang llama\.cpp: macro r calls itself outside any/,
  },
  {
    name: "a chat template that loops a billion times", // still running after 60 s at load
    recipe: "qwen2vl-tiny",
    change: (b) => replaceTemplate(b.text, HUGE_RANGE),
    names: "model",
    message: /range\(1000000000\) makes 1000000000 items/,
  },
  {
    name: "a chatTemplate option that loops a billion times", // still running after 60 s at load
    recipe: "qwen2vl-tiny",
    change: () => {},
    chatTemplate: "{% for i in range(0, 1000000000) %}x{% endfor %}",
    names: "none",
    message: /chat template \(the chatTemplate option\).*range\(0, 1000000000\) makes 1000000000 items/,
  },
];

describe("the model pre-check refuses files that would crash llama.cpp", () => {
  for (const c of BROKEN) {
    it(c.name, async () => {
      const files = await variant(c.recipe, c.change);
      const started = performance.now();
      const error = await rejection(MultimodalLM.load({ ...files, ...(c.chatTemplate ? { chatTemplate: c.chatTemplate } : {}) }));
      expect(error.code).toBe("E_MODEL_LOAD");
      expect(error.message).toMatch(c.message);
      if (c.names !== "none") expect(error.message).toContain(files[c.names]);
      // Refused before llama.cpp renders the template or loads a weight.
      expect(performance.now() - started).toBeLessThan(10_000);
    });
  }
});

// Bounded recursion: under {% if %}, and through an inline if.
const BOUNDED_MACROS =
  "{% macro stars(n) %}{% if n > 0 %}*{{ stars(n - 1) }}{% endif %}{% endmacro %}" +
  "{% macro dots(n) %}{{ '.' ~ dots(n - 1) if n > 0 else '' }}{% endmacro %}" +
  "{% for m in messages %}{{ stars(m.content | length) }}{{ dots(2) }}{{ m.content }}{% endfor %}";

describe("the model pre-check still loads", () => {
  for (const name of ["qwen2vl-tiny", "smolvlm-tiny", "gemma3-tiny", "ultravox-tiny", "qwen2audio-tiny", "qwen25omni-tiny"]) {
    it(`the unmodified ${name}`, async () => {
      const files = await ensureTestModel(name);
      const lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });
      try {
        expect(lm.isLoaded).toBe(true);
      } finally {
        await lm.dispose();
      }
    });
  }

  it("what real converters write: swapped ffn_up/ffn_down, and a feed_forward_length that is not the FFN's", async () => {
    const files = await variant("qwen2vl-tiny", (b) => {
      // Older converters wrote up and down the other way round (clip.cpp swaps them back), and
      // Qwen2-VL's converter writes the merger's width (1536 for the 2B) as feed_forward_length.
      for (const block of [0, 1]) {
        const p = `v.blk.${block}`;
        replaceTensor(b.mmproj, `${p}.ffn_up.weight`, [256, 128]);
        replaceTensor(b.mmproj, `${p}.ffn_up.bias`, [128]);
        replaceTensor(b.mmproj, `${p}.ffn_down.weight`, [128, 256]);
        replaceTensor(b.mmproj, `${p}.ffn_down.bias`, [256]);
      }
      replaceUint32(b.mmproj, "clip.vision.feed_forward_length", 1536);
    });
    const lm = await MultimodalLM.load(files);
    try {
      expect(lm.isLoaded).toBe(true);
    } finally {
      await lm.dispose();
    }
  });

  it("M-RoPE sections that sum up to the head dimension (the limit ggml's rope asserts)", async () => {
    const lm = await MultimodalLM.load(await variant("qwen2vl-tiny", (b) => setRopeSections(b.text, [16, 16, 16, 16])));
    try {
      expect(lm.isLoaded).toBe(true);
    } finally {
      await lm.dispose();
    }
  });

  it("chat templates with bounded recursive macros, in the model and as the chatTemplate option", async () => {
    const messages = [{ role: "user" as const, content: "abc" }];
    const inModel = await MultimodalLM.load(await variant("qwen2vl-tiny", (b) => replaceTemplate(b.text, BOUNDED_MACROS)));
    try {
      expect(inModel.formatChat(messages)).toBe("***..abc");
    } finally {
      await inModel.dispose();
    }
    const qwen = await ensureTestModel("qwen2vl-tiny");
    const asOption = await MultimodalLM.load({ model: qwen.model, mmproj: qwen.mmproj, chatTemplate: BOUNDED_MACROS });
    try {
      expect(asOption.formatChat(messages)).toBe("***..abc");
    } finally {
      await asOption.dispose();
    }
  });
});

// The probe's files, given to `multimodal-lm serve` (which isolates the engine): each one is a
// typed error at load, one line and exit status 1, never a signal; and a template that crashes
// llama.cpp while loading is contained by the engine process the same way.
describe("multimodal-lm serve on each of them", () => {
  const cli = path.join(import.meta.dirname, "..", "lib", "cli", "index.js");
  const serve = (args: string[]) => spawnSync(process.execPath, [cli, "serve", ...args, "--port", "0"], { encoding: "utf8", timeout: 60_000 });

  it("exits 1 with one line naming E_MODEL_LOAD, for every file and template the pre-check refuses", async () => {
    for (const c of BROKEN) {
      const files = await variant(c.recipe, c.change);
      const extra: string[] = [];
      if (c.chatTemplate) {
        const file = path.join(path.dirname(files.model), "template.jinja");
        fs.writeFileSync(file, c.chatTemplate);
        extra.push("--chat-template-file", file);
      }
      const r = serve([files.model, "--mmproj", files.mmproj, ...extra]);
      expect(r.signal, c.name).toBeNull();
      expect(r.status, `${c.name}: ${r.stderr}`).toBe(1);
      expect(r.stderr.trim().split("\n"), c.name).toHaveLength(1);
      expect(r.stderr, c.name).toMatch(c.message);
    }
  }, 300_000);

  it("a template that crashes llama.cpp while loading: the engine process dies, serve says so and exits 1", async () => {
    const qwen = await ensureTestModel("qwen2vl-tiny");
    const file = path.join(tmp, "load-crash.jinja");
    fs.writeFileSync(file, LOAD_CRASH_TEMPLATE);
    const r = serve([qwen.model, "--chat-template-file", file]);
    expect(r.signal).toBeNull();
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^multimodal-lm: The engine process killed by SIGSEGV while loading .*qwen2vl-tiny\.gguf/m);
  }, 60_000);
});
