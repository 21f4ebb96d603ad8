-- Schema version 1: the tables of the whole product. Later versions append migrations; never edit this.

-- Last known answer for every read, keyed by resource kind and id. `hash` lets a snapshot skip unchanged rows.
CREATE TABLE cache (
    resource   TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    body       TEXT    NOT NULL,   -- JSON as Xyte sent it (unknown fields kept)
    hash       BLOB    NOT NULL,   -- SHA-256 of body
    fetched_at INTEGER NOT NULL,   -- ms since the epoch, when this exact body was last confirmed by Xyte
    PRIMARY KEY (resource, key)
) WITHOUT ROWID;

-- The local event log. AUTOINCREMENT: ids are never reused after pruning, so SSE resume ids stay valid.
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        INTEGER NOT NULL,    -- ms since the epoch
    kind      TEXT    NOT NULL,
    device_id TEXT,
    space_id  TEXT,
    data      TEXT    NOT NULL     -- JSON object
);
CREATE INDEX events_kind_id ON events (kind, id);
CREATE INDEX events_device_id ON events (device_id, id) WHERE device_id IS NOT NULL;
CREATE INDEX events_ts ON events (ts);

-- The command outbox and async tasks. `seq` orders tasks per device.
CREATE TABLE tasks (
    task_id         TEXT    PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE,
    device_id       TEXT    NOT NULL,
    command         TEXT    NOT NULL,
    body            TEXT    NOT NULL,   -- the JSON to POST to Xyte
    state           TEXT    NOT NULL,   -- queued, sending, sent, pending, in_progress, done, failed, aborted,
                                        -- rejected, expired, cancelled
    xyte_command_id TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,   -- ms since the epoch
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_error      TEXT,
    principal       TEXT    NOT NULL
);
CREATE INDEX tasks_state_due ON tasks (state, next_attempt_at);
CREATE INDEX tasks_device_seq ON tasks (device_id, seq);

-- LAN bearer tokens: only the SHA-256 of the secret is stored.
CREATE TABLE tokens (
    name         TEXT    PRIMARY KEY,
    hash         BLOB    NOT NULL UNIQUE,
    role         TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER
);

-- Per-principal defaults set by `set_context`.
CREATE TABLE context (
    principal  TEXT    PRIMARY KEY,
    data       TEXT    NOT NULL,   -- JSON object
    updated_at INTEGER NOT NULL
);

-- Every mutating call; kept at least as long as events.
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         INTEGER NOT NULL,
    principal  TEXT    NOT NULL,
    tool       TEXT    NOT NULL,
    arguments  TEXT    NOT NULL,   -- JSON with secrets removed by the caller
    outcome    TEXT    NOT NULL,   -- ok, error, dry_run
    error_code TEXT
);
CREATE INDEX audit_ts ON audit (ts);

-- Webhook ids already accepted, for idempotency.
CREATE TABLE webhook_receipts (
    id          TEXT    PRIMARY KEY,
    received_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Small facts about the instance (e.g. last successful Xyte call).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
