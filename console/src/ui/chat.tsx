import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import type { Conversation, Message } from "../sdk";
import { useStore } from "./hooks";
import { FileMessage } from "./media";
import { href, navigate } from "./router";
import { describeError, type PendingMessage, type Store } from "./store";

function time(iso?: string): string {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleDateString([], { month: "short", day: "numeric" });
}

function preview(store: Store, m?: Message | null): string {
  if (!m) return "No messages yet";
  const who = m.sender_id === store.me?.id ? "You: " : "";
  const body = m.msg_type === "text" ? m.content : `[${m.msg_type}] ${m.content}`;
  return who + body;
}

export function PresenceDot({ userId }: { userId: string }) {
  const store = useStore();
  const online = store.presence.get(userId) ?? false;
  return <span class={`dot ${online ? "on" : "off"}`} role="img" aria-label={online ? "online" : "offline"} data-presence={online ? "online" : "offline"} />;
}

export function ConversationList({ activeId }: { activeId?: string }) {
  const store = useStore();
  const list = store.sortedConversations();
  return (
    <div class="convs">
      <div class="convs-head">
        <h2>Chats</h2>
        <a class="button secondary" href={href(["new-group"])}>New group</a>
      </div>
      {list.length === 0 && <p class="muted">No conversations yet. Add a friend and say hello.</p>}
      <ul role="list" data-testid="conversation-list">
        {list.map((c) => {
          const other = c.kind === "direct" ? c.member_ids.find((id) => id !== store.me?.id) : undefined;
          return (
            <li key={c.id}>
              <a href={href(["c", c.id])} class={`conv ${c.id === activeId ? "active" : ""}`} aria-current={c.id === activeId ? "true" : undefined} data-conversation={c.id}>
                <span class="conv-title">
                  {other && <PresenceDot userId={other} />}
                  {c.kind === "group" && <span class="group-icon" aria-hidden="true">#</span>}
                  <span class="name">{store.title(c)}</span>
                  <span class="when">{time(c.last_message?.created_at ?? c.updated_at)}</span>
                </span>
                <span class="conv-preview">
                  <span class="text">{preview(store, c.last_message)}</span>
                  {c.unread_count > 0 && <span class="badge" data-testid="unread" aria-label={`${c.unread_count} unread`}>{c.unread_count}</span>}
                </span>
              </a>
            </li>
          );
        })}
      </ul>
    </div>
  );
}

type Status = "sending" | "failed" | "stored" | "delivered" | "read";

function statusOf(store: Store, c: Conversation, m: Message): { status: Status; label: string } {
  const others = c.member_ids.filter((id) => id !== store.me?.id);
  const receipts = store.receiptsOf(c.id);
  let read = 0;
  let delivered = 0;
  for (const id of others) {
    const r = receipts.get(id);
    if (r && r.read_seq >= m.seq) read++;
    if (r && (r.delivered_seq >= m.seq || r.read_seq >= m.seq)) delivered++;
  }
  if (others.length > 0 && read === others.length) return { status: "read", label: c.kind === "group" ? "Read by all" : "Read" };
  if (c.kind === "group" && read > 0) return { status: "delivered", label: `Read by ${read}` };
  if (others.length > 0 && delivered === others.length) return { status: "delivered", label: "Delivered" };
  return { status: "stored", label: "Sent" };
}

function MessageBody({ m }: { m: { msg_type: string; content: string; file_id?: string | null } }) {
  if (m.msg_type !== "text" && m.file_id) return <FileMessage fileId={m.file_id} kind={m.msg_type} name={m.content} />;
  return <p class="content">{m.content}</p>;
}

function MessageItem({ c, m, highlight }: { c: Conversation; m: Message; highlight: boolean }) {
  const store = useStore();
  const mine = m.sender_id === store.me?.id;
  const s = mine ? statusOf(store, c, m) : null;
  return (
    <li id={`msg-${m.conversation_id}-${m.seq}`} class={`msg ${mine ? "mine" : "theirs"} ${highlight ? "focus" : ""}`} data-seq={m.seq} data-status={s?.status} tabIndex={highlight ? -1 : undefined}>
      {!mine && c.kind === "group" && <span class="sender">{store.shortName(m.sender_id)}</span>}
      <MessageBody m={m} />
      <span class="meta">
        <time dateTime={m.created_at}>{time(m.created_at)}</time>
        {s && <span class={`ack ${s.status}`} data-testid="ack">{s.label}</span>}
      </span>
    </li>
  );
}

function PendingItem({ p }: { p: PendingMessage }) {
  const store = useStore();
  return (
    <li class="msg mine pending" data-status={p.state} data-client-msg-id={p.client_msg_id}>
      <MessageBody m={p} />
      <span class="meta">
        {p.state === "sending" ? <span class="ack sending" data-testid="ack">Sending…</span> : (
          <span class="ack failed" role="alert">Not sent: {p.error} <button type="button" class="link" onClick={() => store.retry(p.client_msg_id)}>Retry</button></span>
        )}
      </span>
    </li>
  );
}

function TypingLine({ conversationId }: { conversationId: string }) {
  const store = useStore();
  const who = store.typingIn(conversationId);
  return (
    <p class="typing" aria-live="polite" data-testid="typing">
      {who.length === 0 ? "" : `${who.map((id) => store.shortName(id)).join(", ")} ${who.length === 1 ? "is" : "are"} typing…`}
    </p>
  );
}

function Composer({ onSend, onTyping, conversationId }: { onSend: (text: string) => Promise<void> | void; onTyping?: () => void; conversationId?: string }) {
  const store = useStore();
  const [text, setText] = useState("");
  const ref = useRef<HTMLTextAreaElement>(null);
  const fileRef = useRef<HTMLInputElement>(null);
  const lastTyping = useRef(0);
  useEffect(() => ref.current?.focus(), [conversationId]);
  const send = () => {
    const value = text.trim();
    if (!value) return;
    if (new Blob([value]).size > 16 * 1024) {
      store.notify("A message may hold at most 16 KiB of text.", "error");
      return;
    }
    setText("");
    void onSend(value);
  };
  const filesOff = store.filesSupported === false;
  return (
    <form class="composer" onSubmit={(e) => { e.preventDefault(); send(); }}>
      {conversationId && (
        <>
          <label class={`button secondary attach ${filesOff ? "disabled" : ""}`} title={filesOff ? "This server does not accept files" : "Send an image, voice or other file"}>
            <svg aria-hidden="true" viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"><path d="M21 11.5 12.5 20a5 5 0 0 1-7-7L14 4.5a3.3 3.3 0 0 1 4.7 4.7l-8.4 8.4a1.7 1.7 0 0 1-2.4-2.4L15.5 7.5" /></svg><span class="sr-only">Attach a file</span>
            <input ref={fileRef} type="file" class="sr-only" disabled={filesOff} aria-label="Attach a file"
              onChange={(e) => {
                const input = e.currentTarget as HTMLInputElement;
                const file = input.files?.[0];
                input.value = "";
                if (file) void store.sendFile(conversationId, file);
              }} />
          </label>
        </>
      )}
      <label for="composer-text" class="sr-only">Message</label>
      <textarea id="composer-text" ref={ref} rows={1} placeholder="Write a message" aria-describedby="composer-hint" value={text}
        onInput={(e) => {
          setText((e.currentTarget as HTMLTextAreaElement).value);
          const now = Date.now();
          if (onTyping && now - lastTyping.current > 2000) {
            lastTyping.current = now;
            onTyping();
          }
        }}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            send();
          }
        }} />
      <span id="composer-hint" class="sr-only">Enter sends; Shift+Enter starts a new line.</span>
      <button type="submit">Send</button>
    </form>
  );
}

