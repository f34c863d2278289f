-- The message service's schema: conversations, their members, messages and the
-- transactional outbox. Unread counts are derived (last_seq - read_seq), never stored
-- per member, so a message costs one conversation row update whatever the group size.
CREATE SCHEMA IF NOT EXISTS message;

CREATE TABLE message.conversations (
    id              uuid        PRIMARY KEY,
    -- 1 direct, 2 group (ConversationKind).
    kind            smallint    NOT NULL CHECK (kind IN (1, 2)),
    name            text        NOT NULL DEFAULT '',
    avatar          text        NOT NULL DEFAULT '',
    owner_id        uuid,
    -- The two users of a direct conversation, smaller id first, so a pair has one row.
    direct_low      uuid,
    direct_high     uuid,
    -- The seq of the newest message; the next message takes last_seq + 1 under this
    -- row's lock, which is what makes seqs gap-free under concurrent senders.
    last_seq        bigint      NOT NULL DEFAULT 0,
    member_count    integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Time of the last message (creation time before the first): the list order.
    sort_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 1) = (direct_low IS NOT NULL AND direct_high IS NOT NULL))
);

CREATE UNIQUE INDEX conversations_direct_pair
    ON message.conversations (direct_low, direct_high) WHERE kind = 1;

CREATE TABLE message.members (
    conversation_id uuid        NOT NULL REFERENCES message.conversations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL,
    -- Strictly increasing over all joins: "longest-standing member" without ties.
    member_no       bigint      GENERATED ALWAYS AS IDENTITY,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    -- last_seq when the member joined: it sees and counts only messages after it.
    join_seq        bigint      NOT NULL,
    delivered_seq   bigint      NOT NULL,
    read_seq        bigint      NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX members_by_user ON message.members (user_id);

CREATE TABLE message.messages (
    conversation_id uuid        NOT NULL REFERENCES message.conversations (id) ON DELETE CASCADE,
    seq             bigint      NOT NULL,
    id              uuid        NOT NULL,
    sender_id       uuid        NOT NULL,
    client_msg_id   text        NOT NULL,
    -- MessageType: 1 text, 2 image, 3 voice, 4 file.
    msg_type        smallint    NOT NULL,
    content         text        NOT NULL,
    file_id         uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq)
);

-- Idempotent sends: a repeated (sender, client_msg_id) finds the first message.
CREATE UNIQUE INDEX messages_client_id ON message.messages (sender_id, client_msg_id);

-- What the relay still has to publish. Rows reference what they announce (a message
-- by seq, a receipt by member) instead of copying it, so the send transaction writes
-- a small row and the relay reads current state in one query per batch.
CREATE TABLE message.outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- hash(conversation_id) mod the partition count: one relay owns a partition at a
    -- time, so rows of one conversation are published in order.
    partition       smallint    NOT NULL,
    conversation_id uuid        NOT NULL,
    -- 1 message (seq), 2 receipt (user_id), 3 conversation_updated.
    kind            smallint    NOT NULL CHECK (kind IN (1, 2, 3)),
    seq             bigint,
    user_id         uuid,
    -- The sending device, which gets an ack instead of the message.
    device_id       text,
    -- Recipients besides the current members (a removed member learns of its removal).
    extra_recipients uuid[],
    attempts        integer     NOT NULL DEFAULT 0,
    available_at    timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Rows held back after a failed publish; they hold back later rows of their
-- conversation, and this index keeps finding them cheap (normally it is empty).
CREATE INDEX outbox_held ON message.outbox (conversation_id, id) WHERE attempts > 0;

-- Rows that kept failing to publish, kept for inspection and manual replay.
CREATE TABLE message.outbox_dead (
    id              bigint      PRIMARY KEY,
    partition       smallint    NOT NULL,
    conversation_id uuid        NOT NULL,
    kind            smallint    NOT NULL,
    seq             bigint,
    user_id         uuid,
    device_id       text,
    extra_recipients uuid[],
    attempts        integer     NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now()
);

-- Wakes the relay when rows commit. A statement-level trigger with a constant
-- payload: PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION message.notify_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('beehive_message_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON message.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION message.notify_outbox();
