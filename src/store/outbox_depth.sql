-- Migration 2: the outbox's depth kept by the database itself. Admission control reads it on every command it
-- accepts (and status and metrics on every scrape); counting the undelivered tasks each time grew with the outbox
-- (a FULL commit per command went from 4,700 to 1,700 a second with tens of thousands queued). The counts are kept
-- by triggers on every insert, state change and delete of a task, so no code path can let them drift, and reading
-- one costs a row lookup. Undelivered = queued or sending, as `store::tasks::outbox_depth` defines it.
CREATE TABLE outbox_depth (
    device_id TEXT    PRIMARY KEY,   -- '' (never a device id) holds the total over all devices
    n         INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO outbox_depth (device_id, n)
    SELECT device_id, COUNT(*) FROM tasks WHERE state IN ('queued', 'sending') GROUP BY device_id;
INSERT INTO outbox_depth (device_id, n)
    SELECT '', COUNT(*) FROM tasks WHERE state IN ('queued', 'sending');

CREATE TRIGGER outbox_depth_insert AFTER INSERT ON tasks
WHEN NEW.state IN ('queued', 'sending')
BEGIN
    INSERT INTO outbox_depth (device_id, n) VALUES (NEW.device_id, 1), ('', 1)
        ON CONFLICT (device_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER outbox_depth_enter AFTER UPDATE OF state ON tasks
WHEN OLD.state NOT IN ('queued', 'sending') AND NEW.state IN ('queued', 'sending')
BEGIN
    INSERT INTO outbox_depth (device_id, n) VALUES (NEW.device_id, 1), ('', 1)
        ON CONFLICT (device_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER outbox_depth_leave AFTER UPDATE OF state ON tasks
WHEN OLD.state IN ('queued', 'sending') AND NEW.state NOT IN ('queued', 'sending')
BEGIN
    UPDATE outbox_depth SET n = n - 1 WHERE device_id IN (OLD.device_id, '');
END;

CREATE TRIGGER outbox_depth_delete AFTER DELETE ON tasks
WHEN OLD.state IN ('queued', 'sending')
BEGIN
    UPDATE outbox_depth SET n = n - 1 WHERE device_id IN (OLD.device_id, '');
END;
