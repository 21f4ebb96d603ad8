-- Migration 6: room schedules (store/schedules.rs). One row per schedule the gateway has seen: the last due time
-- it handled (fired or skipped; every due time after it is still to come), the when-text it was computed for (an
-- edited schedule starts afresh instead of catching up on times it never had), and its pause. The row is written in
-- the transaction that fires or skips, so that record is the proof a due time never runs twice.
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    spec         TEXT NOT NULL,
    handled      INTEGER NOT NULL,
    paused_until INTEGER,
    paused_by    TEXT,
    last_skip    TEXT
) WITHOUT ROWID;

-- Each run of a schedule: its tasks carry the run_id (migration 5). `result` is written with `finished_at` when
-- every step is final; `due` is NULL for a run started by hand (run_schedule_now).
CREATE TABLE schedule_runs (
    run_id      TEXT PRIMARY KEY,
    schedule    TEXT NOT NULL,
    due         INTEGER,
    fired_at    INTEGER NOT NULL,
    principal   TEXT NOT NULL,
    finished_at INTEGER,
    result      TEXT
);
CREATE INDEX schedule_runs_of ON schedule_runs (schedule, fired_at);
CREATE INDEX schedule_runs_open ON schedule_runs (run_id) WHERE finished_at IS NULL;
