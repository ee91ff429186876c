// fast-crc32c ships no typings; only its default (CommonJS) export works under ESM.
declare module 'fast-crc32c' {
  const crc32c: {
    /** CRC-32C of `input`, continuing from `initial` (default 0). */
    calculate(input: string | Uint8Array, initial?: number): number;
  };
  export default crc32c;
}
