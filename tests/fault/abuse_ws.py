#!/usr/bin/env python3
"""Bounded randomized-frame run against a live gateway (issue 5, item 4).

Several attacker connections throw random bytes, random JSON, valid-but-wrong
frames, huge frames, protocol violations and broken handshakes at /ws, reconnecting
whenever the server closes them, while a well-behaved pair of users keeps chatting
(send -> ack -> delivery, plus REST health checks). The run passes when the gateway
stays up, the well-behaved pair never loses a message or waits longer than the
liveness bound for one, and a fresh client can still connect at the end.

Standard library only (a raw RFC 6455 client), so protocol-level garbage can be sent
that a WebSocket library would refuse to produce. Loopback targets only.

Usage: abuse_ws.py --url http://127.0.0.1:PORT [--seconds 60] [--attackers 6] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import struct
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter

# A round trip of the well-behaved client slower than this means the gateway stopped
# serving it: a liveness bound, not a performance target.
LIVENESS = 20.0


def api(base: str, method: str, path: str, body=None, token: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/api/v1{path}", data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


def register(base: str, prefix: str) -> dict:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    reply = api(base, "POST", "/auth/register", {"username": name, "password": "password-123"})
    return {"id": reply["user"]["id"], "token": reply["access_token"]}


def befriend(base: str, a: dict, b: dict) -> None:
    req = api(base, "POST", "/friends/requests", {"to_user_id": b["id"]}, a["token"])
    api(base, "POST", f"/friends/requests/{req['request']['id']}/accept", None, b["token"])


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0,
          claimed_len: int | None = None) -> bytes:
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload) if claimed_len is None else claimed_len
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n <= 0xFFFF:
        head.append(mbit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack(">Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    head += key
    return bytes(head) + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Conn:
    """A raw WebSocket connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.close_code: int | None = None

    @classmethod
    async def open(cls, host: str, port: int, path: str, extra: str = "") -> "Conn":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            writer.close()
            raise ConnectionRefusedError(f"upgrade refused: {status}")
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def text(self, obj) -> None:
        await self.send(frame(1, (obj if isinstance(obj, str) else json.dumps(obj)).encode()))

    async def recv(self, timeout: float) -> dict | None:
        """The next text frame as JSON (None on close); answers pings."""
        while True:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
            payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
            op = b0 & 0x0F
            if op == 1:
                try:
                    return json.loads(payload)
                except ValueError:
                    return {"type": "?"}
            if op == 8:
                self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                return None
            if op == 9:
                await self.send(frame(10, payload))

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass


def random_json(rng: random.Random, depth: int = 0):
    kinds = ["null", "bool", "int", "float", "str", "list", "obj"] if depth < 4 else ["int", "str"]
    k = rng.choice(kinds)
    if k == "null":
        return None
    if k == "bool":
        return rng.random() < 0.5
    if k == "int":
        return rng.choice([0, -1, 1, 2**31, 2**63 - 1, 2**64, -(2**63), rng.randint(-10**6, 10**6), 10**40])
    if k == "float":
        return rng.choice([0.5, -1e308, 1e308, 3.14])
    if k == "str":
        alphabet = "abc\u0000\u202e\U0001F41D\"\\{}[]<>' 消息"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    if k == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    obj = {rng.choice(["type", "id", "data", "cursors", "seq", "content", "x"]): random_json(rng, depth + 1)
           for _ in range(rng.randint(0, 5))}
    if rng.random() < 0.7:
        obj["type"] = rng.choice(["send", "sync", "read", "delivered", "typing", "ping", "nope", 7, None])
    return obj


