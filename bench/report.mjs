// From raw runs to medians, ratios, markdown tables and target verdicts.
// Every side's run has the same fields (see README.md for how each side measures them).

const MIB = 1024 * 1024;

export const METRICS = [
  { key: "loadMs", label: "model load (ms)", better: "lower", get: (r) => r.loadMs },
  { key: "encodeMs", label: "image encode (ms)", better: "lower", get: (r) => r.encodeMs },
  // Everything from the request to the first token except the vision encoder, the same way on every side.
  { key: "promptTps", label: "prompt eval (tok/s)", better: "higher", get: (r) => promptTokensPerSecond(r) },
  { key: "genTps", label: "generation (tok/s)", better: "higher", get: (r) => (r.genSpanMs > 0 ? ((r.genTokens - 1) / r.genSpanMs) * 1000 : null) },
  { key: "ttftMs", label: "time to first token (ms)", better: "lower", get: (r) => r.ttftMs },
  { key: "e2eMs", label: "end-to-end after load (ms)", better: "lower", get: (r) => r.e2eMs },
  { key: "peakRssMiB", label: "peak RSS (MiB)", better: "lower", get: (r) => (r.peakRssBytes == null ? null : r.peakRssBytes / MIB) },
];

/**
 * The audio scenario's rows: the encoder is the audio encoder, and ours also times decoding the
 * clip (ffmpeg to PCM, in JS; llama-mtmd-cli decodes it with miniaudio in process and logs no time
 * for it, so its column is n/a: that time is in its time to first token and end-to-end only).
 */
export const AUDIO_METRICS = METRICS.flatMap((m) => {
  if (m.key === "encodeMs") return [{ ...m, label: "audio encode (ms)" }];
  if (m.key === "loadMs") return [m, { key: "audioDecodeMs", label: "audio decode, before encoding (ms)", better: "lower", get: (r) => r.imageLoadMs }];
  return [m];
});

function promptTokensPerSecond(r) {
  const ms = r.ttftMs - (r.encodeMs ?? 0);
  return ms > 0 ? (r.promptTokens / ms) * 1000 : null;
}

