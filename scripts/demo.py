#!/usr/bin/env python3
"""A scripted tour of a running Beehive: two users register, log in, look at their
profiles, become friends and chat over WebSocket.

Standard library only (the WebSocket client below is a minimal RFC 6455 client), so it
runs on any machine with Python 3.8+.

    python3 scripts/demo.py [--url http://localhost:8080] [--log .beehive/beehive.log]
"""
import argparse
import base64
import json
import os
import re
import secrets
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def say(text):
    print(f"\033[1;36m>>\033[0m {text}", flush=True)


class Api:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def call(self, method, path, body=None, token=None, expect=(200, 201, 204)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + "/api/v1" + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        payload = json.loads(raw) if raw else None
        if status not in expect:
            raise SystemExit(f"{method} {path} -> {status} {payload}")
        return payload


class WebSocket:
    """Just enough of RFC 6455 for JSON text frames."""

    def __init__(self, url, token, device):
        parsed = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port or 80), timeout=15)
        key = base64.b64encode(os.urandom(16)).decode()
        path = f"/ws?device_id={device}"
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port or 80}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: beehive.v1, bearer.{token}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise SystemExit("WebSocket handshake: connection closed")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise SystemExit(f"WebSocket handshake failed: {status.decode(errors='replace')}")

    def send(self, frame):
        payload = json.dumps(frame).encode()
        header = bytearray([0x81])
        mask = os.urandom(4)
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 65536:
            header.append(0x80 | 126)
            header += struct.pack(">H", len(payload))
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise SystemExit("WebSocket closed by the server")
            data += chunk
        return data

    def recv(self):
        """Next JSON frame; answers pings, skips other control frames."""
        while True:
            b0, b1 = self._read(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(length)
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping -> pong
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
                continue
            if opcode == 0x8:
                raise SystemExit("WebSocket closed by the server")
            if opcode == 0x1:
                return json.loads(payload)

    def expect(self, frame_type, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.time()))
            frame = self.recv()
            if frame.get("type") == frame_type:
                return frame
        raise SystemExit(f"no {frame_type} frame within {timeout}s")


def tiny_png(width=64, height=48):
    """A gradient PNG built with the standard library (the demo needs no image tools)."""
    import struct
    import zlib

    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (x * 4 % 256, y * 5 % 256, 160))
                    for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def tus_upload(base, token, name, content_type, data):
    """A tus 1.0.0 upload (creation, then one PATCH); returns the file id the server named."""
    import base64
    import hashlib

    def b64(text):
        return base64.b64encode(text.encode()).decode()

    digest = hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(base.rstrip("/") + "/api/v1/files/uploads", data=b"", method="POST")
    for key, value in (("Authorization", "Bearer " + token), ("Tus-Resumable", "1.0.0"),
                       ("Upload-Length", str(len(data))),
                       ("Upload-Metadata", f"filename {b64(name)},sha256 {b64(digest)},content_type {b64(content_type)}")):
        req.add_header(key, value)
    with urllib.request.urlopen(req, timeout=15) as resp:
        location = urllib.parse.urljoin(base, resp.headers["Location"])
    req = urllib.request.Request(location, data=data, method="PATCH")
    for key, value in (("Authorization", "Bearer " + token), ("Tus-Resumable", "1.0.0"),
                       ("Upload-Offset", "0"), ("Content-Type", "application/offset+octet-stream")):
        req.add_header(key, value)
    with urllib.request.urlopen(req, timeout=15) as resp:
        file_id = resp.headers.get("Beehive-File-Id")
    if not file_id:
        raise SystemExit("the completed upload did not name its file (Beehive-File-Id)")
    return file_id, digest