function Uploads({ conversationId }: { conversationId: string }) {
  const store = useStore();
  const list = [...store.uploads.values()].filter((u) => u.conversation_id === conversationId);
  if (list.length === 0 && store.filesSupported !== false) return null;
  return (
    <div class="uploads">
      {store.filesSupported === false && <p class="muted" data-testid="files-unavailable">File messages are unavailable: this server does not serve /api/v1/files (404).</p>}
      {list.map((u) => (
        <div class="upload" key={u.id}>
          <label for={`up-${u.id}`}>{u.file.name}</label>
          <progress id={`up-${u.id}`} max={u.total || 1} value={u.sent} aria-label={`Uploading ${u.file.name}`} />
          <span>{u.total ? Math.floor((u.sent / u.total) * 100) : 0}%</span>
          {u.error && (
            <span class="error" role="alert">
              {u.error} <button type="button" class="link" onClick={() => void store.sendFile(u.conversation_id, u.file, u)}>Resume</button>
              <button type="button" class="link" onClick={() => store.cancelUpload(u.id)}>Dismiss</button>
            </span>
          )}
        </div>
      ))}
    </div>
  );
}

export function ChatView({ id, focusSeq }: { id: string; focusSeq?: number }) {
  const store = useStore();
  const c = store.conversations.get(id);
  const listRef = useRef<HTMLOListElement>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [q, setQ] = useState("");
  const stick = useRef(true);
  const prevHeight = useRef(0);
  const timeline = store.socket?.timelines.get(id);
  const messages = timeline ? timeline.messages() : [];
  const pending = store.pendingFor({ conversation_id: id });
  const lastSeq = messages.length ? messages[messages.length - 1].seq : 0;

  useEffect(() => {
    if (!focusSeq) return;
    let cancelled = false;
    void store.loadUntil(id, focusSeq).then((found) => {
      if (cancelled) return;
      const el = document.getElementById(`msg-${id}-${focusSeq}`);
      if (found && el) {
        stick.current = false;
        el.scrollIntoView({ block: "center" });
        el.focus();
      } else {
        store.notify("That message is not available any more.", "error");
      }
    });
    return () => { cancelled = true; };
  }, [id, focusSeq, store.socket]);

  useLayoutEffect(() => {
    const el = listRef.current;
    if (!el) return;
    if (prevHeight.current && loadingOlder === false && el.scrollTop < 5 && el.scrollHeight > prevHeight.current && !stick.current) {
      // older messages were prepended: keep the view where it was
      el.scrollTop = el.scrollHeight - prevHeight.current;
    } else if (stick.current && !focusSeq) {
      el.scrollTop = el.scrollHeight;
    }
    prevHeight.current = el.scrollHeight;
  }, [messages.length, pending.length, lastSeq]);

  if (!c) {
    return <section class="chat"><p class="muted" role="status">Loading conversation…</p></section>;
  }
  const older = async () => {
    setLoadingOlder(true);
    stick.current = false;
    try {
      await store.loadHistory(id, true);
    } catch (e) {
      store.notify(describeError(e), "error");
    } finally {
      setLoadingOlder(false);
    }
  };
  const other = c.kind === "direct" ? c.member_ids.find((m) => m !== store.me?.id) : undefined;
  const done = store.historyDone.has(id) || (messages[0]?.seq ?? 1) <= 1;
  return (
    <section class="chat" aria-labelledby="chat-title">
      <header class="chat-head">
        <a href={href(["chats"])} class="back" aria-label="Back to conversations">‹</a>
        <h2 id="chat-title">{other && <PresenceDot userId={other} />} {store.title(c)}</h2>
        {c.kind === "group" && <span class="muted">{c.member_ids.length} {c.member_ids.length === 1 ? "member" : "members"}</span>}
        <form class="search inline" role="search" onSubmit={(e) => { e.preventDefault(); if (q.trim()) navigate(["search"], { q: q.trim(), c: id }); }}>
          <label for="chat-search" class="sr-only">Search in this conversation</label>
          <input id="chat-search" type="search" placeholder="Search here" value={q} onInput={(e) => setQ((e.currentTarget as HTMLInputElement).value)} />
        </form>
        {c.kind === "group" && <a class="button secondary" href={href(["c", id, "settings"])}>Group settings</a>}
      </header>
      <ol class="messages" ref={listRef} aria-label="Messages" aria-live="polite" data-testid="messages"
        onScroll={(e) => {
          const el = e.currentTarget as HTMLOListElement;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
          if (el.scrollTop === 0 && !done && !loadingOlder) void older();
        }}>
        <li class="history">
          {done ? <span class="muted">Beginning of the conversation</span> : (
            <button type="button" class="link" disabled={loadingOlder} onClick={() => void older()}>{loadingOlder ? "Loading…" : "Load earlier messages"}</button>
          )}
        </li>
        {messages.map((m) => <MessageItem key={m.seq} c={c} m={m} highlight={m.seq === focusSeq} />)}
        {pending.map((p) => <PendingItem key={p.client_msg_id} p={p} />)}
      </ol>
      <TypingLine conversationId={id} />
      <Uploads conversationId={id} />
      <Composer conversationId={id} onTyping={() => store.socket?.typing(id)} onSend={async (text) => {
        stick.current = true;
        await store.send({ conversation_id: id }, text);
      }} />
    </section>
  );
}

