// Messages of every conversation, de-duplicated by (conversation, seq): live frames,
// sync output, history pages and acks may all carry the same message.

import type { Message } from "./types";

export class Timeline {
  private bySeq = new Map<number, Message>();
  private sorted: Message[] | null = [];

  /** Adds a message; false when its seq was already known. */
  add(message: Message): boolean {
    if (!Number.isInteger(message.seq) || message.seq < 1 || this.bySeq.has(message.seq)) return false;
    this.bySeq.set(message.seq, message);
    this.sorted = null;
    return true;
  }

  has(seq: number): boolean {
    return this.bySeq.has(seq);
  }

  get size(): number {
    return this.bySeq.size;
  }

  /** Messages in ascending seq order. */
  messages(): Message[] {
    if (!this.sorted) this.sorted = [...this.bySeq.values()].sort((a, b) => a.seq - b.seq);
    return this.sorted;
  }

  /** Lowest seq held (0 when empty). */
  get first(): number {
    return this.messages()[0]?.seq ?? 0;
  }

  /** Highest seq held (0 when empty). */
  get last(): number {
    const m = this.messages();
    return m[m.length - 1]?.seq ?? 0;
  }

  /**
   * The sync cursor: the end of the gap-free run that starts at the lowest seq held,
   * so a gap (a live frame that overtook a lost one) is filled by the next sync.
   */
  get cursor(): number {
    const m = this.messages();
    if (m.length === 0) return 0;
    let cursor = m[0].seq;
    for (let i = 1; i < m.length && m[i].seq === cursor + 1; i++) cursor = m[i].seq;
    return cursor;
  }
}

export class Timelines {
  private map = new Map<string, Timeline>();

  get(conversationId: string): Timeline {
    let t = this.map.get(conversationId);
    if (!t) {
      t = new Timeline();
      this.map.set(conversationId, t);
    }
    return t;
  }

  /** Adds a message to its conversation; false for a duplicate. */
  add(message: Message): boolean {
    return this.get(message.conversation_id).add(message);
  }

  /** `sync` cursors for every conversation holding messages. */
  cursors(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [id, t] of this.map) if (t.size > 0) out[id] = t.cursor;
    return out;
  }

  conversations(): string[] {
    return [...this.map.keys()];
  }
}
