// The WebSocket side of the SDK: one live connection per device that reconnects with
// backoff, honours the server's `reconnect {after_ms}`, calls `sync` after every
// (re)connect and hands every message on exactly once (de-duplicated by
// conversation and seq), re-sends unacknowledged messages with their client_msg_id
// (the server stores each once), and reports a kicked session.

import type { BeehiveClient } from "./client";
import { Emitter } from "./emitter";
import { ApiError, SessionEndedError } from "./errors";
import { newClientMsgId } from "./ids";
import { Timelines } from "./timeline";
import type { Conversation, FriendRequest, KickReason, Message, SendInput, ServerFrame } from "./types";

/** The part of the browser's WebSocket the SDK uses (tests pass a fake). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketFactory = (url: string, protocols?: string[]) => WebSocketLike;

export type SocketState =
  | "idle" // not started
  | "connecting" // first connection attempt
  | "open" // connected (and syncing or synced)
  | "reconnecting" // lost, waiting for the next attempt
  | "offline" // the browser reports no network; waiting for it
  | "kicked" // the session was revoked; no more attempts
  | "closed"; // stopped by the application

export interface SocketOptions {
  /** Default: the browser's WebSocket. */
  webSocket?: WebSocketFactory;
  /** Sent as `device_id`; several devices of a user each get every frame. */
  deviceId?: string;
  /** How the token travels: `subprotocol` (default, keeps it out of URLs) or `query`. */
  tokenIn?: "subprotocol" | "query";
  /** Backoff between attempts: initial delay, cap, growth factor, +/- jitter fraction. */
  backoff?: { initialMs?: number; maxMs?: number; factor?: number; jitter?: number };
  /** Client pings this often; a connection silent for `pongTimeoutMs` after a ping is dropped. */
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  /** Where messages are de-duplicated; share it with history loading. */
  timelines?: Timelines;
  random?: () => number;
  /** Page origin for a relative client (default: `location`). */
  location?: { protocol: string; host: string };
}

export type MessageSource = "live" | "sync" | "ack" | "history";

export interface SocketEvents extends Record<string, unknown> {
  state: { state: SocketState; retryInMs?: number; attempt: number };
  /** A message seen for the first time. */
  message: { message: Message; source: MessageSource };
  receipt: { conversation_id: string; user_id: string; delivered_seq: number; read_seq: number };
  typing: { conversation_id: string; user_id: string };
  presence: { user_id: string; online: boolean };
  friend_request: { request: FriendRequest };
  friend_accepted: { request: FriendRequest };
  conversation_updated: { conversation: Conversation };
  /** Every `sync` round after a (re)connect finished. */
  synced: { cursors: Record<string, number> };
  kicked: { reason: KickReason };
  /** An `error` frame not tied to a pending request. */
  error: { code: string; message: string };
}

interface Pending {
  frame: { type: "send"; id: string; data: SendInput & { client_msg_id: string; msg_type: string } };
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
}

const OPEN = 1;

export class BeehiveSocket extends Emitter<SocketEvents> {
  readonly timelines: Timelines;
  private ws: WebSocketLike | null = null;
  private stateValue: SocketState = "idle";
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  private pending = new Map<string, Pending>();
  private nextDelayOverride: number | null = null;
  private syncSeq = 0;
  private frameSeq = 0;
  private failuresSinceOpen = 0;
  private readonly opts: Required<Omit<SocketOptions, "deviceId" | "timelines" | "location" | "backoff">> & {
    backoff: Required<NonNullable<SocketOptions["backoff"]>>;
  };

  constructor(private client: BeehiveClient, private options: SocketOptions = {}) {
    super();
    this.timelines = options.timelines ?? new Timelines();
    this.opts = {
      webSocket: options.webSocket ?? ((url, protocols) => new WebSocket(url, protocols) as unknown as WebSocketLike),
      tokenIn: options.tokenIn ?? "subprotocol",
      backoff: { initialMs: 500, maxMs: 15_000, factor: 2, jitter: 0.2, ...options.backoff },
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      random: options.random ?? Math.random,
    };
  }

  get state(): SocketState {
    return this.stateValue;
  }

  /** Connects (once); later drops reconnect by themselves until {@link close}. */
  start(): void {
    if (this.stateValue !== "idle" && this.stateValue !== "closed") return;
    this.setState("connecting");
    void this.connect();
  }

