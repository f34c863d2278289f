#!/usr/bin/env python3
"""Uploads through Beehive's tus endpoint with tuspy, a tus client written by others.

Usage: tus_client.py <uploads URL> <access token>

Uploads 600 KiB in 64 KiB chunks with per-chunk checksums (Upload-Checksum: sha1),
stops after three chunks, then resumes with a fresh uploader from the server's offset
(as a client restarted with the stored upload URL would). Prints one JSON line:
{"file_id", "sha256", "resumed_from"}. Exits non-zero on any protocol failure.
"""

import hashlib
import io
import json
import os
import sys

import requests
from tusclient import client

CHUNK = 64 * 1024


def main() -> int:
    url, token = sys.argv[1], sys.argv[2]
    data = os.urandom(600 * 1024)
    sha256 = hashlib.sha256(data).hexdigest()
    tus = client.TusClient(url, headers={"Authorization": f"Bearer {token}"})
    metadata = {"filename": "tuspy.bin", "sha256": sha256, "content_type": "application/octet-stream"}

    first = tus.uploader(file_stream=io.BytesIO(data), chunk_size=CHUNK, metadata=metadata,
                         upload_checksum=True)
    for _ in range(3):
        first.upload_chunk()
    assert first.offset == 3 * CHUNK, first.offset
    upload_url = first.url

    # A "restarted" client: only the upload URL survived.
    second = tus.uploader(file_stream=io.BytesIO(data), url=upload_url, chunk_size=CHUNK,
                          metadata=metadata, upload_checksum=True)
    resumed_from = second.offset
    assert resumed_from == 3 * CHUNK, resumed_from
    second.upload()
    assert second.offset == len(data), second.offset

    head = requests.head(upload_url, headers={"Authorization": f"Bearer {token}",
                                              "Tus-Resumable": "1.0.0"}, timeout=30)
    assert head.status_code == 200, head.status_code
    file_id = head.headers.get("Beehive-File-Id")
    assert file_id, dict(head.headers)
    print(json.dumps({"file_id": file_id, "sha256": sha256, "resumed_from": resumed_from}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
