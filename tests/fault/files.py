"""Kill the file component in the middle of a tus upload (issue 11, item 6).

Driven by run.py against its private cluster, with the file component as its own
`beehive serve file` process (a directory store under the run's working directory,
`BEEHIVE_FILE_GC_GRACE` short so its sweeper runs every 0.5 s). One upload of random
bytes through a gateway, in tus chunks, as a real tus client does it (every failure:
back off, HEAD for the stored offset, PATCH from there):

  1. one PATCH stored; SIGKILL the file process between PATCHes; the next PATCH fails
     (the client sees 5xx or a broken connection) while the process is started again;
     the client HEADs until the upload answers and resumes from the stored offset;
  2. SIGKILL the file process while a PATCH is in flight: the client has sent part of
     a chunk and the file component has written some of it to disk (waited for in its
     storage's tmp/ directory) when it dies; that PATCH must not count: HEAD after the
     restart gives the offset from before it, and the client resends from there;
  3. the rest, to completion; the file id appears only then (no `Beehive-File-Id`
     before, no row in file.files or file.blobs, no object under blobs/);
  4. the download (full, and a range across the kill offset) equals the bytes sent,
     and its ETag their SHA-256;
  5. the killed PATCH's leftovers (a temporary file in tmp/, and the garbage row that
     protected its part key) are what the sweeper removes: both are aged past their
     deadlines (the clock moved forward: file mtime and due_at set back) and the
     running sweeper must reclaim them, leaving exactly the one blob in storage and
     nothing in file.garbage or file.upload_parts.

Any deviation raises FileFaultError with what was seen.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

MIB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


class FileFaultError(RuntimeError):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise FileFaultError(what)


class Http:
    """Plain HTTP/1.1 to one gateway; every request on a fresh connection (so a request
    after a broken one never inherits its state)."""

    def __init__(self, port: int, token: str | None = None):
        self.port = port
        self.token = token

    def headers(self, extra: dict | None = None) -> dict:
        h = dict(extra or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def request(self, method: str, path: str, headers: dict | None = None,
                body: bytes | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=self.headers(headers))
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()


class TusUpload:
    """A tus client of one upload that retries like tus-js-client: on a network error
    or a 5xx/409/423, wait (backoff), HEAD for the offset, PATCH from there."""

    RETRY_DELAYS = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]

    def __init__(self, api: Http, data: bytes, chunk: int, log: Callable[[str], None]):
        self.api = api
        self.data = data
        self.chunk = chunk
        self.log = log
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.path = ""
        self.offset = 0
        self.file_id: str | None = None
        self.retries = 0
        self.errors: list[str] = []

    def create(self) -> None:
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in
                        (("filename", "fault.bin"), ("sha256", self.sha256),
                         ("content_type", "application/octet-stream")))
        status, h, body = self.api.request("POST", "/api/v1/files/uploads",
                                           {**TUS, "Upload-Length": str(len(self.data)),
                                            "Upload-Metadata": meta})
        check(status == 201, f"create: {status} {body[:200]!r}")
        self.path = h["location"]

    def head(self) -> tuple[int | None, dict]:
        """One HEAD; (None, {}) on a connection error."""
        try:
            status, h, _ = self.api.request("HEAD", self.path, TUS, timeout=10)
            return status, h
        except (OSError, http.client.HTTPException) as e:
            return None, {"error": repr(e)}

    def head_until_answered(self) -> int:
        """HEAD with backoff until the upload answers (the file component is back);
        returns and adopts the stored offset."""
        for delay in self.RETRY_DELAYS:
            status, h = self.head()
            if status == 200:
                self.offset = int(h["upload-offset"])
                self.file_id = h.get("beehive-file-id")
                return self.offset
            self.retries += 1
            self.errors.append(f"HEAD {status or h.get('error')}")
            time.sleep(delay)
        raise FileFaultError(f"HEAD never answered 200: {self.errors[-5:]}")

    def patch_once(self, end: int) -> tuple[int | None, dict, bytes]:
        headers = {**TUS, "Upload-Offset": str(self.offset),
                   "Content-Type": "application/offset+octet-stream"}
        try:
            return self.api.request("PATCH", self.path, headers, self.data[self.offset:end])
        except (OSError, http.client.HTTPException) as e:
            return None, {}, repr(e).encode()

    def step(self, target: int) -> bool:
        """Sends the next chunk (up to `target`); on failure backs off and re-HEADs.
        True when stored."""
        end = min(self.offset + self.chunk, target)
        status, h, body = self.patch_once(end)
        if status == 204:
            self.offset = int(h["upload-offset"])
            self.file_id = h.get("beehive-file-id")
            return True
        check(status is None or status >= 500 or status in (409, 423),
              f"PATCH at {self.offset}: {status} {body[:300]!r} (not retryable)")
        self.retries += 1
        self.errors.append(f"PATCH {status or body.decode(errors='replace')}")
        time.sleep(self.RETRY_DELAYS[0])
        self.head_until_answered()
        return False

    def run_to(self, target: int, max_failures: int = 20) -> None:
        failures = 0
        while self.offset < target:
            if not self.step(target):
                failures += 1
                check(failures <= max_failures, f"no progress at {self.offset}: {self.errors[-5:]}")


class Psql:
    def __init__(self, psql: Path, port: int, database: str):
        self.cmd = [str(psql), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database,
                    "-X", "-A", "-t", "-q", "-c"]

    def __call__(self, sql: str) -> str:
        return subprocess.run([*self.cmd, sql], check=True, capture_output=True, text=True).stdout.strip()


def tmp_files(storage: Path) -> list[Path]:
    return sorted(p for p in (storage / "tmp").iterdir() if p.is_file())


def objects(storage: Path) -> list[str]:
    root = storage / "objects"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def wait_for(what: str, check_fn, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check_fn()
        if value:
            return value
        time.sleep(0.05)
    raise FileFaultError(f"{what}: not within {timeout:.0f} s")


def run(gateway_port: int, file_proc, storage: Path, psql: Psql, log: Callable[[str], None],
        size: int = 6 * MIB, chunk: int = MIB) -> dict:
    """The scenario; `file_proc` is run.py's Beehive for the file component (signal,
    start, wait_ready). Returns the figures; raises FileFaultError on any violation."""
    anon = Http(gateway_port)
    user = f"filefault{os.getpid()}{int(time.time())}"
    status, _, body = anon.request("POST", "/api/v1/auth/register",
                                   {"Content-Type": "application/json"},
                                   json.dumps({"username": user, "password": "fault-password-1"}).encode())
    check(status == 201 or status == 200, f"register: {status} {body[:200]!r}")
    api = Http(gateway_port, json.loads(body)["access_token"])
    data = os.urandom(size)
    up = TusUpload(api, data, chunk, log)
    up.create()
    upload_id = up.path.rsplit("/", 1)[-1]
    figures: dict = {"bytes": size, "chunk": chunk, "upload_id": upload_id}

    def nothing_visible(when: str) -> None:
        status, h = up.head()
        check(status == 200 and "beehive-file-id" not in h, f"{when}: HEAD {status} {h}")
        rows = psql("SELECT (SELECT count(*) FROM file.files) || ' ' || (SELECT count(*) FROM file.blobs)")
        check(rows == "0 0", f"{when}: files/blobs rows {rows}, expected none before completion")
        blobs = [o for o in objects(storage) if o.startswith("blobs/")]
        check(not blobs, f"{when}: blob objects before completion: {blobs}")

    # 1. A PATCH stored, then a kill between PATCHes.
    up.run_to(chunk)
    nothing_visible("after the first chunk")
    kill_at = up.offset
    file_proc.signal(9)
    log(f"files: SIGKILL the file component between PATCHes at offset {kill_at}")
    status, _, body = up.patch_once(min(up.offset + chunk, size))
    figures["between_patches"] = {"offset_at_kill": kill_at,
                                  "patch_while_down": status or body.decode(errors="replace")[:120]}
    check(status != 204, "a PATCH succeeded while the file component was down")
    up.retries += 1
    file_proc.start()
    resumed = up.head_until_answered()
    file_proc.wait_ready()
    check(resumed == kill_at, f"HEAD after restart: offset {resumed}, stored before the kill {kill_at}")
    figures["between_patches"]["resumed_from"] = resumed
    log(f"files: restarted; HEAD says {resumed}, resuming")

    # 2. A kill while a PATCH is in flight: part of a 2-chunk body sent, some of it on
    # the file component's disk, then SIGKILL.
    up.run_to(2 * chunk)
    before = up.offset
    body_len = 2 * chunk
    sent_first = body_len * 3 // 4
    conn = http.client.HTTPConnection("127.0.0.1", gateway_port, timeout=30)
    conn.putrequest("PATCH", up.path)
    for k, v in api.headers({**TUS, "Upload-Offset": str(before), "Content-Length": str(body_len),
                             "Content-Type": "application/offset+octet-stream"}).items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(data[before:before + sent_first])
    # The part being written is a file in tmp/ until it is finished: wait until at
    # least half the chunk reached the file component's disk.
    on_disk = wait_for("bytes of the in-flight PATCH on the file component's disk",
                       lambda: max((p.stat().st_size for p in tmp_files(storage)), default=0) >= chunk
                       and max(p.stat().st_size for p in tmp_files(storage)), 20)
    file_proc.signal(9)
    log(f"files: SIGKILL the file component mid-PATCH: offset {before}, {sent_first} of {body_len} "
        f"body bytes sent, {on_disk} on its disk")
    try:
        conn.send(data[before + sent_first:before + body_len])
        r = conn.getresponse()
        outcome: object = r.status
        r.read()
    except (OSError, http.client.HTTPException) as e:
        outcome = repr(e)[:120]
    finally:
        conn.close()
    # The gateway answers 503 (the file service went away; resume), or the connection
    # breaks; never a success, and not a 500 (a dependency restarting is no bug).
    check(outcome == 503 or isinstance(outcome, str),
          f"the PATCH in flight when the file component died was answered {outcome}, expected 503")
    up.retries += 1
    up.errors.append(f"PATCH in flight: {outcome}")
    leftovers = tmp_files(storage)
    protected = psql("SELECT storage_key FROM file.garbage WHERE due_at > now() + interval '10 minutes'")
    figures["mid_patch"] = {"offset_at_kill": before, "body_bytes_sent": sent_first, "body_length": body_len,
                            "bytes_on_file_disk_at_kill": on_disk, "client_saw": outcome,
                            "leftover_tmp_files": len(leftovers), "protected_keys": protected.splitlines()}
    check(len(leftovers) == 1, f"expected the killed write's temporary file, found {leftovers}")
    # The part's garbage row is committed while its bytes stream (it must be before
    # the part could become visible), so it is almost surely there by now; nothing
    # else may be protected.
    part_prefix = f"uploads/{upload_id.replace('-', '')}/{before:020}-"
    check(all(k.startswith(part_prefix) for k in protected.splitlines()) and len(protected.splitlines()) <= 1,
          f"expected at most the garbage row protecting the killed part at {before}, found {protected!r}")
    file_proc.start()
    resumed = up.head_until_answered()
    file_proc.wait_ready()
    check(resumed == before, f"HEAD after the mid-PATCH kill: offset {resumed}, expected {before} "
          "(bytes of a PATCH that was never acknowledged must not count)")
    figures["mid_patch"]["resumed_from"] = resumed
    nothing_visible("after the mid-PATCH kill")
    log(f"files: restarted; HEAD says {resumed}, resuming")

    # 3. The rest; the file id appears with the completing PATCH, not before.
    up.run_to(size - 1)
    nothing_visible("one byte before the end")
    up.run_to(size)
    check(up.file_id is not None, "the completing PATCH carried no Beehive-File-Id")
    status, h = up.head()
    check(status == 200 and h.get("beehive-file-id") == up.file_id, f"HEAD after completion: {status} {h}")
    file_id = up.file_id

    # 4. The bytes round-trip exactly.
    status, h, got = api.request("GET", f"/api/v1/files/{file_id}", timeout=60)
    check(status == 200, f"download: {status}")
    check(len(got) == size and got == data,
          f"download differs: {len(got)} bytes, sha256 {hashlib.sha256(got).hexdigest()} vs {up.sha256}")
    check(h.get("etag", "").strip('"') == up.sha256, f"ETag {h.get('etag')} is not the sha256 {up.sha256}")
    lo, hi = before - 1000, before + 1000
    status, _, part = api.request("GET", f"/api/v1/files/{file_id}", {"Range": f"bytes={lo}-{hi}"})
    check(status == 206 and part == data[lo:hi + 1], f"range across the kill offset: {status}, {len(part)} bytes")
    rows = psql(f"SELECT sha256 || ' ' || size FROM file.blobs")
    check(rows == f"{up.sha256} {size}", f"blobs after completion: {rows!r}")
    figures.update({"sha256": up.sha256, "file_id": file_id, "retries": up.retries,
                    "client_errors": up.errors, "download_equal": True})

    # 5. The sweeper reclaims the killed write's leftovers once they are due. Move the
    # clock forward for them: the tmp file older than the write deadline, the garbage
    # row due now.
    old = time.time() - 3 * 3600
    for p in tmp_files(storage):
        os.utime(p, (old, old))
    psql("UPDATE file.garbage SET due_at = now() - interval '1 second'")
    wait_for("the sweeper reclaiming the killed write's leftovers",
             lambda: not tmp_files(storage) and psql("SELECT count(*) FROM file.garbage") == "0", 20)
    blob_key = psql("SELECT storage_key FROM file.blobs")
    left = objects(storage)
    check(left == [blob_key], f"storage after the sweep: {left}, expected only {blob_key}")
    check(psql("SELECT count(*) FROM file.upload_parts") == "0", "upload parts left after completion")
    figures["swept"] = {"tmp_files_left": 0, "garbage_rows_left": 0, "objects_left": left}
    return figures
