-- The file service's schema. A blob is content, stored once per sha256 and counted: its
-- refcount is the number of files pointing at it. A file is one user's reference to a
-- blob. Uploads (tus) keep their state here so any replica and any gateway resumes them.
CREATE SCHEMA IF NOT EXISTS file;

CREATE TABLE file.blobs (
    id                  uuid        PRIMARY KEY,
    -- 64 lowercase hex characters.
    sha256              text        NOT NULL UNIQUE CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size                bigint      NOT NULL CHECK (size >= 0),
    storage_key         text        NOT NULL UNIQUE,
    refcount            bigint      NOT NULL CHECK (refcount >= 0),
    -- When refcount last reached 0; the sweeper removes the blob a grace period later
    -- unless a new reference came first.
    unreferenced_since  timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX blobs_unreferenced ON file.blobs (unreferenced_since) WHERE refcount = 0;

CREATE TABLE file.files (
    id              uuid        PRIMARY KEY,
    owner_id        uuid        NOT NULL,
    blob_id         uuid        NOT NULL REFERENCES file.blobs (id),
    filename        text        NOT NULL,
    content_type    text        NOT NULL,
    -- A message carries (or is about to carry) this file: deleting it only hides it
    -- from its owner, and it keeps counting.
    shared          boolean     NOT NULL DEFAULT false,
    owner_deleted   boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX files_by_blob ON file.files (blob_id);

CREATE TABLE file.uploads (
    id              uuid        PRIMARY KEY,
    owner_id        uuid        NOT NULL,
    length          bigint      NOT NULL CHECK (length >= 0),
    received        bigint      NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= length),
    sha256          text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    filename        text        NOT NULL,
    content_type    text        NOT NULL,
    -- The client's Upload-Metadata header, echoed by HEAD.
    metadata        text        NOT NULL,
    -- Set when the upload completed and was verified.
    file_id         uuid,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX uploads_expiry ON file.uploads (expires_at);

-- The bytes of an upload, one object per PATCH (so concurrent or crashed writers never
-- overwrite each other's bytes), contiguous from 0 to the upload's `received`.
CREATE TABLE file.upload_parts (
    upload_id       uuid        NOT NULL REFERENCES file.uploads (id) ON DELETE CASCADE,
    start           bigint      NOT NULL,
    length          bigint      NOT NULL CHECK (length > 0),
    storage_key     text        NOT NULL,
    PRIMARY KEY (upload_id, start)
);

CREATE TABLE file.thumbnails (
    blob_id         uuid        NOT NULL REFERENCES file.blobs (id) ON DELETE CASCADE,
    -- ThumbnailSize: 1 small, 2 medium.
    size            smallint    NOT NULL,
    sha256          text        NOT NULL,
    byte_size       bigint      NOT NULL,
    content_type    text        NOT NULL,
    storage_key     text        NOT NULL,
    PRIMARY KEY (blob_id, size)
);

-- Objects that are or may become garbage. A row is written before an object's bytes
-- (due far enough ahead for the write to finish) and deleted in the transaction that
-- makes the object referenced; a deleted blob, part or thumbnail gets a row due now in
-- the transaction that forgets it. The sweeper deletes due objects, then their rows, so
-- a crash at any point leaves nothing it would not remove.
CREATE TABLE file.garbage (
    storage_key     text        PRIMARY KEY,
    due_at          timestamptz NOT NULL
);

CREATE INDEX garbage_due ON file.garbage (due_at);
