import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { gguf, GGUFValueType as HFValueType } from "@huggingface/gguf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ModelLoadError, MultimodalLMError } from "../src/errors.js";
import { MultimodalLM } from "../src/multimodal-lm.js";
import {
  GGMLType,
  GGUFEncoder,
  GGUFValueType,
  GGUFWriter,
  f16BitsToF32,
  f32ToF16Bits,
  quantizeQ8_0,
  type GGUFValue,
} from "../src/gguf/index.js";
import { ensureTestModel, writeTestImage } from "../src/test-models/index.js";
import { loadWithReference } from "../src/test-models/reference-cli.js";

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mmlm-gguf-"));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function read(file: string) {
  return gguf(file, { allowLocalFile: true, typedMetadata: true });
}

/** One key of every GGUF value type, including arrays. */
const EVERY_TYPE: [string, GGUFValue][] = [
  ["t.u8", { type: GGUFValueType.UINT8, value: 255 }],
  ["t.i8", { type: GGUFValueType.INT8, value: -128 }],
  ["t.u16", { type: GGUFValueType.UINT16, value: 65535 }],
  ["t.i16", { type: GGUFValueType.INT16, value: -32768 }],
  ["t.u32", { type: GGUFValueType.UINT32, value: 4294967295 }],
  ["t.i32", { type: GGUFValueType.INT32, value: -2147483648 }],
  ["t.f32", { type: GGUFValueType.FLOAT32, value: 0.5 }],
  ["t.bool", { type: GGUFValueType.BOOL, value: true }],
  ["t.str", { type: GGUFValueType.STRING, value: "héllo <|im_end|>\n" }],
  ["t.u64", { type: GGUFValueType.UINT64, value: 18446744073709551615n }],
  ["t.i64", { type: GGUFValueType.INT64, value: -9223372036854775808n }],
  ["t.f64", { type: GGUFValueType.FLOAT64, value: 1 / 3 }],
  ["t.arr.i32", { type: GGUFValueType.ARRAY, itemType: GGUFValueType.INT32, value: [16, 24, 24, 0] }],
  ["t.arr.f32", { type: GGUFValueType.ARRAY, itemType: GGUFValueType.FLOAT32, value: [0.5, -0.25] }],
  ["t.arr.str", { type: GGUFValueType.ARRAY, itemType: GGUFValueType.STRING, value: ["Ġ t", "h e", ""] }],
  ["t.arr.bool", { type: GGUFValueType.ARRAY, itemType: GGUFValueType.BOOL, value: [true, false] }],
  ["t.arr.empty", { type: GGUFValueType.ARRAY, itemType: GGUFValueType.UINT32, value: [] }],
];