def wrong_frames(rng: random.Random, foreign: str) -> list:
    u = str(uuid.uuid4())
    big = "x" * (16 * 1024 + rng.randint(1, 100))
    return [
        {"type": "send", "id": "w1", "data": {}},
        {"type": "send", "id": "w2", "data": {"client_msg_id": "", "to_user_id": u, "msg_type": "text", "content": "x"}},
        {"type": "send", "id": "w3", "data": {"client_msg_id": "c" * 500, "conversation_id": u, "msg_type": "text", "content": "x"}},
        {"type": "send", "id": "w4", "data": {"client_msg_id": "c", "conversation_id": "not-a-uuid", "msg_type": "text", "content": "x"}},
        {"type": "send", "id": "w5", "data": {"client_msg_id": "c", "conversation_id": u, "to_user_id": u, "msg_type": "text", "content": "x"}},
        {"type": "send", "id": "w6", "data": {"client_msg_id": "c", "conversation_id": foreign, "msg_type": "text", "content": big}},
        {"type": "send", "id": "w7", "data": {"client_msg_id": "c", "conversation_id": foreign, "msg_type": "image", "content": "x"}},
        {"type": "send", "id": "w8", "data": {"client_msg_id": uuid.uuid4().hex, "conversation_id": foreign, "msg_type": "text", "content": "intrusion"}},
        {"type": "send", "id": "w9", "data": {"client_msg_id": 5, "to_user_id": [u], "msg_type": {}, "content": None}},
        {"type": "sync", "id": "w10", "data": {"cursors": {str(uuid.uuid4()): rng.randint(0, 2**63) for _ in range(2000)}}},
        {"type": "sync", "id": "w11", "data": {"cursors": {"nope": 1}, "limit": -5}},
        {"type": "sync", "id": "w12", "data": {"cursors": {foreign: -1}}},
        {"type": "sync", "id": "w13", "data": []},
        {"type": "read", "id": "w14", "data": {"conversation_id": foreign, "seq": 2**64 - 1}},
        {"type": "delivered", "id": "w15", "data": {"conversation_id": foreign, "seq": -1}},
        {"type": "typing", "id": "w16", "data": {"conversation_id": foreign}},
        {"type": "ping", "id": {"nested": [1, 2]}, "data": {}},
        {"type": "ping", "id": "i" * 10_000},
        {"type": 12, "id": 1.5e300},
        {"type": "send" * 1000},
        {"id": "no-type"},
    ]


class Stats:
    def __init__(self):
        self.actions = Counter()
        self.closes = Counter()
        self.errors = Counter()
        self.frames_sent = 0


async def attacker(n: int, host: str, port: int, user: dict, foreign: str, deadline: float,
                   rng: random.Random, stats: Stats, max_frames: int) -> None:
    path = f"/ws?token={user['token']}&device_id=attacker-{n}"
    while time.monotonic() < deadline and stats.frames_sent < max_frames:
        action = rng.choice(["random_text", "invalid_utf8", "binary", "random_json", "wrong_frames",
                             "huge_frame", "huge_claim", "protocol", "handshake", "deep_json",
                             "slow_reader", "fragments"])
        stats.actions[action] += 1
        try:
            if action == "handshake":
                await bad_handshake(host, port, user, rng, stats)
                continue
            conn = await Conn.open(host, port, path)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            stats.errors[f"connect:{type(e).__name__}"] += 1
            await asyncio.sleep(0.2)
            continue
        reader_task = asyncio.create_task(drain(conn, stats)) if action != "slow_reader" else None
        try:
            await asyncio.wait_for(attack(action, conn, rng, foreign, stats), 30)
            await asyncio.sleep(0.2)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass  # the server closing on us is one of the expected outcomes
        finally:
            conn.close()
            if reader_task:
                try:
                    await asyncio.wait_for(reader_task, 2)
                except (asyncio.TimeoutError, Exception):
                    reader_task.cancel()


async def drain(conn: Conn, stats: Stats) -> None:
    try:
        while True:
            msg = await conn.recv(60)
            if msg is None:
                stats.closes[conn.close_code] += 1
                return
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.CancelledError):
        stats.closes["eof"] += 1


