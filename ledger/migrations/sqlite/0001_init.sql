-- phogate ledger schema, version 1. Money columns are nano-USD; times are unix microseconds (created_at: seconds).
CREATE TABLE tiers (
    name               text PRIMARY KEY,
    monthly_budget_vnd bigint NOT NULL DEFAULT 0,
    updated_at         integer NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE users (
    id                 text PRIMARY KEY,
    tier               text NOT NULL,
    monthly_budget_vnd bigint,          -- per-user override of the tier budget
    created_at         integer NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE api_keys (
    key_sha256 blob PRIMARY KEY CHECK (length(key_sha256) = 32),  -- never the key itself
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at integer NOT NULL DEFAULT (unixepoch()),
    revoked_at integer
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);

CREATE TABLE monthly_budgets (
    user_id       text   NOT NULL,
    month         text   NOT NULL,      -- "2006-01", UTC
    budget_nano   bigint NOT NULL DEFAULT 0,
    spent_nano    bigint NOT NULL DEFAULT 0,
    reserved_nano bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, month)
);

CREATE TABLE budget_reservations (
    id          text PRIMARY KEY,
    user_id     text        NOT NULL,
    month       text        NOT NULL,
    amount_nano bigint      NOT NULL,
    expires_at  integer NOT NULL
);
CREATE INDEX budget_reservations_expiry_idx ON budget_reservations (user_id, month, expires_at);

CREATE TABLE usage (
    id                 integer PRIMARY KEY AUTOINCREMENT,
    request_id         text        NOT NULL UNIQUE,
    user_id            text        NOT NULL,
    tier               text        NOT NULL,
    requested_model    text        NOT NULL,
    served_model       text        NOT NULL,
    provider           text        NOT NULL,
    prompt_tokens      bigint      NOT NULL,
    completion_tokens  bigint      NOT NULL,
    cached_tokens      bigint      NOT NULL,
    cost_nano          bigint      NOT NULL,
    cache_layer        text        NOT NULL,
    latency_ms         bigint      NOT NULL,
    status             integer     NOT NULL,
    estimated          integer     NOT NULL,
    ts                 integer NOT NULL
);
CREATE INDEX usage_user_ts_idx ON usage (user_id, ts);
