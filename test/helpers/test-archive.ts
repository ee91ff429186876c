import { WalshipError, type Archiver } from '../../src/index.js';

/** An archive in memory with switches for failure: every call can fail, or wait for a gate. */
export class TestArchive implements Archiver {
  readonly files = new Map<string, Buffer>();
  readonly puts: string[] = [];
  readonly removed: string[] = [];
  failing: ((name: string) => boolean) | null = null;
  #gate: Promise<void> | null = null;
  #open: (() => void) | null = null;

  hold(): void {
    this.#gate ??= new Promise((resolve) => (this.#open = resolve));
  }

  release(): void {
    this.#open?.();
    this.#gate = null;
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    while (this.#gate !== null) await this.#gate;
    this.puts.push(name);
    if (this.failing?.(name) === true) throw new Error(`put of ${name} refused by the test`);
    const existing = this.files.get(name);
    if (existing !== undefined && !existing.equals(data)) throw new WalshipError('ARCHIVE_CONFLICT', `${name} differs`);
    this.files.set(name, Buffer.from(data));
  }

  async get(name: string): Promise<Uint8Array | null> {
    const data = this.files.get(name);
    return data === undefined ? null : Buffer.from(data);
  }

  async remove(name: string): Promise<void> {
    this.removed.push(name);
    this.files.delete(name);
  }

  async list(prefix = ''): Promise<string[]> {
    return [...this.files.keys()].filter((name) => name.startsWith(prefix));
  }
}

