// Search highlights arrive HTML-escaped with matches wrapped in <em>...</em>. They are
// parsed here into plain text segments, never handed to innerHTML: anything else that
// looks like markup stays literal text.

export interface Segment {
  text: string;
  hit: boolean;
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", "#39": "'", "#x27": "'", "#47": "/", "#x2F": "/", "#x2f": "/" };

/** Decodes the entities an HTML escaper produces; unknown ones stay as written. */
export function unescapeHtml(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|[a-zA-Z]{2,6});/g, (whole, name: string) => {
    if (name in ENTITIES) return ENTITIES[name];
    let code = NaN;
    if (name.startsWith("#x") || name.startsWith("#X")) code = parseInt(name.slice(2), 16);
    else if (name.startsWith("#")) code = parseInt(name.slice(1), 10);
    if (Number.isFinite(code) && code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff)) return String.fromCodePoint(code);
    return whole;
  });
}

/** Splits a highlight into text and hit segments (adjacent segments of one kind merged). */
export function parseHighlight(highlight: string): Segment[] {
  const out: Segment[] = [];
  const push = (raw: string, hit: boolean) => {
    if (!raw) return;
    const text = unescapeHtml(raw);
    const last = out[out.length - 1];
    if (last && last.hit === hit) last.text += text;
    else out.push({ text, hit });
  };
  let depth = 0;
  let rest = highlight;
  while (rest.length > 0) {
    const m = /<\/?em>/.exec(rest);
    if (!m) {
      push(rest, depth > 0);
      break;
    }
    push(rest.slice(0, m.index), depth > 0);
    depth = m[0] === "<em>" ? depth + 1 : Math.max(0, depth - 1);
    rest = rest.slice(m.index + m[0].length);
  }
  return out;
}
