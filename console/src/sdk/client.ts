// The REST side of the SDK: every call of API.md under /api/v1, with the error shape,
// the access token kept fresh with the refresh token, and the session's end reported once.

import { Emitter } from "./emitter";
import { ApiError, NetworkError, SessionEndedError } from "./errors";
import type {
  AuthResult, Conversation, FileMeta, FriendRequest, Message, Presence, Receipt,
  SearchHit, SendInput, Tokens, User,
} from "./types";
import { newClientMsgId } from "./ids";

/** Where the tokens live between page loads (and are shared between tabs). */
export interface TokenStore {
  load(): Tokens | null;
  save(tokens: Tokens | null): void;
}

/** Keeps tokens in memory only. */
export class MemoryTokenStore implements TokenStore {
  private tokens: Tokens | null = null;
  load(): Tokens | null { return this.tokens; }
  save(tokens: Tokens | null): void { this.tokens = tokens; }
}

/** Keeps tokens in `localStorage` (so every tab of the browser shares one session). */
export class LocalStorageTokenStore implements TokenStore {
  constructor(private key = "beehive.tokens", private storage: Storage = globalThis.localStorage) {}
  load(): Tokens | null {
    try {
      const raw = this.storage.getItem(this.key);
      if (!raw) return null;
      const t = JSON.parse(raw) as Partial<Tokens>;
      if (typeof t.access_token !== "string" || typeof t.refresh_token !== "string" || typeof t.expires_at !== "number") return null;
      return t as Tokens;
    } catch {
      return null;
    }
  }
  save(tokens: Tokens | null): void {
    try {
      if (tokens) this.storage.setItem(this.key, JSON.stringify(tokens));
      else this.storage.removeItem(this.key);
    } catch {
      // storage full or disabled: the session lives in memory only
    }
  }
}

/** Runs `fn` exclusively among every tab of the origin (Web Locks), or directly. */
export type Lock = <T>(name: string, fn: () => Promise<T>) => Promise<T>;

export const webLock: Lock = (name, fn) => {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  return locks ? (locks.request(name, fn) as Promise<Awaited<ReturnType<typeof fn>>>) : fn();
};

export interface ClientOptions {
  /** Origin of the gateway, e.g. `https://chat.example.com`; empty means this page's origin. */
  baseUrl?: string;
  fetch?: typeof fetch;
  store?: TokenStore;
  lock?: Lock;
  /** Refresh this long before the access token expires (default: 60 s, at most a fifth of its lifetime). */
  refreshMarginMs?: number;
  now?: () => number;
}

