-- Migration 7: alerts (store/alerts.rs). An alert is one rule about one subject (a device, the gateway, a task …):
-- a row while it fires, kept after it resolved (or, for an event rule, after it was told) so list_alerts can show what
-- happened recently; retention deletes old ones. A restart reads the firing rows back, so it neither tells again
-- what it already told nor forgets to tell that it resolved.
CREATE TABLE alerts (
    rule        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    label       TEXT NOT NULL,
    space       TEXT,
    state       TEXT NOT NULL,
    since       INTEGER NOT NULL,
    fired_at    INTEGER NOT NULL,
    told_at     INTEGER,
    resolved_at INTEGER,
    PRIMARY KEY (rule, subject)
) WITHOUT ROWID;

-- Silences (silence_alerts): alerts they match are not told until `until`.
CREATE TABLE alert_silences (
    id         TEXT PRIMARY KEY,
    rule       TEXT,
    space      TEXT,
    device     TEXT,
    until      INTEGER NOT NULL,
    by         TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    comment    TEXT
);

-- Every message to a channel, written before it is tried: pending until the receiver acknowledged it (sent) or it
-- grew too old (given_up). `notification` is the grouped message (rule, firing/resolved, its subjects), rendered for
-- the channel when it is sent.
CREATE TABLE alert_deliveries (
    id           INTEGER PRIMARY KEY,
    channel      TEXT NOT NULL,
    rule         TEXT NOT NULL,
    notification TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    last_error   TEXT,
    done_at      INTEGER
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX alert_deliveries_of ON alert_deliveries (rule, created_at);