describe("GGUF writer", () => {
  it("round-trips metadata of every value type through @huggingface/gguf", async () => {
    const w = new GGUFWriter();
    w.setString("general.architecture", "llama");
    for (const [key, value] of EVERY_TYPE) w.set(key, value);
    w.addTensor({ name: "x", ne: [4], type: GGMLType.F32, data: new Float32Array([1, 2, 3, 4]) });
    const file = path.join(tmp, "types.gguf");
    await w.write(file);

    const { metadata, typedMetadata } = await read(file);
    expect(metadata.version).toBe(3);
    expect(metadata.tensor_count).toBe(1n);
    expect(metadata.kv_count).toBe(BigInt(EVERY_TYPE.length + 1));
    for (const [key, v] of EVERY_TYPE) {
      const got = typedMetadata[key]!;
      expect(got.type, key).toBe(v.type as number as HFValueType);
      if (v.type === GGUFValueType.ARRAY) {
        expect(got.subType, key).toBe(v.itemType as number as HFValueType);
        expect(got.value, key).toEqual(v.value);
      } else if (v.type === GGUFValueType.UINT64 || v.type === GGUFValueType.INT64) {
        expect(BigInt(got.value as bigint), key).toBe(v.value);
      } else {
        expect(got.value, key).toBe(v.value);
      }
    }
  });

  it("writes tensor infos with aligned, sequential offsets and the data where they point", async () => {
    const w = new GGUFWriter({ alignment: 64 });
    w.setString("general.architecture", "llama");
    const a = Float32Array.from({ length: 6 }, (_, i) => i - 2.5);
    const b = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    w.addTensor({ name: "a", ne: [3, 2], type: GGMLType.F32, data: a });
    w.addTensor({ name: "b.f16", ne: [32, 2], type: GGMLType.F16, data: b });
    w.addTensor({ name: "c.q8", ne: [32, 2], type: GGMLType.Q8_0, data: b });
    const file = path.join(tmp, "tensors.gguf");
    const { bytes } = await w.write(file);

    const parsed = await read(file);
    expect(parsed.typedMetadata["general.alignment"]).toMatchObject({ type: HFValueType.UINT32, value: 64 });
    expect(parsed.tensorInfos.map((t) => [t.name, t.shape.map(Number), t.dtype, Number(t.offset)])).toEqual([
      ["a", [3, 2], GGMLType.F32, 0],
      ["b.f16", [32, 2], GGMLType.F16, 64], // 24 bytes padded to 64
      ["c.q8", [32, 2], GGMLType.Q8_0, 64 + 128], // 128 bytes of F16
    ]);
    expect(parsed.tensorDataOffset % 64n).toBe(0n);
    // Two Q8_0 blocks (68 bytes) padded to 128.
    expect(bytes).toBe(Number(parsed.tensorDataOffset) + 64 + 128 + 128);
    expect(fs.statSync(file).size).toBe(bytes);

    const buf = fs.readFileSync(file);
    const base = Number(parsed.tensorDataOffset);
    expect(new Float32Array(buf.buffer.slice(buf.byteOffset + base, buf.byteOffset + base + 24))).toEqual(a);
    for (let i = 0; i < 64; i++) {
      expect(f16BitsToF32(buf.readUInt16LE(base + 64 + 2 * i))).toBeCloseTo(b[i]!, 3);
    }
    const q = Buffer.alloc(68);
    quantizeQ8_0(b, q);
    expect(buf.subarray(base + 192, base + 192 + 68)).toEqual(q);
  });

  it("quantizes a Q8_0 block exactly as computed by hand", () => {
    // x_j = (j - 16) / 2: amax = 8, d = 8/127, 1/d = 15.875, q_j = roundf(x_j * 15.875).
    const x = Float32Array.from({ length: 32 }, (_, j) => (j - 16) / 2);
    const out = Buffer.alloc(34);
    quantizeQ8_0(x, out);
    // d = 0.062992... = 2^-4 * 1.00787: exponent 15 - 4 = 11, mantissa round(0.00787 * 1024) = 8.
    expect(out.readUInt16LE(0)).toBe((11 << 10) | 8);
    const q = [...out.subarray(2)].map((v) => (v << 24) >> 24);
    expect(q.slice(0, 4)).toEqual([-127, -119, -111, -103]); // -8*15.875, -7.5*15.875 = -119.06, ...
    expect(q[16]).toBe(0);
    expect(q.slice(17, 20)).toEqual([8, 16, 24]); // 7.94, 15.875, 23.81
    expect(q[31]).toBe(119);

    // amax 127 gives d = 1 (F16 0x3c00); halves round away from zero like C roundf.
    const y = new Float32Array(32);
    y.set([127, 2.5, -2.5, 0.5, -0.5, 1.49, -126.6]);
    quantizeQ8_0(y, out);
    expect(out.readUInt16LE(0)).toBe(0x3c00);
    expect([...out.subarray(2, 9)].map((v) => (v << 24) >> 24)).toEqual([127, 3, -3, 1, -1, 1, -127]);

    // An all-zero block has d = 0 and all-zero quants.
    quantizeQ8_0(new Float32Array(32), out);
    expect([...out]).toEqual(new Array(34).fill(0));
  });

  it("converts to F16 with round-to-nearest-even, subnormals and overflow", () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(70000)).toBe(0x7c00);
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie, even stays
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, odd rounds up
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16Bits(2 ** -26)).toBe(0);
    expect(f32ToF16Bits(NaN) & 0x7e00).toBe(0x7e00);
  });

  it("streams tensors from fill functions in consecutive chunks", async () => {
    const n = 3 * (1 << 20) + 96; // more than one chunk
    const starts: number[] = [];
    const w = new GGUFWriter();
    w.setString("general.architecture", "llama");
    w.addTensor({
      name: "big",
      ne: [96, n / 96],
      type: GGMLType.F32,
      data: (out, start) => {
        starts.push(start);
        for (let i = 0; i < out.length; i++) out[i] = start + i;
      },
    });
    const file = path.join(tmp, "big.gguf");
    const progress: number[] = [];
    await w.write(file, { onProgress: (p) => progress.push(p.bytesWritten) });
    expect(starts).toEqual([0, 1 << 20, 2 << 20, 3 << 20]);
    expect(progress.length).toBe(4);
    const parsed = await read(file);
    const fd = fs.openSync(file, "r");
    const probe = Buffer.alloc(4);
    for (const i of [0, 1 << 20, n - 1]) {
      fs.readSync(fd, probe, 0, 4, Number(parsed.tensorDataOffset) + 4 * i);
      expect(probe.readFloatLE(0)).toBe(i);
    }
    fs.closeSync(fd);
  });

  it("leaves nothing behind when a write is aborted or a fill throws", async () => {
    const dir = fs.mkdtempSync(path.join(tmp, "abort-"));
    const controller = new AbortController();
    const w = new GGUFWriter();
    w.addTensor({ name: "a", ne: [1 << 21], type: GGMLType.F32, data: () => controller.abort() });
    await expect(w.write(path.join(dir, "a.gguf"), { signal: controller.signal })).rejects.toThrow();
    const bad = new GGUFWriter().addTensor({
      name: "b",
      ne: [8],
      type: GGMLType.F32,
      data: () => {
        throw new Error("boom");
      },
    });
    await expect(bad.write(path.join(dir, "b.gguf"))).rejects.toThrow("boom");
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it("removes and replaces keys and tensors of a built writer", async () => {
    const w = new GGUFWriter();
    w.setString("general.architecture", "llama").setUint32("a", 1).setUint32("b", 2);
    for (const name of ["x", "y", "z"]) w.addTensor({ name, ne: [32], type: GGMLType.F32, data: new Float32Array(32).fill(name.charCodeAt(0)) });
    w.deleteKey("a").deleteKey("b").setUint32("b", 3);
    w.removeTensor("y").removeTensor("x");
    w.addTensor({ name: "x", ne: [16, 2], type: GGMLType.F32, data: new Float32Array(32).fill(7) });
    const file = path.join(tmp, "varied.gguf");
    const { bytes } = await w.write(file);

    const parsed = await read(file);
    expect(Object.keys(parsed.typedMetadata).filter((k) => !/^(version|tensor_count|kv_count)$/.test(k))).toEqual(["general.architecture", "b"]);
    expect(parsed.typedMetadata.b?.value).toBe(3);
    // Offsets follow the remaining tensors only: nothing is left of the removed ones.
    expect(parsed.tensorInfos.map((t) => [t.name, t.shape.map(Number), Number(t.offset)])).toEqual([
      ["z", [32], 0],
      ["x", [16, 2], 128],
    ]);
    expect(bytes).toBe(Number(parsed.tensorDataOffset) + 256);
    const buf = fs.readFileSync(file);
    expect(buf.readFloatLE(Number(parsed.tensorDataOffset) + 128)).toBe(7);
  });

  it("rejects invalid metadata and tensors with E_INVALID_ARGUMENT", () => {
    const w = new GGUFWriter();
    w.setUint32("a", 1);
    const cases: [string, () => unknown, RegExp][] = [
      ["delete unset key", () => w.deleteKey("nope"), /"nope" is not set/],
      ["delete alignment", () => w.deleteKey("general.alignment"), /alignment/],
      ["remove missing tensor", () => w.removeTensor("nope"), /"nope" is not there/],
      ["duplicate key", () => w.setUint32("a", 2), /already set/],
      ["negative u32", () => w.setUint32("b", -1), /out of range/],
      ["fractional i32", () => w.setInt32("b", 1.5), /Expected an integer/],
      ["string as bool", () => w.set("b", { type: GGUFValueType.BOOL, value: "yes" as unknown as boolean }), /Expected a boolean/],
      ["nested array", () => w.setArray("b", GGUFValueType.ARRAY as never, []), /nested arrays/],
      ["alignment key", () => w.setUint32("general.alignment", 64), /alignment/],
      ["alignment option", () => new GGUFWriter({ alignment: 48 }), /power of two/],
      ["long name", () => w.addTensor({ name: "x".repeat(64), ne: [1], type: GGMLType.F32, data: new Float32Array(1) }), /1\.\.63 bytes/],
      ["Q8_0 row", () => w.addTensor({ name: "q", ne: [33], type: GGMLType.Q8_0, data: new Float32Array(33) }), /multiple of 32/],
      ["5 dims", () => w.addTensor({ name: "d", ne: [1, 1, 1, 1, 1], type: GGMLType.F32, data: new Float32Array(1) }), /1\.\.4/],
      ["data size", () => w.addTensor({ name: "s", ne: [2, 2], type: GGMLType.F32, data: new Float32Array(3) }), /holds 4 values but data has 3/],
    ];
    for (const [what, fn, message] of cases) {
      let error: unknown;
      try {
        fn();
      } catch (e) {
        error = e;
      }
      expect(error, what).toBeInstanceOf(MultimodalLMError);
      expect((error as MultimodalLMError).code, what).toBe("E_INVALID_ARGUMENT");
      expect((error as Error).message, what).toMatch(message);
    }
  });
});

