import { EventEmitter } from 'eventemitter3';
import type { Logger } from './logger.js';

/**
 * The emitter every walship component extends: eventemitter3's typed events, plus one
 * `emitSafely` that logs a listener's exception instead of letting it unwind into a sender,
 * a receiver or an apply loop (a host's bug in a listener must not stop replication).
 */
export class SafeEmitter<Events extends EventEmitter.ValidEventTypes> extends EventEmitter<Events> {
  /**
   * Where listener exceptions are logged: the component's `…:error` channel.
   * @internal
   */
  protected emitterLog: Logger | null = null;

  /**
   * Emits `event`; a listener that throws is logged, never thrown into the caller.
   * @internal
   */
  protected emitSafely<K extends EventEmitter.EventNames<Events>>(event: K, ...args: EventEmitter.EventArgs<Events, K>): void {
    try {
      this.emit(event, ...args);
    } catch (err) {
      this.emitterLog?.error('a %s listener threw: %s', String(event), err instanceof Error ? err.message : String(err));
    }
  }
}
