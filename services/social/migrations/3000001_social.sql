-- The social service's schema: friend requests and friendships.
CREATE SCHEMA IF NOT EXISTS social;

-- status: 1 pending, 2 accepted, 3 rejected, 4 expired (stored only when a newer
-- request to the same user supersedes a pending one; a pending request older than
-- 7 days is reported as expired at read time).
CREATE TABLE social.friend_requests (
    id           uuid PRIMARY KEY,
    from_user_id uuid NOT NULL,
    to_user_id   uuid NOT NULL,
    message      text NOT NULL DEFAULT '',
    status       smallint NOT NULL CHECK (status BETWEEN 1 AND 4),
    created_at   timestamptz NOT NULL DEFAULT now(),
    decided_at   timestamptz,
    CHECK (from_user_id <> to_user_id)
);

-- At most one pending request per direction of a pair (the service serializes each
-- pair with an advisory lock; this is the backstop).
CREATE UNIQUE INDEX friend_requests_one_pending
    ON social.friend_requests (from_user_id, to_user_id) WHERE status = 1;
CREATE INDEX friend_requests_incoming
    ON social.friend_requests (to_user_id, created_at DESC, id DESC) WHERE status = 1;
CREATE INDEX friend_requests_outgoing
    ON social.friend_requests (from_user_id, created_at DESC, id DESC) WHERE status = 1;

-- One row per direction, so "friends of X" is one index range scan.
CREATE TABLE social.friendships (
    user_id    uuid NOT NULL,
    friend_id  uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, friend_id),
    CHECK (user_id <> friend_id)
);
