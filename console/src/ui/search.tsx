import { useEffect, useState } from "preact/hooks";
import { parseHighlight, type SearchHit } from "../sdk";
import { useStore } from "./hooks";
import { href } from "./router";
import { describeError } from "./store";

/** A server highlight rendered as text and <mark> elements: never as HTML. */
export function Highlight({ html }: { html: string }) {
  return <>{parseHighlight(html).map((s, i) => (s.hit ? <mark key={i}>{s.text}</mark> : <span key={i}>{s.text}</span>))}</>;
}

export function SearchView({ q, conversationId }: { q: string; conversationId?: string }) {
  const store = useStore();
  const [hits, setHits] = useState<SearchHit[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const load = async (more: boolean) => {
    if (!q) return;
    setBusy(true);
    setError("");
    try {
      const r = await store.client.searchMessages(q, { conversation_id: conversationId, limit: 20, cursor: more ? cursor : undefined });
      setHits(more && hits ? [...hits, ...r.hits] : r.hits);
      setCursor(r.next_cursor);
      await store.ensureUsers(r.hits.map((h) => h.message.sender_id));
    } catch (e) {
      setError(describeError(e));
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => void load(false), [q, conversationId]);
  const scope = conversationId ? store.conversations.get(conversationId) : undefined;
  return (
    <section class="panel" aria-labelledby="search-title">
      <h2 id="search-title">Results for “{q}”{conversationId && <> in {scope ? store.title(scope) : "this conversation"}</>}</h2>
      {conversationId && <p><a href={href(["search"], { q })}>Search all conversations</a> · <a href={href(["c", conversationId])}>Back to the chat</a></p>}
      {error && <p class="error" role="alert">{error}</p>}
      {busy && !hits && <p role="status">Searching…</p>}
      {hits && hits.length === 0 && <p class="muted" role="status">No messages found. New messages become searchable within a few seconds.</p>}
      <ol class="hits" data-testid="search-hits">
        {hits?.map((h) => {
          const c = store.conversations.get(h.message.conversation_id);
          return (
            <li key={h.message.id}>
              <a href={href(["c", h.message.conversation_id], { seq: h.message.seq })} class="hit">
                <span class="hit-where">{c ? store.title(c) : "Conversation"} · {store.shortName(h.message.sender_id)}</span>
                <span class="hit-text"><Highlight html={h.highlight} /></span>
              </a>
            </li>
          );
        })}
      </ol>
      {cursor && <button type="button" class="secondary" disabled={busy} onClick={() => void load(true)}>More results</button>}
    </section>
  );
}
