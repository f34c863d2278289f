import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { BeehiveClient, MemoryTokenStore, tokenSubject } from "./client";
import { ApiError, NetworkError, SessionEndedError } from "./errors";
import { apiError, fakeFetch, fakeJwt, json } from "./testing";
import type { Tokens } from "./types";

const user = { id: "u1", username: "alice", nickname: "", avatar: "", description: "", created_at: "2026-01-01T00:00:00Z" };

function auth(n: number, expires_in = 900) {
  return { user, access_token: fakeJwt("u1", n), refresh_token: `r${n}`, expires_in };
}

describe("BeehiveClient", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("logs in, sends the bearer token and decodes API errors", async () => {
    const { fetch, calls } = fakeFetch((c) => {
      if (c.url.endsWith("/auth/login")) return json(200, auth(1));
      if (c.url.endsWith("/users/me")) return json(200, { user });
      return apiError(403, "permission_denied", "not your conversation");
    });
    const client = new BeehiveClient({ baseUrl: "http://gw/", fetch });
    expect(await client.login("alice", "password-1")).toEqual(user);
    expect(client.userId).toBe("u1");
    expect(calls[0].body).toEqual({ login: "alice", password: "password-1" });
    expect(calls[0].headers.authorization).toBeUndefined();
    await client.me();
    expect(calls[1].url).toBe("http://gw/api/v1/users/me");
    expect(calls[1].headers.authorization).toBe(`Bearer ${fakeJwt("u1", 1)}`);
    const error = await client.conversation("c1").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 403, code: "permission_denied", message: "not your conversation" });
  });

  it("derives a code from the status when the body is not API.md's shape", async () => {
    const { fetch } = fakeFetch(() => new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }));
    const client = new BeehiveClient({ fetch });
    const error = (await client.searchUsers("a").catch((e: unknown) => e)) as ApiError;
    // no session: nothing is sent at all
    expect(error).toBeInstanceOf(SessionEndedError);
    const store = new MemoryTokenStore();
    store.save({ access_token: fakeJwt("u1"), refresh_token: "r", expires_at: Date.now() + 600_000 });
    const signedIn = new BeehiveClient({ fetch, store });
    const e2 = (await signedIn.searchUsers("a").catch((e: unknown) => e)) as ApiError;
    expect(e2).toMatchObject({ status: 502, code: "internal", message: "Bad Gateway" });
  });

  it("reads Retry-After of 429", async () => {
    const { fetch } = fakeFetch(() => json(429, { error: { code: "rate_limited", message: "slow down" } }, { "Retry-After": "7" }));
    const client = new BeehiveClient({ fetch });
    const e = (await client.login("a", "b").catch((x: unknown) => x)) as ApiError;
    expect(e.code).toBe("rate_limited");
    expect(e.retryAfter).toBe(7);
  });

  it("wraps transport failures in NetworkError", async () => {
    const client = new BeehiveClient({ fetch: () => Promise.reject(new TypeError("Failed to fetch")) });
    await expect(client.login("a", "b")).rejects.toBeInstanceOf(NetworkError);
  });

  it("refreshes the access token before it expires, once for concurrent callers", async () => {
    let n = 1;
    const { fetch, calls } = fakeFetch((c) => {
      if (c.url.endsWith("/auth/login")) return json(200, auth(1, 300));
      if (c.url.endsWith("/auth/refresh")) {
        n++;
        return json(200, { access_token: fakeJwt("u1", n), refresh_token: `r${n}`, expires_in: 300 });
      }
      return json(200, { friends: [] });
    });
    const client = new BeehiveClient({ fetch });
    await client.login("alice", "pw");
    // 300 s token, 60 s margin: the timer refreshes at 240 s
    await vi.advanceTimersByTimeAsync(239_000);
    expect(calls.filter((c) => c.url.endsWith("/auth/refresh"))).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(2_000);
    const refreshes = calls.filter((c) => c.url.endsWith("/auth/refresh"));
    expect(refreshes).toHaveLength(1);
    expect(refreshes[0].body).toEqual({ refresh_token: "r1" });
    // a token close to expiry is refreshed before use, once for parallel requests
    vi.setSystemTime(Date.now() + 250_000);
    await Promise.all([client.friends(), client.friends(), client.friends()]);
    const after = calls.filter((c) => c.url.endsWith("/auth/refresh"));
    expect(after).toHaveLength(2);
    expect(after[1].body).toEqual({ refresh_token: "r2" });
    const used = calls.filter((c) => c.url.endsWith("/friends")).map((c) => c.headers.authorization);
    expect(new Set(used)).toEqual(new Set([`Bearer ${fakeJwt("u1", 3)}`]));
  });

  it("retries a 401 once after refreshing", async () => {
    let rejected = false;
    const { fetch, calls } = fakeFetch((c) => {
      if (c.url.endsWith("/auth/login")) return json(200, auth(1));
      if (c.url.endsWith("/auth/refresh")) return json(200, { access_token: fakeJwt("u1", 2), refresh_token: "r2", expires_in: 900 });
      if (!rejected) {
        rejected = true;
        return apiError(401, "unauthenticated");
      }
      return json(200, { friends: [user] });
    });
    const client = new BeehiveClient({ fetch });
    await client.login("alice", "pw");
    expect(await client.friends()).toEqual([user]);
    expect(calls.map((c) => c.url.replace("/api/v1", ""))).toEqual(["/auth/login", "/friends", "/auth/refresh", "/friends"]);
  });

  it("ends the session once when the refresh token is refused", async () => {
    const { fetch } = fakeFetch((c) => {
      if (c.url.endsWith("/auth/login")) return json(200, auth(1));
      if (c.url.endsWith("/auth/refresh")) return apiError(401, "unauthenticated", "session revoked");
      return apiError(401, "unauthenticated");
    });
    const store = new MemoryTokenStore();
    const client = new BeehiveClient({ fetch, store });
    const ended: string[] = [];
    client.on("ended", (e) => ended.push(e.reason));
    await client.login("alice", "pw");
    await expect(client.friends()).rejects.toBeInstanceOf(SessionEndedError);
    expect(ended).toEqual(["session_revoked"]);
    expect(client.signedIn).toBe(false);
    expect(store.load()).toBeNull();
  });

  it("adopts a refresh token another tab rotated instead of presenting the old one", async () => {
    const store = new MemoryTokenStore();
    const { fetch, calls } = fakeFetch(() => json(200, { friends: [] }));
    const start = Date.now();
    store.save({ access_token: fakeJwt("u1", 1), refresh_token: "r1", expires_at: start + 30_000, issued_at: start - 870_000 });
    const client = new BeehiveClient({ fetch, store });
    // the other tab rotated r1 -> r2 and stored a fresh access token
    const rotated: Tokens = { access_token: fakeJwt("u1", 2), refresh_token: "r2", expires_at: start + 900_000, issued_at: start };
    store.save(rotated);
    await client.friends();
    expect(calls.filter((c) => c.url.endsWith("/auth/refresh"))).toHaveLength(0);
    expect(calls[0].headers.authorization).toBe(`Bearer ${fakeJwt("u1", 2)}`);
  });

  it("logs out with the refresh token and forgets the session", async () => {
    const { fetch, calls } = fakeFetch((c) => (c.url.endsWith("/auth/login") ? json(200, auth(1)) : new Response(null, { status: 204 })));
    const client = new BeehiveClient({ fetch });
    await client.login("alice", "pw");
    await client.logout();
    expect(calls[1]).toMatchObject({ method: "POST", body: { refresh_token: "r1" } });
    expect(calls[1].url).toMatch(/\/api\/v1\/auth\/logout$/);
    expect(client.signedIn).toBe(false);
  });

  it("builds query strings and pages conversations", async () => {
    const { fetch, calls } = fakeFetch((c) => {
      const u = new URL(c.url);
      if (u.pathname.endsWith("/conversations")) {
        return json(200, u.searchParams.get("cursor") ? { conversations: [{ id: "c2" }], next_cursor: null } : { conversations: [{ id: "c1" }], next_cursor: "p2" });
      }
      return json(200, { hits: [], next_cursor: null });
    });
    const store = new MemoryTokenStore();
    store.save({ access_token: fakeJwt("u1"), refresh_token: "r", expires_at: Date.now() + 600_000 });
    const client = new BeehiveClient({ baseUrl: "http://gw", fetch, store });
    expect((await client.allConversations()).map((c) => c.id)).toEqual(["c1", "c2"]);
    await client.searchMessages("消息 & more", { conversation_id: "c1" });
    const search = new URL(calls[2].url);
    expect(search.searchParams.get("q")).toBe("消息 & more");
    expect(search.searchParams.get("conversation_id")).toBe("c1");
    expect(search.searchParams.has("cursor")).toBe(false);
  });

  it("reports whether the server accepts files", async () => {
    const yes = new BeehiveClient({ fetch: fakeFetch(() => new Response(null, { status: 204, headers: { "Tus-Version": "1.0.0" } })).fetch });
    const no = new BeehiveClient({ fetch: fakeFetch(() => apiError(404, "not_found", "no such endpoint")).fetch });
    expect(await yes.filesSupported()).toBe(true);
    expect(await no.filesSupported()).toBe(false);
  });

  it("reads the subject of a token and rejects garbage", () => {
    expect(tokenSubject(fakeJwt("user-9"))).toBe("user-9");
    expect(tokenSubject("nonsense")).toBeNull();
    expect(tokenSubject("a.%%%.c")).toBeNull();
  });
});
