import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { BeehiveClient, MemoryTokenStore } from "./client";
import { ApiError } from "./errors";
import { BeehiveSocket, type MessageSource, type SocketState } from "./socket";
import { apiError, fakeFetch, fakeJwt, json, socketFactory } from "./testing";
import type { Message } from "./types";

function msg(conversation_id: string, seq: number, extra: Partial<Message> = {}): Message {
  return { id: `${conversation_id}-${seq}`, conversation_id, seq, sender_id: "u2", client_msg_id: `m${seq}`, msg_type: "text", content: `hello ${seq}`, ...extra };
}

function setup(options: { refresh?: () => Response } = {}) {
  const store = new MemoryTokenStore();
  store.save({ access_token: fakeJwt("u1", 1), refresh_token: "r1", expires_at: Date.now() + 600_000 });
  const { fetch, calls } = fakeFetch((c) => {
    if (c.url.endsWith("/auth/refresh")) return options.refresh ? options.refresh() : json(200, { access_token: fakeJwt("u1", 2), refresh_token: "r2", expires_in: 900 });
    return apiError(404, "not_found");
  });
  const client = new BeehiveClient({ baseUrl: "https://chat.example.com", fetch, store });
  const { factory, sockets } = socketFactory();
  const socket = new BeehiveSocket(client, { webSocket: factory, deviceId: "tab-1", random: () => 0.5 });
  const seen: Array<{ key: string; source: MessageSource }> = [];
  socket.on("message", ({ message, source }) => seen.push({ key: `${message.conversation_id}:${message.seq}`, source }));
  const states: SocketState[] = [];
  socket.on("state", ({ state }) => states.push(state));
  return { client, socket, sockets, seen, states, calls };
}

