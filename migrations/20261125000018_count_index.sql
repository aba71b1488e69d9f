-- The segment count index (src/audience/count_index.rs) keeps status, tags and fields
-- in memory and catches up before each count with the rows changed since its last
-- catch-up: `updated_at` finds changed and new subscribers, `subscriber_removals` the
-- removed ones. Both carry the writing transaction's start time (`now()`).
CREATE INDEX subscribers_updated ON subscribers (updated_at);

CREATE TABLE subscriber_removals (
    subscriber_id bigint NOT NULL,
    removed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriber_removals_at ON subscriber_removals (removed_at);

-- One statement-level trigger: a bulk delete writes its removals in one INSERT.
CREATE FUNCTION subscribers_log_removals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO subscriber_removals (subscriber_id) SELECT id FROM removed;
    RETURN NULL;
END $$;
CREATE TRIGGER subscribers_removals AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION subscribers_log_removals();