  /** Stops for good (sign out): no more attempts; pending sends fail. */
  close(): void {
    this.clearTimers();
    this.dropSocket(1000, "closing");
    this.failPending(new Error("the connection was closed"));
    this.setState("closed");
  }

  /** The browser lost its network: drop the socket now instead of waiting for timeouts. */
  networkDown(): void {
    if (this.stateValue === "kicked" || this.stateValue === "closed" || this.stateValue === "idle") return;
    this.clearTimers();
    this.dropSocket(4000, "offline");
    this.setState("offline");
  }

  /** The network is back: reconnect at once. */
  networkUp(): void {
    if (this.stateValue !== "offline" && this.stateValue !== "reconnecting") return;
    this.clearTimers();
    this.attempt = 0;
    this.setState("reconnecting", 0);
    void this.connect();
  }

  /**
   * Sends a message; resolves with the stored message once the server acknowledged it.
   * While disconnected the message waits and is sent after the reconnect.
   */
  send(input: SendInput): Promise<Message> {
    const client_msg_id = input.client_msg_id ?? newClientMsgId();
    const data = { ...input, client_msg_id, msg_type: input.msg_type ?? "text" };
    return new Promise<Message>((resolve, reject) => {
      if (this.stateValue === "kicked" || this.stateValue === "closed") {
        reject(new Error("not connected"));
        return;
      }
      const pending: Pending = { frame: { type: "send", id: `send:${client_msg_id}`, data }, resolve, reject };
      this.pending.set(pending.frame.id, pending);
      if (this.isOpen()) this.write(pending.frame);
    });
  }

  /** Fire-and-forget frames; dropped while disconnected. */
  typing(conversation_id: string): void {
    this.writeIfOpen({ type: "typing", data: { conversation_id } });
  }
  delivered(conversation_id: string, seq: number): void {
    this.writeIfOpen({ type: "delivered", data: { conversation_id, seq } });
  }
  read(conversation_id: string, seq: number): void {
    this.writeIfOpen({ type: "read", data: { conversation_id, seq } });
  }

  /** Adds history loaded over REST, so later live/sync copies are recognised. */
  addHistory(messages: Message[]): Message[] {
    const fresh: Message[] = [];
    for (const m of messages) if (this.timelines.add(m)) fresh.push(m);
    for (const m of fresh) this.emit("message", { message: m, source: "history" });
    return fresh;
  }

  // ---- connection ----

  private isOpen(): boolean {
    return this.ws !== null && this.ws.readyState === OPEN && this.stateValue === "open";
  }

