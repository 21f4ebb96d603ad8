-- Migration 5: runs, several commands delivered through the outbox as one durable sequence (the steps of a room
-- preset fired by a schedule). Every step is a task written when the run starts; the first is queued, the others
-- are `held` until the step before them ends. The database moves a run on by itself: when a step reaches a final
-- state, the next one is queued if that step succeeded or may fail (`continue_on_error`), else every later step is
-- `skipped`. So the run advances in the same transaction that records its step's outcome, whichever code path
-- records it, and a crash between the two is impossible.
ALTER TABLE tasks ADD COLUMN run_id TEXT;
ALTER TABLE tasks ADD COLUMN step INTEGER;
ALTER TABLE tasks ADD COLUMN continue_on_error INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_run ON tasks (run_id, step) WHERE run_id IS NOT NULL;

CREATE TRIGGER run_step_ended AFTER UPDATE OF state ON tasks
WHEN NEW.run_id IS NOT NULL
 AND OLD.state NOT IN ('done', 'failed', 'aborted', 'rejected', 'expired', 'cancelled', 'skipped')
 AND NEW.state IN ('done', 'failed', 'aborted', 'rejected', 'expired', 'cancelled', 'skipped')
BEGIN
    UPDATE tasks SET state = 'queued', next_attempt_at = NEW.updated_at, updated_at = NEW.updated_at
        WHERE run_id = NEW.run_id AND step = NEW.step + 1 AND state = 'held'
          AND (NEW.state = 'done' OR NEW.continue_on_error = 1);
    UPDATE tasks SET state = 'skipped', updated_at = NEW.updated_at,
                     last_error = 'not sent: step ' || NEW.step || ' of the run ended ' || NEW.state
        WHERE run_id = NEW.run_id AND step > NEW.step AND state = 'held'
          AND NOT (NEW.state = 'done' OR NEW.continue_on_error = 1);
END;
