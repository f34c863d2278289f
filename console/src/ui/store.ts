// The console's state on top of the SDK: who is signed in, conversations, messages,
// friends, presence, receipts and typing, kept current by the socket's frames. Views
// subscribe and re-render on every change.

import {
  ApiError, BeehiveClient, BeehiveSocket, LocalStorageTokenStore, NetworkError, SessionEndedError,
  msgTypeFor, newClientMsgId, uploadFile, webLock,
  type Conversation, type FriendRequest, type Message, type MsgType, type SocketState, type User,
} from "../sdk";

export type Status = "loading" | "signedOut" | "signedIn" | "revoked";

export interface PendingMessage {
  client_msg_id: string;
  conversation_id?: string;
  to_user_id?: string;
  content: string;
  msg_type: MsgType;
  file_id?: string;
  state: "sending" | "failed";
  error?: string;
}

export interface UploadState {
  id: string;
  conversation_id: string;
  file: File;
  sent: number;
  total: number;
  error?: string;
  done?: boolean;
}

export interface ReceiptState {
  delivered_seq: number;
  read_seq: number;
}

const TOKENS_KEY = "beehive.tokens";
const TYPING_MS = 4000;

function deviceId(): string {
  try {
    let id = sessionStorage.getItem("beehive.device");
    if (!id) {
      id = `web-${newClientMsgId().slice(0, 8)}`;
      sessionStorage.setItem("beehive.device", id);
    }
    return id;
  } catch {
    return `web-${newClientMsgId().slice(0, 8)}`;
  }
}

export function describeError(error: unknown): string {
  if (error instanceof ApiError) return error.message || error.code;
  if (error instanceof NetworkError) return "Cannot reach the server. Check the connection and try again.";
  if (error instanceof SessionEndedError) return "Your session has ended. Sign in again.";
  if (error instanceof Error) return error.message;
  return String(error);
}

export class Store {
  readonly client: BeehiveClient;
  socket: BeehiveSocket | null = null;
  status: Status = "loading";
  revokedReason = "";
  me: User | null = null;
  connection: SocketState = "idle";
  retryInMs: number | undefined;
  users = new Map<string, User>();
  friends: string[] = [];
  incoming: FriendRequest[] = [];
  outgoing: FriendRequest[] = [];
  presence = new Map<string, boolean>();
  conversations = new Map<string, Conversation>();
  pending = new Map<string, PendingMessage>();
  receipts = new Map<string, Map<string, ReceiptState>>();
  typing = new Map<string, Map<string, number>>();
  historyDone = new Set<string>();
  /** Conversations whose latest page was loaded (live frames alone leave gaps before them). */
  historyLoaded = new Set<string>();
  uploads = new Map<string, UploadState>();
  filesSupported: boolean | null = null;
  active: string | null = null;
  notice: { text: string; kind: "info" | "error" } | null = null;

  private listeners = new Set<() => void>();
  private version = 0;
  private scheduled = false;
  private userFetches = new Map<string, Promise<void>>();
  private convFetches = new Map<string, Promise<void>>();
  private readTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(baseUrl = "") {
    this.client = new BeehiveClient({ baseUrl, store: new LocalStorageTokenStore(TOKENS_KEY), lock: webLock });
    this.client.on("ended", ({ reason }) => this.revoked(reason));
    window.addEventListener("storage", (e) => {
      if (e.key !== TOKENS_KEY) return;
      this.client.reloadTokens();
      if (!this.client.signedIn && this.status === "signedIn") this.reset("signedOut");
      else if (this.client.signedIn && this.status === "signedOut") void this.startSession();
    });
    window.addEventListener("offline", () => {
      this.socket?.networkDown();
      // some browsers never fire "online" after an emulated or brief outage: poll too
      const poll = setInterval(() => {
        if (navigator.onLine || !this.socket || this.socket.state !== "offline") {
          clearInterval(poll);
          this.socket?.networkUp();
        }
      }, 2000);
    });
    window.addEventListener("online", () => this.socket?.networkUp());
    document.addEventListener("visibilitychange", () => this.markActiveRead());
  }

