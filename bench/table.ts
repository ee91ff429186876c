/** Plain-text tables and number formatting for the benchmark's report. */

/** One table row: one cell per column. */
export type Row = readonly string[];

/**
 * Formats a table with a header line and a rule; the first column is left-aligned, the
 * others right-aligned (they hold numbers).
 */
export function formatTable(headers: Row, rows: readonly Row[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: Row): string =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

/** An integer with thousands separators, or '–' when not a number. */
export function formatInt(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–';
}

/** Bytes per second as MB/s (10^6 bytes) with one decimal, or '–'. */
export function formatMBps(bytesPerSec: number): string {
  return Number.isFinite(bytesPerSec) ? (bytesPerSec / 1e6).toFixed(1) : '–';
}

/** A ratio such as `1.05×`, or '–'. */
export function formatRatio(ratio: number, digits = 2): string {
  return Number.isFinite(ratio) ? `${ratio.toFixed(digits)}×` : '–';
}

/** A compact count such as `3.6k` or `1.9M`, for notes. */
export function formatCompact(n: number): string {
  if (!Number.isFinite(n)) return '–';
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (Math.abs(n) >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(0);
}
