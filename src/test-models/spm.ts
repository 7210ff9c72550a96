/**
 * SentencePiece-style vocabularies (`tokenizer.ggml.model = "llama"`) for the generated test
 * models: byte-fallback tokens, single characters and pieces with merge scores, in the form
 * llama.cpp's SPM tokenizer reads. Gemma's tokenizer is one of these.
 */
import { GGUFValueType } from "../gguf/types.js";
import type { GGUFWriter } from "../gguf/writer.js";
import { TokenType, fromByteLevel, type Vocab } from "./bpe.js";
import type { HeadTokens } from "./layers.js";

/** SentencePiece's whitespace symbol (U+2581): a space inside a piece. */
export const SPM_SPACE = "\u2581";

export interface SpmVocab extends Vocab {
  /** `tokenizer.ggml.scores`: a piece with a higher score is merged first. */
  scores: number[];
}

/** `<0xNN>`: the byte-fallback token of one byte. */
export function byteToken(byte: number): string {
  return `<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`;
}

/**
 * Assembles an SPM vocabulary in call order. Pieces come from byte-level BPE merges
 * (`trainMerges`): each printable merge result becomes a piece whose score falls with its
 * rank, so llama.cpp's SPM tokenizer (highest-scoring adjacent pair first) rebuilds them.
 */
export class SpmVocabBuilder {
  private readonly tokens: string[] = [];
  private readonly types: TokenType[] = [];
  private readonly scores: number[] = [];
  private readonly ids = new Map<string, number>();

  add(token: string, type: TokenType, score = 0): this {
    if (this.ids.has(token)) throw new Error(`duplicate token ${JSON.stringify(token)}`);
    this.ids.set(token, this.tokens.length);
    this.tokens.push(token);
    this.types.push(type);
    this.scores.push(score);
    return this;
  }

  /** `<0x00>`..`<0xFF>`, so any text tokenizes (byte fallback). */
  addBytes(): this {
    for (let b = 0; b < 256; b++) this.add(byteToken(b), TokenType.BYTE);
    return this;
  }

  /** `▁` and the printable ASCII characters other than space, each a NORMAL piece. */
  addCharacters(score: number): this {
    this.add(SPM_SPACE, TokenType.NORMAL, score);
    for (let c = 0x21; c <= 0x7e; c++) this.add(String.fromCharCode(c), TokenType.NORMAL, score);
    return this;
  }

  /** Pieces from byte-level merges whose text is printable ASCII; the first merge scores highest. */
  addMerges(merges: readonly [string, string][]): this {
    merges.forEach(([a, b], rank) => {
      const bytes = fromByteLevel(a + b);
      if (!bytes || bytes.some((x) => x < 0x20 || x > 0x7e)) return;
      const piece = bytes.toString("latin1").replaceAll(" ", SPM_SPACE);
      if (!this.ids.has(piece)) this.add(piece, TokenType.NORMAL, -rank);
    });
    return this;
  }

  build(): SpmVocab {
    const ids = new Map(this.ids);
    return {
      tokens: [...this.tokens],
      types: [...this.types],
      scores: [...this.scores],
      merges: [],
      id(token: string): number {
        const id = ids.get(token);
        if (id === undefined) throw new Error(`token ${JSON.stringify(token)} is not in the vocabulary`);
        return id;
      },
    };
  }
}

/** HeadTokens of an SPM vocabulary: only NORMAL pieces of printable ASCII are printable. */
export function spmHeadTokens(vocab: SpmVocab): HeadTokens {
  return {
    nonPrintable: () => {
      const ids = new Set<number>();
      vocab.tokens.forEach((token, id) => {
        const text = token.replaceAll(SPM_SPACE, " ");
        if (vocab.types[id] !== TokenType.NORMAL || !/^[\x20-\x7e]+$/.test(text)) ids.add(id);
      });
      return ids;
    },
    byteToken: (b) => vocab.id(byteToken(b)),
  };
}

/** `tokenizer.*` keys of a SentencePiece vocabulary, as convert_hf_to_gguf.py writes them. */
export function setSpmTokenizer(
  w: GGUFWriter,
  vocab: SpmVocab,
  t: { pre: string; bos: string; eos: string; unk: string; pad: string; addBos: boolean; addSpacePrefix: boolean; chatTemplate: string },
): void {
  w.setString("tokenizer.ggml.model", "llama");
  w.setString("tokenizer.ggml.pre", t.pre);
  w.setArray("tokenizer.ggml.tokens", GGUFValueType.STRING, vocab.tokens);
  w.setArray("tokenizer.ggml.scores", GGUFValueType.FLOAT32, vocab.scores);
  w.setArray("tokenizer.ggml.token_type", GGUFValueType.INT32, vocab.types);
  w.setUint32("tokenizer.ggml.bos_token_id", vocab.id(t.bos));
  w.setUint32("tokenizer.ggml.eos_token_id", vocab.id(t.eos));
  w.setUint32("tokenizer.ggml.unknown_token_id", vocab.id(t.unk));
  w.setUint32("tokenizer.ggml.padding_token_id", vocab.id(t.pad));
  w.setBool("tokenizer.ggml.add_bos_token", t.addBos);
  w.setBool("tokenizer.ggml.add_eos_token", false);
  w.setBool("tokenizer.ggml.add_space_prefix", t.addSpacePrefix);
  w.setString("tokenizer.chat_template", t.chatTemplate);
}
