/**
 * Byte-level BPE (GPT-2 style) for the generated test models: the byte alphabet, a small
 * deterministic merge trainer, and vocabulary assembly in the GGUF `tokenizer.ggml.*` form.
 */

/** llama.cpp `llama_token_type` values written to `tokenizer.ggml.token_type`. */
export enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  /** SentencePiece byte-fallback token `<0xNN>`. */
  BYTE = 6,
}

/** GPT-2 `bytes_to_unicode`: printable bytes map to themselves, the other 68 to U+0100 onward. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array<string>(256);
  let next = 0x100;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCodePoint(printable ? b : next++);
  }
  return table;
})();

const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((ch, b) => [ch, b]));

/** Byte-level form of `text` (what BPE merges operate on). */
export function toByteLevel(text: string): string {
  let out = "";
  for (const b of Buffer.from(text, "utf8")) out += BYTE_TO_CHAR[b]!;
  return out;
}

/** The raw bytes a byte-level token stands for, or undefined if it is not byte-level text. */
export function fromByteLevel(token: string): Buffer | undefined {
  const bytes: number[] = [];
  for (const ch of token) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b === undefined) return undefined;
    bytes.push(b);
  }
  return Buffer.from(bytes);
}

/** GPT-2 pre-tokenizer split; merges never cross these word boundaries. */
const PRETOKENIZE = /'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * Learn up to `count` merges from `corpus`: repeatedly merge the most frequent adjacent pair
 * (until every word is one symbol). Ties go to the lexicographically smallest pair, so the
 * result depends only on the inputs.
 */
export function trainMerges(corpus: string, count: number): [string, string][] {
  const wordFreq = new Map<string, number>();
  for (const m of corpus.matchAll(PRETOKENIZE)) {
    const w = toByteLevel(m[0]);
    wordFreq.set(w, (wordFreq.get(w) ?? 0) + 1);
  }
  const words = [...wordFreq].map(([w, freq]) => ({ symbols: [...w], freq }));
  const merges: [string, string][] = [];
  while (merges.length < count) {
    const pairs = new Map<string, number>();
    for (const { symbols, freq } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + freq);
      }
    }
    let best: string | undefined;
    let bestCount = 0;
    for (const [key, n] of pairs) {
      if (n > bestCount || (n === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = n;
      }
    }
    if (best === undefined) break;
    const space = best.indexOf(" ");
    const left = best.slice(0, space);
    const right = best.slice(space + 1);
    merges.push([left, right]);
    for (const word of words) {
      const s = word.symbols;
      const merged: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === left && s[i + 1] === right) {
          merged.push(left + right);
          i++;
        } else {
          merged.push(s[i]!);
        }
      }
      word.symbols = merged;
    }
  }
  return merges;
}

export interface Vocab {
  tokens: string[];
  types: TokenType[];
  merges: string[];
  /** Id of a token by its text. */
  id(token: string): number;
}

/**
 * Assembles a vocabulary. Entries are appended in call order; `at(id)` pads with unused filler
 * tokens so fixed ids (the real model's special-token ids) can be reproduced.
 */
export class VocabBuilder {
  private readonly tokens: string[] = [];
  private readonly types: TokenType[] = [];
  private readonly ids = new Map<string, number>();
  private merges: string[] = [];

  get size(): number {
    return this.tokens.length;
  }

  add(token: string, type: TokenType): this {
    if (this.ids.has(token)) throw new Error(`duplicate token ${JSON.stringify(token)}`);
    this.ids.set(token, this.tokens.length);
    this.tokens.push(token);
    this.types.push(type);
    return this;
  }

  /** All 256 byte-level characters, in byte order. */
  addBytes(): this {
    for (const ch of BYTE_TO_CHAR) this.add(ch, TokenType.NORMAL);
    return this;
  }

  /** Merge rules and their result tokens (results already present are not added twice). */
  addMerges(merges: readonly [string, string][]): this {
    for (const [a, b] of merges) {
      if (!this.ids.has(a + b)) this.add(a + b, TokenType.NORMAL);
    }
    this.merges = merges.map(([a, b]) => `${a} ${b}`);
    return this;
  }

  /**
   * Ordinary word tokens (` w<i>` in byte-level form) up to (not including) `id`: stand-ins for
   * the real vocabulary's words, so a bench model's output is visible text.
   */
  fillTo(id: number): this {
    if (id < this.tokens.length) throw new Error(`cannot fill to id ${id}: vocabulary already has ${this.tokens.length} tokens`);
    while (this.tokens.length < id) this.add(`${BYTE_TO_CHAR[0x20]}w${this.tokens.length}`, TokenType.NORMAL);
    return this;
  }

  /** Unused `[PAD<i>]` tokens up to (not including) `id`, as convert_hf_to_gguf.py pads vocabularies. */
  padTo(id: number): this {
    if (id < this.tokens.length) throw new Error(`cannot pad to id ${id}: vocabulary already has ${this.tokens.length} tokens`);
    while (this.tokens.length < id) this.add(`[PAD${this.tokens.length}]`, TokenType.UNUSED);
    return this;
  }

  build(): Vocab {
    const ids = new Map(this.ids);
    return {
      tokens: [...this.tokens],
      types: [...this.types],
      merges: [...this.merges],
      id(token: string): number {
        const id = ids.get(token);
        if (id === undefined) throw new Error(`token ${JSON.stringify(token)} is not in the vocabulary`);
        return id;
      },
    };
  }
}

/**
 * Ids of tokens that do not decode to printable ASCII (0x20-0x7e): special, unused, control
 * and partial UTF-8 byte tokens. The printable-only output head zeroes their rows.
 */
export function nonPrintableIds(vocab: Vocab): Set<number> {
  const ids = new Set<number>();
  vocab.tokens.forEach((token, id) => {
    const bytes = vocab.types[id] === TokenType.NORMAL ? fromByteLevel(token) : undefined;
    if (!bytes || bytes.some((b) => b < 0x20 || b > 0x7e)) ids.add(id);
  });
  return ids;
}

/** English text the tiny tokenizers learn their merges from. */
export const MERGE_CORPUS = `
Describe this image in detail. What is in the picture? The image shows a red square on a blue
background, with a green circle in the corner and a yellow line across the middle. There is a
small white cat sitting on a wooden table next to a window. The sky is clear and the sun is
shining. Describe the video: a person walks along the street, then a car drives past the camera.
What color is the object on the left? It is a bright orange ball. How many people are in the
photo? There are three people standing in front of the building. Please answer the question
about the image. The text in the image reads "hello world". This is a photo of a dog playing
in the park with a ball, and the grass is green. A chart with bars and lines shows the results.
`;