describe("malformed GGUF files from the low-level encoder", () => {
  let mmproj: string;
  let image: string;
  beforeAll(async () => {
    ({ mmproj } = await ensureTestModel("qwen2vl-tiny"));
    image = await writeTestImage(path.join(tmp, "image.png"), { width: 84, height: 84 });
  });

  function lyingFile(name: string, build: (e: GGUFEncoder) => void): string {
    const e = new GGUFEncoder();
    build(e);
    const file = path.join(tmp, name);
    fs.writeFileSync(file, Buffer.concat([e.pad(32).toBuffer(), Buffer.alloc(256)]));
    return file;
  }
  const arch: GGUFValue = { type: GGUFValueType.STRING, value: "qwen2vl" };

  it.each([
    [
      "a tensor count larger than the infos",
      (e: GGUFEncoder) => e.header(3, 1).kv("general.architecture", arch).tensorInfo("token_embd.weight", [4, 4], GGMLType.F32, 0),
      /failed to read tensor info|duplicate tensor name/,
    ],
    [
      "a tensor count of 2^48",
      (e: GGUFEncoder) => e.header(2n ** 48n, 1).kv("general.architecture", arch),
      /failed to read tensor info/,
    ],
    [
      "a tensor larger than the file",
      (e: GGUFEncoder) => e.header(1, 1).kv("general.architecture", arch).tensorInfo("token_embd.weight", [4096, 4096], GGMLType.F32, 0),
      /not within the file bounds/,
    ],
    [
      "a tensor offset past its predecessor's padded size",
      (e: GGUFEncoder) =>
        e
          .header(2, 1)
          .kv("general.architecture", arch)
          .tensorInfo("a", [8], GGMLType.F32, 0)
          .tensorInfo("b", [8], GGMLType.F32, 64),
      /offset/,
    ],
  ])("the reference loader and MultimodalLM reject %s with an error, not a crash", async (what, build, message) => {
    const file = lyingFile(`${what.replaceAll(" ", "-")}.gguf`, build);
    const r = loadWithReference(file, mmproj, image, message);
    expect(r.signal, r.stderr).toBeNull();
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(message);
    const error = await MultimodalLM.load({ model: file, mmproj }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as ModelLoadError).code).toBe("E_MODEL_LOAD");
    expect((error as ModelLoadError).message).toMatch(file);
  });
});