async def attack(action: str, conn: Conn, rng: random.Random, foreign: str, stats: Stats) -> None:
    def count(k: int = 1) -> None:
        stats.frames_sent += k

    if action == "random_text":
        for _ in range(rng.randint(1, 30)):
            await conn.send(frame(1, "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 200))).encode()))
            count()
    elif action == "invalid_utf8":
        await conn.send(frame(1, b"\xff\xfe" + os.urandom(rng.randint(0, 500))))
        count()
    elif action == "binary":
        for _ in range(rng.randint(1, 10)):
            await conn.send(frame(2, os.urandom(rng.randint(0, 4000))))
            count()
    elif action == "random_json":
        for _ in range(rng.randint(1, 50)):
            await conn.text(random_json(rng))
            count()
    elif action == "wrong_frames":
        frames = wrong_frames(rng, foreign)
        rng.shuffle(frames)
        for f in frames:
            await conn.text(f)
            count()
    elif action == "huge_frame":
        await conn.send(frame(1, b"[" + b"1," * (rng.randint(1, 3) * 600_000) + b"1]"))
        count()
    elif action == "huge_claim":
        # A header announcing an enormous payload, then a trickle: the server must
        # refuse by the header, not buffer.
        await conn.send(frame(1, b"", claimed_len=rng.choice([2**31, 2**62, 5 << 20]))[:14] + b"abc")
        count()
    elif action == "protocol":
        choice = rng.randint(0, 5)
        if choice == 0:
            await conn.send(frame(1, b'{"type":"ping"}', mask=False))  # clients must mask
        elif choice == 1:
            await conn.send(frame(rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b"x"))  # reserved opcodes
        elif choice == 2:
            await conn.send(frame(1, b'{"type":"ping"}', rsv=rng.randint(1, 7)))  # no extension negotiated
        elif choice == 3:
            await conn.send(frame(0, b"orphan continuation"))
        elif choice == 4:
            await conn.send(frame(9, b"p" * 200))  # control frame > 125 bytes
        else:
            await conn.send(os.urandom(rng.randint(1, 2000)))  # raw garbage
        count()
    elif action == "deep_json":
        depth = rng.choice([200, 5_000, 100_000])
        await conn.send(frame(1, (b"[" * depth) + (b"]" * depth)))
        count()
    elif action == "slow_reader":
        # Asks for lots of output and never reads: the server must bound what it
        # buffers for this socket (and may close it), not grow without limit.
        for i in range(300):
            await conn.text({"type": "sync", "id": f"s{i}", "data": {"cursors": {}}})
            await conn.text({"type": "ping", "id": i})
            count(2)
        await asyncio.sleep(3)
    elif action == "fragments":
        # A message split into many small fragments, then one never finished.
        parts = [b'{"type":', b'"ping",', b'"id":"frag"}']
        await conn.send(frame(1, parts[0], fin=False))
        await conn.send(frame(0, parts[1], fin=False))
        await conn.send(frame(0, parts[2], fin=True))
        for _ in range(rng.randint(10, 200)):
            await conn.send(frame(0 if _ else 1, b"x" * 100, fin=False))
        count(4)


async def bad_handshake(host: str, port: int, user: dict, rng: random.Random, stats: Stats) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    try:
        choice = rng.randint(0, 4)
        if choice == 0:
            writer.write(os.urandom(rng.randint(1, 3000)))
        elif choice == 1:
            writer.write(b"GET /ws?token=" + user["token"].encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        elif choice == 2:
            writer.write(b"GET /ws?token=forged.token.here HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        elif choice == 3:
            writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 60_000 + b"\r\n\r\n")
        else:
            writer.write(b"GET /ws?token=" + user["token"].encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 99\r\n\r\n")
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.read(200), 5)
            status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "no-http-reply"
        except asyncio.TimeoutError:
            status = "no-reply"
        stats.closes[f"handshake:{status}"] += 1
    except (OSError, IndexError):
        stats.closes["handshake:reset"] += 1
    finally:
        writer.close()


async def good_pair(base: str, host: str, port: int, a: dict, b: dict, deadline: float, result: dict) -> None:
    """Alice sends to Bob, one message at a time; every ack and delivery must come."""
    sender = await Conn.open(host, port, f"/ws?token={a['token']}&device_id=good-a")
    receiver = await Conn.open(host, port, f"/ws?token={b['token']}&device_id=good-b")
    latencies = []
    i = 0
    try:
        while time.monotonic() < deadline:
            i += 1
            cmid = f"good-{i}"
            started = time.monotonic()
            await sender.text({"type": "send", "id": cmid,
                               "data": {"client_msg_id": cmid, "to_user_id": b["id"], "msg_type": "text", "content": cmid}})
            while True:
                msg = await sender.recv(LIVENESS)
                if msg is None:
                    raise RuntimeError(f"the server closed the good sender ({sender.close_code})")
                if msg.get("id") == cmid:
                    if msg.get("type") != "ack":
                        raise RuntimeError(f"good send refused: {msg}")
                    break
            result["acked"] += 1
            while True:
                msg = await receiver.recv(LIVENESS)
                if msg is None:
                    raise RuntimeError(f"the server closed the good receiver ({receiver.close_code})")
                if msg.get("type") == "message" and msg["data"]["message"]["client_msg_id"] == cmid:
                    break
            result["delivered"] += 1
            latencies.append(time.monotonic() - started)
            if i % 10 == 0:
                with urllib.request.urlopen(f"{base}/healthz", timeout=LIVENESS) as r:
                    assert r.status == 200
                result["health_checks"] += 1
            await asyncio.sleep(0.1)
    finally:
        sender.close()
        receiver.close()
        if latencies:
            latencies.sort()
            result["round_trip_p50_ms"] = round(1000 * latencies[len(latencies) // 2], 1)
            result["round_trip_max_ms"] = round(1000 * latencies[-1], 1)


async def main_async(args) -> int:
    rng = random.Random(args.seed)
    base = args.url.rstrip("/")
    parsed = urllib.parse.urlparse(base)
    host, port = parsed.hostname, parsed.port
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("refusing a non-loopback target", file=sys.stderr)
        return 2
    alice, bob = register(base, "good_a"), register(base, "good_b")
    befriend(base, alice, bob)
    # A conversation the attackers are not in, for the permission-probing frames.
    first = api(base, "POST", "/messages", {"client_msg_id": "seed", "to_user_id": bob["id"],
                                            "msg_type": "text", "content": "seed"}, alice["token"])
    foreign = first["message"]["conversation_id"]
    attackers = [register(base, f"attacker{n}") for n in range(2)]

    stats = Stats()
    good = {"acked": 0, "delivered": 0, "health_checks": 0}
    deadline = time.monotonic() + args.seconds
    good_task = asyncio.create_task(good_pair(base, host, port, alice, bob, deadline, good))
    tasks = [asyncio.create_task(attacker(n, host, port, attackers[n % len(attackers)], foreign, deadline,
                                          random.Random(rng.random()), stats, args.max_frames))
             for n in range(args.attackers)]
    failure = None
    try:
        await good_task
    except Exception as e:  # noqa: BLE001 - any failure of the good client fails the run
        failure = f"well-behaved client failed: {type(e).__name__}: {e}"
    for t in tasks:
        try:
            await asyncio.wait_for(t, 60)
        except asyncio.TimeoutError:
            t.cancel()

    # The gateway is still up and a new client still gets through.
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=LIVENESS) as r:
            assert r.status == 200
        fresh = await Conn.open(host, port, f"/ws?token={alice['token']}&device_id=fresh")
        await fresh.text({"type": "ping", "id": "final"})
        while True:
            msg = await fresh.recv(LIVENESS)
            if msg is None or msg.get("id") == "final":
                break
        if msg is None or msg.get("type") != "pong":
            failure = failure or f"a fresh client got no pong: {msg}"
        fresh.close()
    except Exception as e:  # noqa: BLE001
        failure = failure or f"gateway not serving after the run: {type(e).__name__}: {e}"
    if good["acked"] == 0:
        failure = failure or "the well-behaved client never got a message through"

    report = {
        "seconds": args.seconds,
        "attackers": args.attackers,
        "attacker_frames_sent": stats.frames_sent,
        "attacker_actions": dict(stats.actions),
        "server_closes": {str(k): v for k, v in stats.closes.items()},
        "attacker_connect_errors": dict(stats.errors),
        "well_behaved": good,
        "failure": failure,
    }
    print(json.dumps(report, indent=2))
    print(f"abuse-ws: {0 if failure else 1} passed, {1 if failure else 0} failed")
    return 1 if failure else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="gateway URL (loopback)")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--attackers", type=int, default=6)
    ap.add_argument("--max-frames", type=int, default=200_000, help="upper bound on attacker frames")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    print(f"abuse-ws: seed {args.seed}", flush=True)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