def find_code(log_path, email, timeout=5):
    """The dev mail sink logs one line with the email and its code."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log_path and os.path.exists(log_path):
            with open(log_path, errors="replace") as f:
                lines = [l for l in f if email in l]
            for line in reversed(lines):
                match = re.search(r"\b(\d{6})\b", line.split(email, 1)[-1]) or re.search(r"\b(\d{6})\b", line)
                if match:
                    return match.group(1)
        time.sleep(0.2)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://localhost:8080")
    parser.add_argument("--log", default=".beehive/beehive.log", help="server log, to read the dev email code")
    args = parser.parse_args()
    api = Api(args.url)
    suffix = secrets.token_hex(3)
    alice_name, bob_name = f"alice_{suffix}", f"bob_{suffix}"
    password = "correct-horse-battery"

    say(f"register {alice_name} with a verified email (the dev mail sink logs the code)")
    email = f"{alice_name}@example.com"
    api.call("POST", "/auth/send-code", {"email": email})
    code = find_code(args.log, email)
    if code:
        alice = api.call("POST", "/auth/register", {"username": alice_name, "password": password,
                                                    "email": email, "code": code, "nickname": "Alice"})
    else:
        say("  (code not found in the log; registering without an email)")
        alice = api.call("POST", "/auth/register", {"username": alice_name, "password": password, "nickname": "Alice"})
    say(f"  -> user {alice['user']['id']}, access token expires in {alice['expires_in']} s")

    say(f"register {bob_name}")
    bob = api.call("POST", "/auth/register", {"username": bob_name, "password": password, "nickname": "Bob"})

    say(f"log in as {alice_name}")
    alice = api.call("POST", "/auth/login", {"login": alice_name, "password": password})
    me = api.call("GET", "/users/me", token=alice["access_token"])
    say(f"  -> GET /users/me: {json.dumps(me['user'])}")
    found = api.call("GET", "/users/search?q=" + urllib.parse.quote(f"bob_{suffix}"), token=alice["access_token"])
    say(f"  -> search 'bob_{suffix}': {[u['username'] for u in found['users']]}")

    ws_available = True
    try:
        request = api.call("POST", "/friends/requests", {"to_user_id": bob["user"]["id"], "message": "hi, it's Alice"},
                           token=alice["access_token"], expect=(201,))
    except SystemExit as err:
        if " 404 " in str(err):
            ws_available = False
        else:
            raise
    if not ws_available:
        say("this build has no messaging yet; demo ends after the profiles")
        return
    say(f"{alice_name} sent a friend request; {bob_name} accepts it")
    api.call("POST", f"/friends/requests/{request['request']['id']}/accept", token=bob["access_token"])

    say("both open WebSockets; Bob has two devices")
    alice_ws = WebSocket(args.url, alice["access_token"], "alice-laptop")
    bob_phone = WebSocket(args.url, bob["access_token"], "bob-phone")
    bob_laptop = WebSocket(args.url, bob["access_token"], "bob-laptop")

    alice_ws.send({"type": "send", "id": "1", "data": {"client_msg_id": secrets.token_hex(8),
                   "to_user_id": bob["user"]["id"], "msg_type": "text", "content": "Hi Bob! 你好"}})
    ack = alice_ws.expect("ack")
    conversation = ack["data"]["message"]["conversation_id"]
    say(f"  Alice -> Bob, acked as seq {ack['data']['message']['seq']}")
    for name, sock in (("phone", bob_phone), ("laptop", bob_laptop)):
        msg = sock.expect("message")["data"]["message"]
        say(f"  Bob's {name} got seq {msg['seq']}: {msg['content']!r}")

    bob_phone.send({"type": "send", "id": "2", "data": {"client_msg_id": secrets.token_hex(8),
                    "conversation_id": conversation, "msg_type": "text", "content": "Hey Alice, got it."}})
    bob_phone.expect("ack")
    msg = alice_ws.expect("message")["data"]["message"]
    say(f"  Bob -> Alice, seq {msg['seq']}: {msg['content']!r}")
    other = bob_laptop.expect("message")["data"]["message"]
    say(f"  Bob's laptop also shows his own reply (seq {other['seq']})")

    alice_ws.send({"type": "read", "data": {"conversation_id": conversation, "seq": msg["seq"]}})
    history = api.call("GET", f"/conversations/{conversation}/messages?limit=10", token=bob["access_token"])
    say(f"history: {[(m['seq'], m['content']) for m in history['messages']]}")

    # Search: Chinese is segmented into words (消息 finds 我们的消息, not 消费), hits are
    # scoped to the caller's conversations, highlights are HTML-escaped with <em>.
    api.call("POST", "/messages", {"client_msg_id": secrets.token_hex(8), "conversation_id": conversation,
                                   "msg_type": "text", "content": "我们的消息已经同步了"},
             token=alice["access_token"])
    api.call("POST", "/messages", {"client_msg_id": secrets.token_hex(8), "conversation_id": conversation,
                                   "msg_type": "text", "content": "这个月的消费记录"},
             token=alice["access_token"])
    query = urllib.parse.quote("消息")
    say("search 消息 (indexing is asynchronous: a few seconds at most)")
    hits = []
    deadline = time.time() + 15
    while time.time() < deadline:
        found = api.call("GET", f"/search/messages?q={query}", token=bob["access_token"],
                         expect=(200, 503))
        hits = (found or {}).get("hits") or []
        if hits:
            break
        time.sleep(0.3)
    if not hits:
        raise SystemExit("search found nothing for 消息 within 15 s")
    for hit in hits:
        say(f"  hit: {hit['highlight']}")

    # Files: a resumable (tus) upload, an image message, a thumbnail, and content stored
    # once: the same bytes again are an instant upload (POST /files/check), no bytes sent.
    image = tiny_png()
    say(f"Alice uploads an image over tus ({len(image)} bytes) and sends it")
    file_id, digest = tus_upload(args.url, alice["access_token"], "gradient.png", "image/png", image)
    sent = api.call("POST", "/messages", {"client_msg_id": secrets.token_hex(8), "conversation_id": conversation,
                                          "msg_type": "image", "content": "gradient.png", "file_id": file_id},
                    token=alice["access_token"])
    say(f"  image message seq {sent['message']['seq']} carries file {file_id}")
    req = urllib.request.Request(f"{args.url.rstrip('/')}/api/v1/files/{file_id}/thumbnail?size=small")
    req.add_header("Authorization", "Bearer " + bob["access_token"])
    with urllib.request.urlopen(req, timeout=15) as resp:
        say(f"  Bob fetches its thumbnail: {resp.headers['Content-Type']}, {len(resp.read())} bytes")
    again = api.call("POST", "/files/check", {"sha256": digest, "size": len(image), "filename": "same-gradient.png",
                                              "content_type": "image/png"}, token=bob["access_token"])
    say(f"  Bob uploads the same bytes: instant (POST /files/check -> file {again['file']['id']}, "
        f"0 bytes sent; the content is stored once)")
    say("demo done")


if __name__ == "__main__":
    main()