  // ---- subscription ----

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  get rev(): number {
    return this.version;
  }
  changed(): void {
    this.version++;
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      for (const fn of [...this.listeners]) fn();
    });
  }
  notify(text: string, kind: "info" | "error" = "info"): void {
    this.notice = { text, kind };
    this.changed();
  }

  // ---- session ----

  async init(): Promise<void> {
    if (this.client.signedIn) await this.startSession();
    else this.reset("signedOut");
  }

  async signIn(login: string, password: string): Promise<void> {
    await this.client.login(login, password);
    await this.startSession();
  }

  async signUp(input: { username: string; password: string; nickname?: string; email?: string; code?: string }): Promise<void> {
    await this.client.register(input);
    await this.startSession();
  }

  async signOut(): Promise<void> {
    this.socket?.close();
    await this.client.logout();
    this.reset("signedOut");
  }

  private revoked(reason: string): void {
    if (this.status !== "signedIn") return;
    this.socket?.close();
    this.reset("revoked");
    this.revokedReason = reason;
    this.changed();
  }

  private reset(status: Status): void {
    this.socket?.close();
    this.socket = null;
    this.status = status;
    this.me = null;
    this.connection = "idle";
    this.friends = [];
    this.incoming = [];
    this.outgoing = [];
    this.presence.clear();
    this.conversations.clear();
    this.pending.clear();
    this.receipts.clear();
    this.typing.clear();
    this.historyDone.clear();
    this.historyLoaded.clear();
    this.uploads.clear();
    this.active = null;
    this.notice = null;
    this.changed();
  }

  private async startSession(): Promise<void> {
    try {
      const me = await this.client.me();
      this.me = me;
      this.users.set(me.id, me);
    } catch (error) {
      if (error instanceof SessionEndedError || (error instanceof ApiError && error.status === 401)) {
        this.reset("signedOut");
        return;
      }
      this.reset("signedOut");
      this.notify(describeError(error), "error");
      return;
    }
    this.status = "signedIn";
    this.revokedReason = "";
    const socket = new BeehiveSocket(this.client, { deviceId: deviceId() });
    this.socket = socket;
    socket.on("state", ({ state, retryInMs }) => {
      this.connection = state;
      this.retryInMs = retryInMs;
      this.changed();
    });
    socket.on("message", ({ message, source }) => this.onMessage(message, source));
    socket.on("synced", () => void this.refreshAfterSync());
    socket.on("receipt", (r) => {
      this.receiptsOf(r.conversation_id).set(r.user_id, { delivered_seq: r.delivered_seq, read_seq: r.read_seq });
      this.changed();
    });
    socket.on("typing", ({ conversation_id, user_id }) => {
      if (user_id === this.me?.id) return;
      let m = this.typing.get(conversation_id);
      if (!m) this.typing.set(conversation_id, (m = new Map()));
      m.set(user_id, Date.now() + TYPING_MS);
      void this.ensureUsers([user_id]);
      this.changed();
      setTimeout(() => this.changed(), TYPING_MS + 50);
    });
    socket.on("presence", ({ user_id, online }) => {
      this.presence.set(user_id, online);
      this.changed();
    });
    socket.on("friend_request", ({ request }) => {
      if (!this.incoming.some((r) => r.id === request.id)) this.incoming = [...this.incoming, request];
      void this.ensureUsers([request.from_user_id]);
      this.changed();
    });
    socket.on("friend_accepted", ({ request }) => {
      this.outgoing = this.outgoing.filter((r) => r.id !== request.id);
      void this.loadFriends();
    });
    socket.on("conversation_updated", ({ conversation }) => this.upsertConversation(conversation));
    socket.on("error", (e) => this.notify(e.message, "error"));
    socket.start();
    this.changed();
    await Promise.allSettled([this.loadFriends(), this.loadRequests(), this.loadConversations()]);
    void this.client.filesSupported().then((ok) => {
      this.filesSupported = ok;
      this.changed();
    });
  }

  // ---- loading ----

  async loadFriends(): Promise<void> {
    const friends = await this.client.friends();
    for (const f of friends) this.users.set(f.id, f);
    this.friends = friends.map((f) => f.id);
    await this.loadPresence(this.friends);
    this.changed();
  }

  async loadRequests(): Promise<void> {
    const [incoming, outgoing] = await Promise.all([this.client.friendRequests("incoming"), this.client.friendRequests("outgoing")]);
    this.incoming = incoming;
    this.outgoing = outgoing;
    await this.ensureUsers([...incoming.map((r) => r.from_user_id), ...outgoing.map((r) => r.to_user_id)]);
    this.changed();
  }

  async loadConversations(): Promise<void> {
    const list = await this.client.allConversations();
    this.conversations = new Map(list.map((c) => [c.id, this.mergeConversation(c)]));
    await this.ensureUsers(list.flatMap((c) => c.member_ids));
    this.changed();
  }

  async loadPresence(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    try {
      for (const p of await this.client.presence(ids)) this.presence.set(p.user_id, p.online);
    } catch {
      // presence is decoration
    }
  }

  private async refreshAfterSync(): Promise<void> {
    await Promise.allSettled([this.loadConversations(), this.loadFriends(), this.loadRequests()]);
    if (this.active) void this.loadReceipts(this.active);
  }

  async ensureUsers(ids: string[]): Promise<void> {
    const missing = [...new Set(ids)].filter((id) => id && !this.users.has(id) && !this.userFetches.has(id));
    if (missing.length === 0) {
      await Promise.all(ids.map((id) => this.userFetches.get(id)).filter(Boolean));
      return;
    }
    const p = (async () => {
      try {
        for (let i = 0; i < missing.length; i += 100) {
          for (const u of await this.client.users(missing.slice(i, i + 100))) this.users.set(u.id, u);
        }
      } catch {
        // names fall back to ids
      } finally {
        for (const id of missing) this.userFetches.delete(id);
        this.changed();
      }
    })();
    for (const id of missing) this.userFetches.set(id, p);
    await p;
  }

  async ensureConversation(id: string): Promise<void> {
    if (this.conversations.has(id)) return;
    let p = this.convFetches.get(id);
    if (!p) {
      p = this.client
        .conversation(id)
        .then((c) => {
          this.upsertConversation(c);
          void this.ensureUsers(c.member_ids);
        })
        .catch(() => undefined)
        .finally(() => this.convFetches.delete(id));
      this.convFetches.set(id, p);
    }
    await p;
  }

  async loadReceipts(id: string): Promise<void> {
    try {
      const list = await this.client.receipts(id);
      const m = this.receiptsOf(id);
      for (const r of list) m.set(r.user_id, { delivered_seq: r.delivered_seq, read_seq: r.read_seq });
      this.changed();
    } catch {
      // shown when the next receipt frame arrives
    }
  }

  /** Loads the latest page, or the page before the oldest message held. */
  async loadHistory(id: string, older = false): Promise<void> {
    const socket = this.socket;
    if (!socket) return;
    const t = socket.timelines.get(id);
    const limit = 50;
    const before = older && t.size > 0 ? t.first : undefined;
    if (older && before !== undefined && before <= 1) {
      this.historyDone.add(id);
      this.changed();
      return;
    }
    const page = await this.client.messages(id, before !== undefined ? { before_seq: before, limit } : { limit });
    socket.addHistory(page);
    this.historyLoaded.add(id);
    if (page.length < limit || (page[0]?.seq ?? 1) <= 1) this.historyDone.add(id);
    this.changed();
  }

  /** Pages back until `seq` is held (a search hit), at most ~2000 messages. */
  async loadUntil(id: string, seq: number): Promise<boolean> {
    const socket = this.socket;
    if (!socket) return false;
    const t = socket.timelines.get(id);
    if (!this.historyLoaded.has(id)) await this.loadHistory(id);
    for (let i = 0; i < 40 && !t.has(seq) && !this.historyDone.has(id) && t.first > seq; i++) await this.loadHistory(id, true);
    return t.has(seq);
  }

  // ---- conversations ----

  private mergeConversation(c: Conversation): Conversation {
    const old = this.conversations.get(c.id);
    if (!old) return c;
    // keep the newest knowledge of seq/read state (frames may be ahead of REST)
    const last_seq = Math.max(old.last_seq, c.last_seq);
    const read_seq = Math.max(old.read_seq, c.read_seq);
    const last_message = (c.last_message?.seq ?? 0) >= (old.last_message?.seq ?? 0) ? c.last_message : old.last_message;
    return { ...c, last_seq, read_seq, last_message, unread_count: Math.max(0, last_seq - read_seq) };
  }

  upsertConversation(c: Conversation): void {
    if (this.me && !c.member_ids.includes(this.me.id)) {
      this.conversations.delete(c.id);
    } else {
      this.conversations.set(c.id, this.mergeConversation(c));
      void this.ensureUsers(c.member_ids);
    }
    this.changed();
  }

  sortedConversations(): Conversation[] {
    const key = (c: Conversation) => c.last_message?.created_at ?? c.updated_at ?? "";
    return [...this.conversations.values()].sort((a, b) => (key(b) > key(a) ? 1 : key(b) < key(a) ? -1 : b.last_seq - a.last_seq));
  }

  directWith(userId: string): Conversation | undefined {
    for (const c of this.conversations.values()) if (c.kind === "direct" && c.member_ids.includes(userId)) return c;
    return undefined;
  }

  title(c: Conversation): string {
    if (c.kind === "group") return c.name || "Group";
    const other = c.member_ids.find((id) => id !== this.me?.id) ?? this.me?.id ?? "";
    return this.displayName(other);
  }

  displayName(id: string): string {
    const u = this.users.get(id);
    if (!u) return id.slice(0, 8);
    return u.nickname ? `${u.nickname} (@${u.username})` : `@${u.username}`;
  }

  shortName(id: string): string {
    const u = this.users.get(id);
    return u ? u.nickname || u.username : id.slice(0, 8);
  }

  receiptsOf(id: string): Map<string, ReceiptState> {
    let m = this.receipts.get(id);
    if (!m) this.receipts.set(id, (m = new Map()));
    return m;
  }

  typingIn(id: string): string[] {
    const m = this.typing.get(id);
    if (!m) return [];
    const now = Date.now();
    return [...m].filter(([, until]) => until > now).map(([user]) => user);
  }

  private onMessage(message: Message, source: string): void {
    const id = message.conversation_id;
    const c = this.conversations.get(id);
    const mine = message.sender_id === this.me?.id;
    if (c) {
      const newer = message.seq >= c.last_seq;
      const last_seq = Math.max(c.last_seq, message.seq);
      const read_seq = mine ? Math.max(c.read_seq, message.seq) : c.read_seq;
      this.conversations.set(id, {
        ...c,
        last_seq,
        read_seq,
        last_message: newer ? message : c.last_message,
        unread_count: Math.max(0, last_seq - read_seq),
      });
    } else {
      void this.ensureConversation(id);
    }
    // someone's message reached this device
    if (!mine && (source === "live" || source === "sync")) this.socket?.delivered(id, message.seq);
    if (typeof message.client_msg_id === "string") this.pending.delete(message.client_msg_id);
    // a message ends its sender's typing indicator
    this.typing.get(id)?.delete(message.sender_id);
    if (id === this.active) this.markActiveRead();
    this.changed();
  }

  /** Marks the open conversation read up to its last message while the page is visible. */
  markActiveRead(): void {
    const id = this.active;
    if (!id || document.visibilityState === "hidden") return;
    if (this.readTimer !== undefined) return;
    this.readTimer = setTimeout(() => {
      this.readTimer = undefined;
      const c = this.active ? this.conversations.get(this.active) : undefined;
      if (!c || !this.socket) return;
      const last = Math.max(c.last_seq, this.socket.timelines.get(c.id).last);
      if (last > c.read_seq) {
        this.conversations.set(c.id, { ...c, read_seq: last, unread_count: Math.max(0, c.last_seq - last) });
        if (this.socket.state === "open") this.socket.read(c.id, last);
        else void this.client.markRead(c.id, last).catch(() => undefined);
        this.changed();
      }
    }, 150);
  }

  setActive(id: string | null): void {
    if (this.active === id) return;
    this.active = id;
    if (id) {
      void this.ensureConversation(id);
      void this.loadReceipts(id);
      if (!this.historyLoaded.has(id)) void this.loadHistory(id).catch((e) => this.notify(describeError(e), "error"));
      this.markActiveRead();
    }
    this.changed();
  }

  // ---- sending ----

  /** Sends a text (or file) message; resolves with the conversation id it landed in. */
  async send(target: { conversation_id?: string; to_user_id?: string }, content: string, file?: { msg_type: MsgType; file_id: string }): Promise<string | undefined> {
    const socket = this.socket;
    if (!socket) return undefined;
    const p: PendingMessage = {
      client_msg_id: newClientMsgId(),
      ...target,
      content,
      msg_type: file?.msg_type ?? "text",
      file_id: file?.file_id,
      state: "sending",
    };
    this.pending.set(p.client_msg_id, p);
    this.changed();
    try {
      const message = await socket.send({ ...target, content, client_msg_id: p.client_msg_id, msg_type: p.msg_type, file_id: p.file_id });
      this.pending.delete(p.client_msg_id);
      if (!this.conversations.has(message.conversation_id)) await this.ensureConversation(message.conversation_id);
      this.changed();
      return message.conversation_id;
    } catch (error) {
      this.pending.set(p.client_msg_id, { ...p, state: "failed", error: describeError(error) });
      this.changed();
      return undefined;
    }
  }

  pendingFor(target: { conversation_id?: string; to_user_id?: string }): PendingMessage[] {
    return [...this.pending.values()].filter((p) => (target.conversation_id ? p.conversation_id === target.conversation_id : p.to_user_id === target.to_user_id && !p.conversation_id));
  }

  retry(client_msg_id: string): void {
    const p = this.pending.get(client_msg_id);
    if (!p || !this.socket) return;
    this.pending.set(client_msg_id, { ...p, state: "sending", error: undefined });
    this.changed();
    this.socket
      .send({ conversation_id: p.conversation_id, to_user_id: p.to_user_id, content: p.content, client_msg_id, msg_type: p.msg_type, file_id: p.file_id })
      .then(() => {
        this.pending.delete(client_msg_id);
        this.changed();
      })
      .catch((error: unknown) => {
        this.pending.set(client_msg_id, { ...p, state: "failed", error: describeError(error) });
        this.changed();
      });
  }

  // ---- files ----

  async sendFile(conversation_id: string, file: File, existing?: UploadState): Promise<void> {
    const id = existing?.id ?? newClientMsgId();
    const state: UploadState = { id, conversation_id, file, sent: 0, total: file.size };
    this.uploads.set(id, state);
    this.changed();
    try {
      const result = await uploadFile(this.client, file, {
        onProgress: (sent, total) => {
          this.uploads.set(id, { ...state, sent, total });
          this.changed();
        },
      });
      this.uploads.delete(id);
      this.changed();
      await this.send({ conversation_id }, file.name || "file", { msg_type: msgTypeFor(file.type), file_id: result.fileId });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.filesSupported = false;
        this.uploads.delete(id);
        this.notify("This server does not accept files yet (the /files endpoints answer 404).", "error");
        return;
      }
      this.uploads.set(id, { ...state, sent: this.uploads.get(id)?.sent ?? 0, error: describeError(error) });
      this.changed();
    }
  }

  cancelUpload(id: string): void {
    this.uploads.delete(id);
    this.changed();
  }
}
