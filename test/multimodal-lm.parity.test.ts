// Greedy output of MultimodalLM must equal llama-mtmd-cli's (built from the same tree), token for token.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { MultimodalLM } from "../src/index.js";
import { encodePng, ensureTestModel, runReference, runReferenceChat, testPattern, type TestModelFiles } from "../src/test-models/index.js";
import { ISOLATIONS, loader } from "./helpers/isolation.js";

const PROMPT = "Describe this image.";
const N = 16;
const greedy = { temperature: 0, maxTokens: N, seed: 42 } as const;

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-parity-"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function writeImage(name: string, width: number, height: number, seed: number): { file: string; rgb: Uint8Array; png: Buffer } {
  const rgb = testPattern(width, height, seed);
  const png = encodePng(width, height, rgb);
  const file = path.join(tmp, name);
  fs.writeFileSync(file, png);
  return { file, rgb, png };
}

describe.each(ISOLATIONS)("isolation: %s", (isolation) => {
  const load = loader(isolation);

  describe.each(["qwen2vl-tiny", "smolvlm-tiny", "gemma3-tiny"] as const)("parity with llama-mtmd-cli: %s", (recipe) => {
    let files: TestModelFiles;
    let lm: MultimodalLM;
    beforeAll(async () => {
      files = await ensureTestModel(recipe);
      lm = await load({ model: files.model, mmproj: files.mmproj });
    });
    afterAll(() => lm?.dispose());

    const reference = (images: string[], prompt = PROMPT) => runReference({ model: files.model, mmproj: files.mmproj, images, prompt, nPredict: N }).text;

    it("text only", async () => {
      const ref = await runReferenceChat({ model: files.model, mmproj: files.mmproj, prompt: "Hello there", nPredict: N });
      const r = await lm.generate({ prompt: "Hello there", ...greedy });
      expect(r.text).toBe(ref.text);
      expect(r.usage.completionTokens).toBe(N);
      expect(r.text.length).toBeGreaterThan(N / 2);
    });

    it("one image", async () => {
      const { file } = writeImage(`${recipe}-one.png`, 84, 84, 1);
      const r = await lm.generate({ prompt: PROMPT, images: [file], ...greedy });
      expect(r.text).toBe(reference([file]));
      expect(r.usage.completionTokens).toBe(N);
      expect(r.stopReason).toBe("length");
    });

    it("the same image as path, file URL, data: URL, Buffer and raw RGB gives the same tokens", async () => {
      const { file, rgb, png } = writeImage(`${recipe}-sources.png`, 96, 72, 3);
      const expected = reference([file]);
      const sources = [
        file,
        pathToFileURL(file),
        `data:image/png;base64,${png.toString("base64")}`,
        png,
        new Uint8Array(png),
        { data: rgb, width: 96, height: 72 },
      ];
      for (const source of sources) {
        const r = await lm.generate({ prompt: PROMPT, images: [source], ...greedy });
        expect(r.text, `source ${typeof source === "string" ? source.slice(0, 30) : source.constructor.name}`).toBe(expected);
      }
    });

    it("describeImage and chat with content parts render the same prompt as the CLI", async () => {
      const { file, png } = writeImage(`${recipe}-chat.png`, 84, 84, 4);
      const expected = reference([file]);
      expect(await lm.describeImage(file, greedy)).toBe(expected);
      const chat = await lm.chat({
        messages: [
          {
            role: "user",
            content: [
              { type: "image_url", image_url: { url: `data:image/png;base64,${png.toString("base64")}` } },
              { type: "text", text: PROMPT },
            ],
          },
        ],
        ...greedy,
      });
      expect(chat.text).toBe(expected);
      const marked = await lm.generate({ prompt: `${lm.marker}${PROMPT}`, images: [{ data: testPattern(84, 84, 4), width: 84, height: 84 }], ...greedy });
      expect(marked.text).toBe(expected);
    });
  });

  describe("parity with llama-mtmd-cli: qwen2vl-tiny, two images in one message", () => {
    it("matches the CLI given both images", async () => {
      const files = await ensureTestModel("qwen2vl-tiny");
      const a = writeImage("two-a.png", 84, 84, 5).file;
      const b = writeImage("two-b.png", 112, 56, 6).file;
      await using lm = await load({ model: files.model, mmproj: files.mmproj });
      const ref = runReference({ model: files.model, mmproj: files.mmproj, images: [a, b], prompt: "Compare these images.", nPredict: N }).text;
      const r = await lm.generate({ prompt: "Compare these images.", images: [a, b], ...greedy });
      expect(r.text).toBe(ref);
      // Another order is another prompt: the images are really both used.
      const swapped = await lm.generate({ prompt: "Compare these images.", images: [b, a], ...greedy });
      expect(swapped.text).not.toBe(ref);
      // M-RoPE: an image takes fewer positions than tokens.
      expect(r.usage.promptTokens).toBeGreaterThan((await lm.countTokens("Compare these images.", [a, b])).positions);
    });
  });

  describe("parity with llama-mtmd-cli: gemma3-tiny, two images in one message", () => {
    it("matches the CLI given both images, each decoded with non-causal attention", async () => {
      const files = await ensureTestModel("gemma3-tiny");
      const a = writeImage("gemma-two-a.png", 84, 84, 5).file;
      const b = writeImage("gemma-two-b.png", 112, 56, 6).file;
      await using lm = await load({ model: files.model, mmproj: files.mmproj });
      const ref = runReference({ model: files.model, mmproj: files.mmproj, images: [a, b], prompt: "Compare these images.", nPredict: N }).text;
      const r = await lm.generate({ prompt: "Compare these images.", images: [a, b], ...greedy });
      expect(r.text).toBe(ref);
      const swapped = await lm.generate({ prompt: "Compare these images.", images: [b, a], ...greedy });
      expect(swapped.text).not.toBe(ref);
      // Every image is resized to 224 px: 16 tokens, one position each, between <start_of_image> and <end_of_image>.
      const count = await lm.countTokens("Compare these images.", [a, b]);
      expect(count).toMatchObject({ mediaChunks: 2, mediaTokens: 32 });
      expect(count.positions).toBe(count.tokens);
    });
  });
});