/** A first message to a friend without a conversation yet: sent by `to_user_id`. */
export function DraftChat({ userId }: { userId: string }) {
  const store = useStore();
  const existing = store.directWith(userId);
  useEffect(() => {
    if (existing) navigate(["c", existing.id], undefined, true);
  }, [existing?.id]);
  useEffect(() => void store.ensureUsers([userId]), [userId]);
  const pending = store.pendingFor({ to_user_id: userId });
  return (
    <section class="chat" aria-labelledby="chat-title">
      <header class="chat-head">
        <a href={href(["chats"])} class="back" aria-label="Back to conversations">‹</a>
        <h2 id="chat-title"><PresenceDot userId={userId} /> {store.displayName(userId)}</h2>
      </header>
      <ol class="messages" aria-label="Messages" data-testid="messages">
        <li class="history"><span class="muted">Say hello: this is the start of your conversation.</span></li>
        {pending.map((p) => <PendingItem key={p.client_msg_id} p={p} />)}
      </ol>
      <Composer onSend={async (text) => {
        const conv = await store.send({ to_user_id: userId }, text);
        if (conv) navigate(["c", conv], undefined, true);
      }} />
    </section>
  );
}

function UserPicker({ exclude, selected, onToggle }: { exclude: string[]; selected: Set<string>; onToggle: (id: string) => void }) {
  const store = useStore();
  const [q, setQ] = useState("");
  const [found, setFound] = useState<string[]>([]);
  const [error, setError] = useState("");
  const candidates = [...new Set([...store.friends, ...found, ...selected])].filter((id) => !exclude.includes(id));
  const search = async () => {
    setError("");
    try {
      const users = await store.client.searchUsers(q.trim());
      for (const u of users) store.users.set(u.id, u);
      setFound(users.map((u) => u.id).filter((id) => id !== store.me?.id));
    } catch (e) {
      setError(describeError(e));
    }
  };
  return (
    <fieldset class="picker">
      <legend>Members</legend>
      <div class="row">
        <label for="picker-q" class="sr-only">Find people by username</label>
        <input id="picker-q" type="search" placeholder="Find people by username" value={q} onInput={(e) => setQ((e.currentTarget as HTMLInputElement).value)}
          onKeyDown={(e) => { if (e.key === "Enter") { e.preventDefault(); void search(); } }} />
        <button type="button" class="secondary" onClick={() => void search()}>Find</button>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {candidates.length === 0 && <p class="muted">Add friends first, or find people by username.</p>}
      <ul role="list" class="checks">
        {candidates.map((id) => (
          <li key={id}>
            <label><input type="checkbox" checked={selected.has(id)} onChange={() => onToggle(id)} /> {store.displayName(id)}</label>
          </li>
        ))}
      </ul>
    </fieldset>
  );
}

