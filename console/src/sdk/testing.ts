// Test doubles for the SDK's unit tests (never used by the console itself).

import type { WebSocketLike } from "./socket";

export interface Call {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: unknown;
}

export type Route = (call: Call) => Response | Promise<Response>;

/** A fetch that records calls and answers from `route`. */
export function fakeFetch(route: Route): { fetch: typeof fetch; calls: Call[] } {
  const calls: Call[] = [];
  const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const headers: Record<string, string> = {};
    new Headers(init?.headers).forEach((v, k) => (headers[k] = v));
    const raw = init?.body;
    const call: Call = {
      method: init?.method ?? "GET",
      url: String(input),
      headers,
      body: typeof raw === "string" ? JSON.parse(raw) : raw,
    };
    calls.push(call);
    return route(call);
  }) as typeof fetch;
  return { fetch: fetchImpl, calls };
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

export function apiError(status: number, code: string, message = code): Response {
  return json(status, { error: { code, message } });
}

/** An unsigned JWT-shaped token whose payload carries `sub`. */
export function fakeJwt(sub: string, n = 0): string {
  const b64 = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "EdDSA", kid: "k" })}.${b64({ sub, sid: "s", jti: String(n) })}.sig`;
}

/** A controllable WebSocket. */
export class FakeSocket implements WebSocketLike {
  readyState = 0;
  sent: Array<{ type: string; id?: string; data: Record<string, unknown> }> = [];
  closedWith: { code?: number; reason?: string } | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;

  constructor(readonly url: string, readonly protocols?: string[]) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(data));
  }
  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }
  // server side
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  sentOf(type: string) {
    return this.sent.filter((f) => f.type === type);
  }
}

export function socketFactory(): { factory: (url: string, protocols?: string[]) => FakeSocket; sockets: FakeSocket[] } {
  const sockets: FakeSocket[] = [];
  return {
    sockets,
    factory: (url, protocols) => {
      const s = new FakeSocket(url, protocols);
      sockets.push(s);
      return s;
    },
  };
}