describe("BeehiveSocket", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("connects with the token as a subprotocol and syncs from an empty cursor map", async () => {
    const { socket, sockets, states } = setup();
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(sockets).toHaveLength(1);
    const url = new URL(sockets[0].url);
    expect(url.protocol).toBe("wss:");
    expect(url.pathname).toBe("/ws");
    expect(url.searchParams.get("device_id")).toBe("tab-1");
    expect(url.searchParams.has("token")).toBe(false);
    expect(sockets[0].protocols).toEqual(["beehive.v1", `bearer.${fakeJwt("u1", 1)}`]);
    sockets[0].open();
    expect(sockets[0].sentOf("sync")).toEqual([{ type: "sync", id: "sync:1", data: { cursors: {} } }]);
    expect(states).toEqual(["connecting", "open"]);
  });

  it("can put the token in the query instead", async () => {
    const { client } = setup();
    const { factory, sockets } = socketFactory();
    const socket = new BeehiveSocket(client, { webSocket: factory, tokenIn: "query" });
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(new URL(sockets[0].url).searchParams.get("token")).toBe(fakeJwt("u1", 1));
    expect(sockets[0].protocols).toBeUndefined();
  });

  it("hands every message on once across live frames, sync, acks and history", async () => {
    const { socket, sockets, seen } = setup();
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = sockets[0];
    ws.open();
    socket.addHistory([msg("c1", 1), msg("c1", 2)]);
    ws.push({ type: "message", data: { message: msg("c1", 2) } });
    ws.push({ type: "message", data: { message: msg("c1", 3) } });
    ws.push({ type: "message", data: { message: msg("c1", 3) } });
    ws.push({ type: "message", data: { message: msg("c2", 1) } });
    expect(seen).toEqual([
      { key: "c1:1", source: "history" },
      { key: "c1:2", source: "history" },
      { key: "c1:3", source: "live" },
      { key: "c2:1", source: "live" },
    ]);
  });

  it("reconnects with growing backoff and syncs from the last seen seq, without duplicates", async () => {
    const { socket, sockets, seen, states } = setup();
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].open();
    sockets[0].push({ type: "message", data: { message: msg("c1", 1) } });
    sockets[0].push({ type: "message", data: { message: msg("c1", 2) } });
    sockets[0].push({ type: "sync_done", id: "sync:1", data: { cursors: { c1: 2 }, has_more: false } });
    sockets[0].drop();
    expect(states.at(-1)).toBe("reconnecting");
    // first retry after the initial delay (500 ms, jitter centred)
    await vi.advanceTimersByTimeAsync(499);
    expect(sockets).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets).toHaveLength(2);
    sockets[1].drop();
    await vi.advanceTimersByTimeAsync(999);
    expect(sockets).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets).toHaveLength(3);
    sockets[2].open();
    expect(sockets[2].sentOf("sync")[0].data).toEqual({ cursors: { c1: 2 } });
    // the server replays from seq 2 (and a live copy races in): each shows once
    sockets[2].push({ type: "message", data: { message: msg("c1", 3) } });
    sockets[2].push({ type: "message", data: { message: msg("c1", 3) } });
    sockets[2].push({ type: "message", data: { message: msg("c1", 4) } });
    sockets[2].push({ type: "sync_done", id: "sync:2", data: { cursors: { c1: 4 }, has_more: false } });
    expect(seen.map((s) => s.key)).toEqual(["c1:1", "c1:2", "c1:3", "c1:4"]);
    // a sync that completed resets the backoff
    sockets[2].drop();
    await vi.advanceTimersByTimeAsync(500);
    expect(sockets).toHaveLength(4);
  });

  it("keeps syncing while the server says has_more", async () => {
    const { socket, sockets } = setup();
    const synced = vi.fn();
    socket.on("synced", synced);
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = sockets[0];
    ws.open();
    for (let seq = 1; seq <= 3; seq++) ws.push({ type: "message", data: { message: msg("c1", seq) } });
    ws.push({ type: "sync_done", id: "sync:1", data: { cursors: { c1: 3, c9: 7 }, has_more: true } });
    expect(ws.sentOf("sync")[1].data).toEqual({ cursors: { c1: 3, c9: 7 } });
    expect(synced).not.toHaveBeenCalled();
    ws.push({ type: "sync_done", id: "sync:2", data: { cursors: { c1: 3, c9: 7 }, has_more: false } });
    expect(synced).toHaveBeenCalledOnce();
  });

  it("uses a cursor that leaves gaps to be filled", async () => {
    const { socket, sockets } = setup();
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].open();
    socket.addHistory([msg("c1", 4), msg("c1", 5)]);
    sockets[0].push({ type: "message", data: { message: msg("c1", 7) } });
    sockets[0].drop();
    await vi.advanceTimersByTimeAsync(500);
    sockets[1].open();
    expect(sockets[1].sentOf("sync")[0].data).toEqual({ cursors: { c1: 5 } });
  });

  it("resolves sends on ack, re-sends unacknowledged ones after a reconnect, rejects on error", async () => {
    const { socket, sockets, seen } = setup();
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].open();
    const first = socket.send({ conversation_id: "c1", content: "hi", client_msg_id: "cm-1" });
    const frame = sockets[0].sentOf("send")[0];
    expect(frame).toEqual({ type: "send", id: "send:cm-1", data: { conversation_id: "c1", content: "hi", client_msg_id: "cm-1", msg_type: "text" } });
    sockets[0].drop();
    await vi.advanceTimersByTimeAsync(500);
    sockets[1].open();
    // the same client_msg_id again: the server stores it once
    expect(sockets[1].sentOf("send")).toEqual([frame]);
    const stored = msg("c1", 9, { sender_id: "u1", client_msg_id: "cm-1", content: "hi" });
    sockets[1].push({ type: "ack", id: "send:cm-1", data: { client_msg_id: "cm-1", message: stored } });
    await expect(first).resolves.toEqual(stored);
    expect(seen).toEqual([{ key: "c1:9", source: "ack" }]);
    const second = socket.send({ conversation_id: "c1", content: "x".repeat(5), client_msg_id: "cm-2" });
    sockets[1].push({ type: "error", id: "send:cm-2", data: { code: "permission_denied", message: "not a member" } });
    const error = (await second.catch((e: unknown) => e)) as ApiError;
    expect(error).toBeInstanceOf(ApiError);
    expect(error.code).toBe("permission_denied");
  });

  it("queues a send made while disconnected", async () => {
    const { socket, sockets } = setup();
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    const p = socket.send({ to_user_id: "u2", content: "early", client_msg_id: "cm-3" });
    expect(sockets[0].sent).toEqual([]);
    sockets[0].open();
    expect(sockets[0].sentOf("send")).toHaveLength(1);
    sockets[0].push({ type: "ack", id: "send:cm-3", data: { client_msg_id: "cm-3", message: msg("c5", 1) } });
    await expect(p).resolves.toMatchObject({ seq: 1 });
  });

  it("follows the server's reconnect {after_ms} when a gateway drains", async () => {
    const { socket, sockets } = setup();
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].open();
    sockets[0].push({ type: "reconnect", data: { after_ms: 3000 } });
    sockets[0].drop(1012, "service restart");
    // after_ms plus up to 250 ms of jitter (random() = 0.5 -> 125)
    await vi.advanceTimersByTimeAsync(3124);
    expect(sockets).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets).toHaveLength(2);
  });

  it("stops and ends the session when kicked", async () => {
    const { socket, sockets, client, states } = setup();
    const kicked = vi.fn();
    const ended = vi.fn();
    socket.on("kicked", kicked);
    client.on("ended", ended);
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].open();
    const pending = socket.send({ conversation_id: "c1", content: "lost" });
    sockets[0].push({ type: "kicked", data: { reason: "password_changed" } });
    sockets[0].drop(4001, "kicked");
    await expect(pending).rejects.toThrow(/session ended/);
    expect(kicked).toHaveBeenCalledWith({ reason: "password_changed" });
    expect(ended).toHaveBeenCalledWith({ reason: "password_changed" });
    expect(states.at(-1)).toBe("kicked");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sockets).toHaveLength(1);
  });

  it("treats close code 4001 without a frame as kicked", async () => {
    const { socket, sockets, states } = setup();
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].open();
    sockets[0].drop(4001, "");
    expect(states.at(-1)).toBe("kicked");
  });

  it("after repeated failures checks the session with a refresh and stops when it is revoked", async () => {
    const { socket, sockets, states, calls } = setup({ refresh: () => apiError(401, "unauthenticated") });
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].drop(); // the upgrade was refused: browsers only see a close
    await vi.advanceTimersByTimeAsync(500);
    sockets[1].drop();
    await vi.advanceTimersByTimeAsync(1000);
    expect(calls.filter((c) => c.url.endsWith("/auth/refresh"))).toHaveLength(1);
    expect(sockets).toHaveLength(2);
    expect(states.at(-1)).toBe("kicked");
  });

  it("drops a connection whose pongs stop and reconnects", async () => {
    const { client } = setup();
    const { factory, sockets } = socketFactory();
    const socket = new BeehiveSocket(client, { webSocket: factory, pingIntervalMs: 1000, pongTimeoutMs: 500, random: () => 0.5 });
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].open();
    await vi.advanceTimersByTimeAsync(1000);
    const ping = sockets[0].sentOf("ping")[0];
    sockets[0].push({ type: "pong", id: ping.id, data: {} });
    await vi.advanceTimersByTimeAsync(1000);
    expect(sockets[0].closedWith).toBeNull();
    await vi.advanceTimersByTimeAsync(500); // no pong to the second ping
    expect(sockets[0].closedWith).not.toBeNull();
    await vi.advanceTimersByTimeAsync(500);
    expect(sockets).toHaveLength(2);
  });

  it("waits for the network and reconnects at once when it returns", async () => {
    const { socket, sockets, states } = setup();
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].open();
    socket.networkDown();
    expect(sockets[0].closedWith).not.toBeNull();
    expect(states.at(-1)).toBe("offline");
    await vi.advanceTimersByTimeAsync(30_000);
    expect(sockets).toHaveLength(1);
    socket.networkUp();
    await vi.advanceTimersByTimeAsync(0);
    expect(sockets).toHaveLength(2);
  });

  it("ignores frames it cannot parse and forwards the others", async () => {
    const { socket, sockets } = setup();
    const receipts = vi.fn();
    const typing = vi.fn();
    socket.on("receipt", receipts);
    socket.on("typing", typing);
    socket.start();
    await vi.advanceTimersByTimeAsync(0);
    sockets[0].open();
    sockets[0].onmessage?.({ data: "not json" });
    sockets[0].onmessage?.({ data: new ArrayBuffer(3) });
    sockets[0].push({ type: "something_new", data: {} });
    sockets[0].push({ type: "receipt", data: { conversation_id: "c1", user_id: "u2", delivered_seq: 3, read_seq: 2 } });
    sockets[0].push({ type: "typing", data: { conversation_id: "c1", user_id: "u2" } });
    expect(receipts).toHaveBeenCalledWith({ conversation_id: "c1", user_id: "u2", delivered_seq: 3, read_seq: 2 });
    expect(typing).toHaveBeenCalledOnce();
  });
});