export function NewGroup() {
  const store = useStore();
  const [name, setName] = useState("");
  const [selected, setSelected] = useState(new Set<string>());
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const toggle = (id: string) => {
    const s = new Set(selected);
    if (s.has(id)) s.delete(id);
    else s.add(id);
    setSelected(s);
  };
  return (
    <section class="panel" aria-labelledby="new-group-title">
      <h2 id="new-group-title">New group</h2>
      <form onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        setError("");
        try {
          const c = await store.client.createGroup(name.trim(), [...selected]);
          store.upsertConversation(c);
          navigate(["c", c.id], undefined, true);
        } catch (err) {
          setError(describeError(err));
        } finally {
          setBusy(false);
        }
      }}>
        <div class="field">
          <label for="group-name">Group name</label>
          <input id="group-name" value={name} required maxLength={128} onInput={(e) => setName((e.currentTarget as HTMLInputElement).value)} />
        </div>
        <UserPicker exclude={[store.me?.id ?? ""]} selected={selected} onToggle={toggle} />
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>Create group</button>
      </form>
    </section>
  );
}

export function GroupSettings({ id }: { id: string }) {
  const store = useStore();
  const c = store.conversations.get(id);
  const [name, setName] = useState(c?.name ?? "");
  const [selected, setSelected] = useState(new Set<string>());
  const [error, setError] = useState("");
  const [confirmLeave, setConfirmLeave] = useState(false);
  useEffect(() => void store.ensureConversation(id), [id]);
  useEffect(() => { if (c && !name) setName(c.name); }, [c?.name]);
  if (!c) return <section class="panel"><p class="muted" role="status">Loading…</p></section>;
  const me = store.me?.id ?? "";
  const owner = c.owner_id === me;
  const run = async (f: () => Promise<unknown>) => {
    setError("");
    try {
      await f();
    } catch (e) {
      setError(describeError(e));
    }
  };
  return (
    <section class="panel" aria-labelledby="settings-title">
      <p><a href={href(["c", id])}>‹ Back to the chat</a></p>
      <h2 id="settings-title">Group settings</h2>
      <form class="row" onSubmit={(e) => { e.preventDefault(); void run(async () => store.upsertConversation(await store.client.updateGroup(id, { name: name.trim() }))); }}>
        <div class="field grow">
          <label for="rename">Group name</label>
          <input id="rename" value={name} required onInput={(e) => setName((e.currentTarget as HTMLInputElement).value)} />
        </div>
        <button type="submit">Rename</button>
      </form>
      <h3>Members ({c.member_ids.length})</h3>
      <ul role="list" class="members">
        {c.member_ids.map((uid) => (
          <li key={uid}>
            <span>{store.displayName(uid)}{uid === c.owner_id && <span class="muted"> (owner)</span>}{uid === me && <span class="muted"> (you)</span>}</span>
            {owner && uid !== me && (
              <button type="button" class="secondary" onClick={() => void run(async () => {
                await store.client.removeMember(id, uid);
                store.upsertConversation(await store.client.conversation(id));
              })}>Remove {store.shortName(uid)}</button>
            )}
          </li>
        ))}
      </ul>
      <form onSubmit={(e) => {
        e.preventDefault();
        void run(async () => {
          store.upsertConversation(await store.client.addMembers(id, [...selected]));
          setSelected(new Set());
        });
      }}>
        <UserPicker exclude={c.member_ids} selected={selected} onToggle={(uid) => { const s = new Set(selected); if (s.has(uid)) s.delete(uid); else s.add(uid); setSelected(s); }} />
        <button type="submit" disabled={selected.size === 0}>Add members</button>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      <h3>Leave</h3>
      {!confirmLeave ? <button type="button" class="secondary" onClick={() => setConfirmLeave(true)}>Leave the group…</button> : <button type="button" class="danger" onClick={() => void run(async () => {
        await store.client.removeMember(id, me);
        store.conversations.delete(id);
        store.changed();
        navigate(["chats"], undefined, true);
      })}>Yes, leave {c.name}</button>}
    </section>
  );
}