export interface ClientEvents extends Record<string, unknown> {
  /** The tokens changed (sign in, refresh); null after sign out. */
  tokens: Tokens | null;
  /** The session ended without the user signing out here (revoked, refresh refused). */
  ended: { reason: string };
}

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | undefined | null>;
  auth?: boolean;
  signal?: AbortSignal;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export class BeehiveClient extends Emitter<ClientEvents> {
  readonly baseUrl: string;
  private readonly fetchImpl: typeof fetch;
  private readonly store: TokenStore;
  private readonly lock: Lock;
  private readonly margin: number;
  private readonly now: () => number;
  private tokens: Tokens | null;
  private refreshing: Promise<Tokens> | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ClientOptions = {}) {
    super();
    this.baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
    const f = options.fetch ?? globalThis.fetch;
    this.fetchImpl = (input, init) => f(input, init);
    this.store = options.store ?? new MemoryTokenStore();
    this.lock = options.lock ?? ((_, fn) => fn());
    this.margin = options.refreshMarginMs ?? 60_000;
    this.now = options.now ?? Date.now;
    this.tokens = this.store.load();
    this.schedule();
  }

  /** Whether a session is held (its access token may need a refresh). */
  get signedIn(): boolean {
    return this.tokens !== null;
  }

  /** The user id of the held session (the access token's `sub`), if any. */
  get userId(): string | null {
    return this.tokens ? tokenSubject(this.tokens.access_token) : null;
  }

  /** Another tab changed the stored tokens: adopt them (or the sign-out). */
  reloadTokens(): void {
    const stored = this.store.load();
    if (stored?.refresh_token === this.tokens?.refresh_token) return;
    this.tokens = stored;
    this.schedule();
    this.emit("tokens", stored);
  }

  url(path: string, query?: RequestOptions["query"]): string {
    let url = `${this.baseUrl}/api/v1${path}`;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    return url;
  }

  /** A valid access token, refreshed first when it expires within the margin. */
  async accessToken(): Promise<string> {
    const tokens = this.tokens;
    if (!tokens) throw new SessionEndedError("signed_out");
    if (tokens.expires_at - this.now() > this.marginFor(tokens)) return tokens.access_token;
    return (await this.refresh()).access_token;
  }

  /** Rotates the refresh token once, however many callers ask at the same time. */
  refresh(): Promise<Tokens> {
    if (!this.refreshing) {
      this.refreshing = this.lock("beehive.refresh", () => this.doRefresh()).finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  private async doRefresh(): Promise<Tokens> {
    const mine = this.tokens;
    if (!mine) throw new SessionEndedError("signed_out");
    // Another tab may have rotated the shared refresh token while we waited for the
    // lock: presenting the old one again would revoke the whole session.
    const stored = this.store.load();
    if (stored && stored.refresh_token !== mine.refresh_token) {
      this.setTokens(stored);
      if (stored.expires_at - this.now() > this.marginFor(stored)) return stored;
    } else if (!stored && this.tokens) {
      // signed out in another tab
      this.endSession("signed_out");
      throw new SessionEndedError("signed_out");
    }
    const current = this.tokens as Tokens;
    let response: Response;
    try {
      response = await this.fetchImpl(this.url("/auth/refresh"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: current.refresh_token }),
      });
    } catch (error) {
      throw new NetworkError("cannot reach the server to refresh the session", error);
    }
    if (response.status === 401 || response.status === 400) {
      const error = await ApiError.from(response);
      this.endSession("session_revoked");
      throw new SessionEndedError(error.message);
    }
    if (!response.ok) throw await ApiError.from(response);
    const body = (await response.json()) as { access_token: string; refresh_token: string; expires_in: number };
    const tokens = this.toTokens(body);
    this.setTokens(tokens);
    return tokens;
  }

  private marginFor(tokens: Tokens): number {
    // Never more than a fifth of the token's remaining life at issue (short TTLs in tests).
    return Math.min(this.margin, Math.max(0, (tokens.expires_at - (tokens.issued_at ?? tokens.expires_at)) / 5) || this.margin);
  }

  private toTokens(body: { access_token: string; refresh_token: string; expires_in: number }): Tokens {
    const now = this.now();
    return {
      access_token: body.access_token,
      refresh_token: body.refresh_token,
      expires_at: now + Math.max(0, body.expires_in) * 1000,
      issued_at: now,
    };
  }

  private setTokens(tokens: Tokens | null): void {
    this.tokens = tokens;
    this.store.save(tokens);
    this.schedule();
    this.emit("tokens", tokens);
  }

  private schedule(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const tokens = this.tokens;
    if (!tokens) return;
    const delay = Math.max(0, tokens.expires_at - this.marginFor(tokens) - this.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.refresh().catch((error: unknown) => {
        if (error instanceof SessionEndedError) return;
        // offline or the server is restarting: try again soon
        if (this.tokens && this.timer === undefined) this.timer = setTimeout(() => this.schedule(), 5_000);
      });
    }, Math.min(delay, 2_147_000_000));
  }

  /** Forgets the session and reports why (the UI shows "session revoked" and the like). */
  endSession(reason: string): void {
    if (!this.tokens) return;
    this.setTokens(null);
    this.emit("ended", { reason });
  }

  /** One REST call; 204 gives `undefined`. A 401 refreshes once and retries. */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.raw(method, path, options);
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** Like {@link request} but returns the successful Response itself. */
  async raw(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const auth = options.auth ?? true;
    const send = async (token?: string): Promise<Response> => {
      const headers: Record<string, string> = {};
      if (options.body !== undefined) headers["Content-Type"] = "application/json";
      if (token) headers.Authorization = `Bearer ${token}`;
      try {
        return await this.fetchImpl(this.url(path, options.query), {
          method,
          headers,
          body: options.body === undefined ? undefined : JSON.stringify(options.body),
          signal: options.signal,
        });
      } catch (error) {
        if ((error as { name?: string })?.name === "AbortError") throw error;
        throw new NetworkError(`cannot reach the server (${method} ${path})`, error);
      }
    };
    let response = await send(auth ? await this.accessToken() : undefined);
    if (auth && response.status === 401) {
      const tokens = await this.refresh();
      response = await send(tokens.access_token);
      if (response.status === 401) {
        this.endSession("session_revoked");
        throw await ApiError.from(response);
      }
    }
    if (!response.ok) throw await ApiError.from(response);
    return response;
  }

  // ---- auth ----

  sendCode(email: string): Promise<void> {
    return this.request("POST", "/auth/send-code", { body: { email }, auth: false });
  }

  async register(input: { username: string; password: string; email?: string; code?: string; nickname?: string }): Promise<User> {
    const body = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined && v !== ""));
    const result = await this.request<AuthResult>("POST", "/auth/register", { body, auth: false });
    this.setTokens(this.toTokens(result));
    return result.user;
  }

  async login(login: string, password: string): Promise<User> {
    const result = await this.request<AuthResult>("POST", "/auth/login", { body: { login, password }, auth: false });
    this.setTokens(this.toTokens(result));
    return result.user;
  }

  /** Revokes the session on the server (best effort) and forgets it here. */
  async logout(): Promise<void> {
    const tokens = this.tokens;
    if (!tokens) return;
    try {
      if (tokens.expires_at > this.now()) {
        await this.fetchImpl(this.url("/auth/logout"), {
          method: "POST",
          headers: { Authorization: `Bearer ${tokens.access_token}`, "Content-Type": "application/json" },
          body: JSON.stringify({ refresh_token: tokens.refresh_token }),
        });
      }
    } catch {
      // offline: the tokens are forgotten anyway
    } finally {
      this.setTokens(null);
    }
  }

  // ---- users ----

  async me(): Promise<User> {
    return (await this.request<{ user: User }>("GET", "/users/me")).user;
  }
  async updateMe(patch: { nickname?: string; avatar?: string; description?: string }): Promise<User> {
    return (await this.request<{ user: User }>("PATCH", "/users/me", { body: patch })).user;
  }
  changePassword(old_password: string, new_password: string): Promise<void> {
    return this.request("POST", "/users/me/password", { body: { old_password, new_password } });
  }
  async user(id: string): Promise<User> {
    return (await this.request<{ user: User }>("GET", `/users/${encodeURIComponent(id)}`)).user;
  }
  async users(ids: string[]): Promise<User[]> {
    if (ids.length === 0) return [];
    return (await this.request<{ users: User[] }>("GET", "/users", { query: { ids: ids.join(",") } })).users;
  }
  async searchUsers(q: string): Promise<User[]> {
    return (await this.request<{ users: User[] }>("GET", "/users/search", { query: { q } })).users;
  }

  // ---- friends ----

  async sendFriendRequest(to_user_id: string, message?: string): Promise<FriendRequest> {
    return (await this.request<{ request: FriendRequest }>("POST", "/friends/requests", { body: { to_user_id, message } })).request;
  }
  async friendRequests(direction: "incoming" | "outgoing"): Promise<FriendRequest[]> {
    return (await this.request<{ requests: FriendRequest[] }>("GET", "/friends/requests", { query: { direction } })).requests;
  }
  async acceptFriendRequest(id: string): Promise<User> {
    return (await this.request<{ friend: User }>("POST", `/friends/requests/${encodeURIComponent(id)}/accept`)).friend;
  }
  rejectFriendRequest(id: string): Promise<void> {
    return this.request("POST", `/friends/requests/${encodeURIComponent(id)}/reject`);
  }
  async friends(): Promise<User[]> {
    return (await this.request<{ friends: User[] }>("GET", "/friends")).friends;
  }
  removeFriend(userId: string): Promise<void> {
    return this.request("DELETE", `/friends/${encodeURIComponent(userId)}`);
  }

  // ---- conversations and groups ----

  async createGroup(name: string, member_ids: string[]): Promise<Conversation> {
    return (await this.request<{ conversation: Conversation }>("POST", "/groups", { body: { name, member_ids } })).conversation;
  }
  async updateGroup(id: string, patch: { name?: string; avatar?: string }): Promise<Conversation> {
    return (await this.request<{ conversation: Conversation }>("PATCH", `/groups/${encodeURIComponent(id)}`, { body: patch })).conversation;
  }
  async addMembers(id: string, user_ids: string[]): Promise<Conversation> {
    return (await this.request<{ conversation: Conversation }>("POST", `/groups/${encodeURIComponent(id)}/members`, { body: { user_ids } })).conversation;
  }
  removeMember(id: string, userId: string): Promise<void> {
    return this.request("DELETE", `/groups/${encodeURIComponent(id)}/members/${encodeURIComponent(userId)}`);
  }
  async conversations(options: { limit?: number; cursor?: string | null } = {}): Promise<Page<Conversation>> {
    const r = await this.request<{ conversations: Conversation[]; next_cursor: string | null }>("GET", "/conversations", {
      query: { limit: options.limit, cursor: options.cursor },
    });
    return { items: r.conversations, next_cursor: r.next_cursor ?? null };
  }
  /** Every conversation, following the cursors. */
  async allConversations(): Promise<Conversation[]> {
    const all: Conversation[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 100; i++) {
      const page: Page<Conversation> = await this.conversations({ limit: 200, cursor });
      all.push(...page.items);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    return all;
  }
  async conversation(id: string): Promise<Conversation> {
    return (await this.request<{ conversation: Conversation }>("GET", `/conversations/${encodeURIComponent(id)}`)).conversation;
  }
  async messages(id: string, options: { after_seq?: number; before_seq?: number; limit?: number } = {}): Promise<Message[]> {
    return (await this.request<{ messages: Message[] }>("GET", `/conversations/${encodeURIComponent(id)}/messages`, { query: options })).messages;
  }
  async receipts(id: string): Promise<Receipt[]> {
    return (await this.request<{ receipts: Receipt[] }>("GET", `/conversations/${encodeURIComponent(id)}/receipts`)).receipts;
  }
  markRead(id: string, seq: number): Promise<void> {
    return this.request("POST", `/conversations/${encodeURIComponent(id)}/read`, { body: { seq } });
  }
  async sendMessage(input: SendInput): Promise<Message> {
    const body = { msg_type: "text", ...input, client_msg_id: input.client_msg_id ?? newClientMsgId() };
    return (await this.request<{ message: Message }>("POST", "/messages", { body })).message;
  }

  // ---- presence and search ----

  async presence(userIds: string[]): Promise<Presence[]> {
    if (userIds.length === 0) return [];
    return (await this.request<{ presence: Presence[] }>("GET", "/presence", { query: { user_ids: userIds.join(",") } })).presence;
  }
  async searchMessages(q: string, options: { conversation_id?: string; sender_id?: string; from?: string; to?: string; order?: "recent" | "relevance"; limit?: number; cursor?: string | null } = {}): Promise<{ hits: SearchHit[]; next_cursor: string | null }> {
    const r = await this.request<{ hits: SearchHit[]; next_cursor: string | null }>("GET", "/search/messages", { query: { q, ...options } });
    return { hits: r.hits, next_cursor: r.next_cursor ?? null };
  }

  // ---- files (see files.ts for uploads) ----

  /** Whether this gateway serves files: tus answers OPTIONS with `Tus-Version`. */
  async filesSupported(): Promise<boolean> {
    try {
      const response = await this.fetchImpl(this.url("/files/uploads"), { method: "OPTIONS", headers: { "Tus-Resumable": "1.0.0" } });
      return response.ok && response.headers.get("tus-version") !== null;
    } catch {
      return false;
    }
  }
  /** Instant upload: the caller's own file for already stored content, or null (404). */
  async checkFile(input: { sha256: string; size: number; filename?: string; content_type?: string }): Promise<FileMeta | null> {
    try {
      return (await this.request<{ file: FileMeta }>("POST", "/files/check", { body: input })).file;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return null;
      throw error;
    }
  }
  async fileMeta(id: string): Promise<FileMeta> {
    return (await this.request<{ file: FileMeta }>("GET", `/files/${encodeURIComponent(id)}/meta`)).file;
  }
  /** The file's bytes (or its thumbnail) as a Blob; use URL.createObjectURL to show it. */
  async fileBlob(id: string, thumbnail?: "small" | "medium"): Promise<Blob> {
    const path = thumbnail ? `/files/${encodeURIComponent(id)}/thumbnail` : `/files/${encodeURIComponent(id)}`;
    const response = await this.raw("GET", path, { query: thumbnail ? { size: thumbnail } : undefined });
    return response.blob();
  }
  deleteFile(id: string): Promise<void> {
    return this.request("DELETE", `/files/${encodeURIComponent(id)}`);
  }
}

/** The `sub` claim of a JWT, without verifying it (the server does). */
export function tokenSubject(token: string): string | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === "string" ? sub : null;
  } catch {
    return null;
  }
}