export function median(values) {
  const xs = values.filter((v) => typeof v === "number" && Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const mid = Math.floor(xs.length / 2);
  return xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
}

/** { metricKey: median } over the runs of one side. */
export function medians(runs, metrics = METRICS) {
  return Object.fromEntries(metrics.map((m) => [m.key, median(runs.map(m.get))]));
}

export const ratio = (a, b) => (a == null || b == null || b === 0 ? null : a / b);

function fmt(value, digits) {
  if (value == null) return "n/a";
  if (digits !== undefined) return value.toFixed(digits);
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(1);
}

/** A markdown table: the first `labels` columns left-aligned, the rest (numbers) right-aligned. */
function table(header, rows, labels = 1) {
  const align = header.map((_, i) => (i < labels ? "---" : "---:"));
  return [header, align, ...rows].map((cells) => `| ${cells.join(" | ")} |`).join("\n");
}

const betterNote = (m) => (m.better === "higher" ? "≥ 1 is better" : "≤ 1 is better");

/**
 * A side-by-side table. `sides` are [{ name, medians }], ours last; the ratios are ours over
 * each of the sides named in `against`.
 */
export function sideBySide(sides, against, { skip = [], metrics = METRICS } = {}) {
  const ours = sides.at(-1);
  const header = ["metric", ...sides.map((s) => s.name), ...against.map((a) => `ours / ${a}`), "better"];
  const rows = metrics.filter((m) => !skip.includes(m.key)).map((m) => [
    m.label,
    ...sides.map((s) => fmt(s.medians[m.key])),
    ...against.map((a) => fmt(ratio(ours.medians[m.key], sides.find((s) => s.name === a).medians[m.key]), 3)),
    betterNote(m),
  ]);
  return table(header, rows);
}

function formatCache(cache) {
  if (!cache) return "n/a";
  return (
    `reused ${cache.reusedPositions} / evaluated ${cache.evaluatedPositions} positions; ` +
    `image cache ${cache.imageCacheHits} hit, ${cache.imageCacheMisses} miss; ${cache.encodedChunks} chunks encoded`
  );
}

/** Two-request runs (repeat, chat): TTFT of each request and the ratio, medians over rounds. */
export function twoRequestSummary(runs) {
  const ttft1 = median(runs.map((r) => r.requests[0].ttftMs));
  const ttft2 = median(runs.map((r) => r.requests[1].ttftMs));
  return {
    ttft1Ms: ttft1,
    ttft2Ms: ttft2,
    ratio: median(runs.map((r) => r.requests[1].ttftMs / r.requests[0].ttftMs)),
    // The cache numbers do not change from round to round: show the first round's.
    cache: runs[0].requests.map((q) => q.cache ?? null),
  };
}

export function twoRequestTable(rows) {
  return table(
    ["run", "TTFT 1 (ms)", "TTFT 2 (ms)", "TTFT 2 / TTFT 1", "target", "request 1 cache", "request 2 cache"],
    rows.map(({ name, summary, target }) => [
      name,
      fmt(summary.ttft1Ms),
      fmt(summary.ttft2Ms),
      fmt(summary.ratio, 3),
      `≤ ${target}`,
      formatCache(summary.cache[0]),
      formatCache(summary.cache[1]),
    ]),
  );
}

/** One target: PASS/MISS with the measured value, or null when its scenario did not run. */
export function target(name, value, op, limit, unit = "×") {
  if (value == null) return { name, value: null, limit, op, verdict: "n/a", unit };
  const pass = op === "<=" ? value <= limit : value >= limit;
  return { name, value, limit, op, verdict: pass ? "PASS" : "MISS", unit };
}

export function targetLine(t) {
  const want = `${t.op === "<=" ? "≤" : "≥"} ${t.limit}${t.unit === "×" ? "×" : ` ${t.unit}`}`;
  const got = t.value == null ? "not measured" : `${t.value.toFixed(3)}${t.unit === "×" ? "×" : ` ${t.unit}`}`;
  return `${t.verdict.padEnd(4)} ${t.name}: ${got} (target ${want})`;
}

/** The p-quantile (0..1) of the numbers, interpolated linearly between the closest ranks. */
export function percentile(values, p) {
  const xs = values.filter((v) => typeof v === "number" && Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const at = (xs.length - 1) * p;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return xs[lo] + (xs[hi] - xs[lo]) * (at - lo);
}

const CONCURRENT_METRICS = [
  { key: "requests", label: "requests", digits: 0 },
  { key: "tokens", label: "tokens", digits: 0 },
  { key: "wallS", label: "wall (s)", digits: 1 },
  { key: "tokensPerSecond", label: "aggregate tok/s" },
  { key: "ttftP50Ms", label: "TTFT p50 (ms)" },
  { key: "ttftP95Ms", label: "TTFT p95 (ms)" },
  { key: "tpotP50Ms", label: "TPOT p50 (ms)" },
  { key: "evaluatedP50", label: "prompt tokens evaluated p50", digits: 0 },
  { key: "imageAgain", label: "image evaluated again", digits: 0 },
  { key: "warmupS", label: "warm-up (s)", digits: 1 },
  { key: "peakRssMiB", label: "peak RSS (MiB)", digits: 0 },
  { key: "otherCpuCores", label: "other processes (cores)", digits: 2 },
];

/** One concurrent run (one side, one N) → its numbers: all from the timed phase but warm-up and RSS. */
export function concurrentMetrics(run) {
  const tokens = run.requests.reduce((sum, r) => sum + r.tokens, 0);
  // Prompt tokens a request evaluated: all but those the server took from its caches.
  const evaluated = run.requests.map((r) => (r.cachedTokens == null ? null : r.promptTokens - r.cachedTokens));
  return {
    requests: run.requests.length,
    tokens,
    wallS: run.wallMs / 1000,
    tokensPerSecond: run.wallMs > 0 ? (tokens / run.wallMs) * 1000 : null,
    ttftP50Ms: percentile(run.requests.map((r) => r.ttftMs), 0.5),
    ttftP95Ms: percentile(run.requests.map((r) => r.ttftMs), 0.95),
    tpotP50Ms: percentile(run.requests.map((r) => r.tpotMs), 0.5),
    evaluatedP50: percentile(evaluated, 0.5),
    // Requests that evaluated more than half their prompt: the image (most of it) again.
    imageAgain: evaluated.some((e) => e == null) ? null : evaluated.filter((e, i) => e > run.requests[i].promptTokens / 2).length,
    warmupS: run.warmup.ms / 1000,
    peakRssMiB: run.peakRssBytes == null ? null : run.peakRssBytes / MIB,
    otherCpuCores: run.otherCpuCores,
  };
}

/** Medians over rounds of concurrentMetrics, per clients and side: { [clients]: { [side]: metrics } }. */
export function concurrentSummary(runs) {
  const out = {};
  for (const run of runs) {
    ((out[run.clients] ??= {})[run.side] ??= []).push(concurrentMetrics(run));
  }
  for (const bySide of Object.values(out)) {
    for (const [side, list] of Object.entries(bySide)) {
      bySide[side] = Object.fromEntries(Object.keys(list[0]).map((key) => [key, median(list.map((m) => m[key]))]));
    }
  }
  return out;
}

/** The per-side table and the ratio table (ours / reference at each N). */
export function concurrentTables(summary, sides, ours, reference) {
  const counts = Object.keys(summary)
    .map(Number)
    .sort((a, b) => a - b);
  const perSide = table(
    ["clients", "side", ...CONCURRENT_METRICS.map((m) => m.label)],
    counts.flatMap((n) => sides.map((side) => [n, side, ...CONCURRENT_METRICS.map((m) => fmt(summary[n][side]?.[m.key], m.digits))])),
    2,
  );
  const ratios = table(
    ["clients", "aggregate tok/s (≥ 1 is better)", "TTFT p50 (≤ 1 is better)", "TTFT p95 (≤ 1 is better)", "TPOT p50 (≤ 1 is better)"],
    counts.map((n) => {
      const [a, b] = [summary[n][ours], summary[n][reference]];
      return [n, ...["tokensPerSecond", "ttftP50Ms", "ttftP95Ms", "tpotP50Ms"].map((key) => fmt(ratio(a?.[key], b?.[key]), 3))];
    }),
  );
  return { perSide, ratios: `ours / ${reference}:\n\n${ratios}` };
}
