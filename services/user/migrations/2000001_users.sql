-- The user service's schema: accounts and pending email verification codes.
CREATE SCHEMA IF NOT EXISTS users;

CREATE TABLE users.users (
    id            uuid        PRIMARY KEY,            -- UUID v7, so ids sort by creation
    username      text        NOT NULL,               -- as typed; unique ignoring case
    nickname      text        NOT NULL DEFAULT '',
    avatar        text        NOT NULL DEFAULT '',
    description   text        NOT NULL DEFAULT '',
    email         text,                               -- canonical lowercase, verified when set
    password_hash text        NOT NULL,               -- argon2id PHC string
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_username_length CHECK (char_length(username) BETWEEN 3 AND 32),
    CONSTRAINT users_nickname_length CHECK (char_length(nickname) <= 64),
    CONSTRAINT users_avatar_length CHECK (char_length(avatar) <= 512),
    CONSTRAINT users_description_length CHECK (char_length(description) <= 512)
);

-- Uniqueness ignoring case; text_pattern_ops also serves `LIKE 'prefix%'` searches.
CREATE UNIQUE INDEX users_username_lower_key ON users.users (lower(username) text_pattern_ops);
CREATE UNIQUE INDEX users_email_key ON users.users (email) WHERE email IS NOT NULL;
CREATE INDEX users_nickname_lower_prefix ON users.users (lower(nickname) text_pattern_ops);

-- One pending code per address. Only a hash of (email, code) is kept.
CREATE TABLE users.email_codes (
    email      text        PRIMARY KEY,
    code_hash  bytea       NOT NULL,
    sent_at    timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    attempts   integer     NOT NULL DEFAULT 0
);
CREATE INDEX email_codes_expires_at ON users.email_codes (expires_at);