  private async connect(): Promise<void> {
    let token: string;
    try {
      // After repeated failures the upgrade may be refused (401) for a revoked
      // session; a forced refresh tells that apart from a network problem.
      token = this.failuresSinceOpen >= 2 ? (await this.client.refresh()).access_token : await this.client.accessToken();
    } catch (error) {
      if (error instanceof SessionEndedError) {
        this.kicked("session_revoked");
        return;
      }
      this.scheduleReconnect();
      return;
    }
    if (this.stateValue === "closed" || this.stateValue === "kicked" || this.stateValue === "offline") return;
    const { url, protocols } = this.endpoint(token);
    let ws: WebSocketLike;
    try {
      ws = this.opts.webSocket(url, protocols);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.failuresSinceOpen = 0;
      this.setState("open");
      this.startPing();
      this.sync({});
      for (const p of this.pending.values()) this.write(p.frame);
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.gotActivity();
      if (typeof ev.data !== "string") return;
      let frame: ServerFrame;
      try {
        frame = JSON.parse(ev.data) as ServerFrame;
      } catch {
        return;
      }
      this.handle(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopPing();
      if (ev.code === 4001) {
        this.kicked("session_revoked");
        return;
      }
      this.failuresSinceOpen++;
      this.scheduleReconnect();
    };
    ws.onerror = () => {
      // onclose follows
    };
  }

  private endpoint(token: string): { url: string; protocols?: string[] } {
    let base = this.client.baseUrl;
    if (!base) {
      const loc = this.options.location ?? globalThis.location;
      base = `${loc.protocol}//${loc.host}`;
    }
    const url = new URL("/ws", base.replace(/^http/, "ws"));
    if (this.options.deviceId) url.searchParams.set("device_id", this.options.deviceId);
    if (this.opts.tokenIn === "query") {
      url.searchParams.set("token", token);
      return { url: url.toString() };
    }
    return { url: url.toString(), protocols: ["beehive.v1", `bearer.${token}`] };
  }

  private scheduleReconnect(): void {
    if (this.stateValue === "closed" || this.stateValue === "kicked" || this.stateValue === "offline") return;
    this.clearTimers();
    let delay: number;
    if (this.nextDelayOverride !== null) {
      delay = this.nextDelayOverride;
      this.nextDelayOverride = null;
    } else {
      const { initialMs, maxMs, factor, jitter } = this.opts.backoff;
      const base = Math.min(maxMs, initialMs * factor ** this.attempt);
      delay = Math.round(base * (1 - jitter + 2 * jitter * this.opts.random()));
      this.attempt++;
    }
    this.setState("reconnecting", delay);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.connect();
    }, delay);
  }

  private kicked(reason: KickReason): void {
    this.clearTimers();
    this.dropSocket(1000, "kicked");
    this.failPending(new SessionEndedError(reason));
    this.setState("kicked");
    this.emit("kicked", { reason });
    this.client.endSession(reason);
  }

  private dropSocket(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = null;
    this.stopPing();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = null;
      ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch {
        // already closed
      }
    }
  }

  private setState(state: SocketState, retryInMs?: number): void {
    this.stateValue = state;
    this.emit("state", { state, retryInMs, attempt: this.attempt });
  }

  private clearTimers(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private startPing(): void {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      if (!this.isOpen()) return;
      this.write({ type: "ping", id: `ping:${++this.frameSeq}`, data: {} });
      if (this.pongTimer === undefined) {
        this.pongTimer = setTimeout(() => {
          this.pongTimer = undefined;
          // silent too long: the connection is dead even if the browser has not noticed
          this.dropSocket(4000, "no pong");
          this.failuresSinceOpen++;
          this.scheduleReconnect();
        }, this.opts.pongTimeoutMs);
      }
    }, this.opts.pingIntervalMs);
  }

  private stopPing(): void {
    if (this.pingTimer !== undefined) clearInterval(this.pingTimer);
    if (this.pongTimer !== undefined) clearTimeout(this.pongTimer);
    this.pingTimer = undefined;
    this.pongTimer = undefined;
  }

  private gotActivity(): void {
    if (this.pongTimer !== undefined) clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
  }

  private failPending(error: Error): void {
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }

  private write(frame: unknown): void {
    try {
      this.ws?.send(JSON.stringify(frame));
    } catch {
      // closing; onclose will reconnect and re-send pending frames
    }
  }

  private writeIfOpen(frame: unknown): void {
    if (this.isOpen()) this.write(frame);
  }

  private sync(serverCursors: Record<string, number>): void {
    const cursors: Record<string, number> = { ...serverCursors };
    for (const [id, seq] of Object.entries(this.timelines.cursors())) cursors[id] = Math.max(cursors[id] ?? 0, seq);
    this.write({ type: "sync", id: `sync:${++this.syncSeq}`, data: { cursors } });
  }

  // ---- frames ----

  private accept(message: Message, source: MessageSource): void {
    if (this.timelines.add(message)) this.emit("message", { message, source });
  }

  private handle(frame: ServerFrame): void {
    switch (frame.type) {
      case "message":
        this.accept(frame.data.message, "live");
        break;
      case "ack": {
        const pending = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
        if (pending) this.pending.delete(frame.id as string);
        this.accept(frame.data.message, "ack");
        pending?.resolve(frame.data.message);
        break;
      }
      case "error": {
        const pending = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
        if (pending) {
          this.pending.delete(frame.id as string);
          pending.reject(new ApiError(0, frame.data.code, frame.data.message));
        } else {
          this.emit("error", frame.data);
        }
        break;
      }
      case "sync_done":
        if (frame.data.has_more) {
          this.sync(frame.data.cursors);
        } else {
          this.attempt = 0;
          this.emit("synced", { cursors: frame.data.cursors });
        }
        break;
      case "reconnect":
        // The gateway is draining: reconnect (to any gateway) after about after_ms.
        this.nextDelayOverride = Math.max(0, Number(frame.data.after_ms) || 0) + Math.round(this.opts.random() * 250);
        break;
      case "kicked":
        this.kicked(frame.data.reason);
        break;
      case "receipt":
      case "typing":
      case "presence":
      case "friend_request":
      case "friend_accepted":
      case "conversation_updated":
        this.emit(frame.type, frame.data as never);
        break;
      default:
        break; // pong and frame types added later
    }
  }
}
