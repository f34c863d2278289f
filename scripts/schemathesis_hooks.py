"""Schemathesis hooks for scripts/abuse-test.sh (loaded through SCHEMATHESIS_HOOKS).

tus PATCH bodies are `application/offset+octet-stream` (API.md, Files): raw bytes like
`application/octet-stream`, which schemathesis knows how to send; without this it
cannot build a request for PATCH /api/v1/files/uploads/{id} at all.
"""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
