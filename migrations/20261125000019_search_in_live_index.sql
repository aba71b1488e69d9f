-- The live index (src/audience/live_index.rs) answers segment counts and the list's
-- search from memory and catches up before each answer with what committed since its
-- last read. It finds those changes by transaction id, which is exact whoever wrote
-- them and whatever the clocks say (the `updated_at` horizon of migration 18 relied on
-- every writer being visible in pg_stat_activity):
--
-- * `change_xid`: the id of the transaction that last changed the record (the same
--   columns as `updated_at`); rows from before this migration carry 0, older than any
--   snapshot an index is built from.
-- * `subscriber_removals.xid`: the same for removals.
ALTER TABLE subscribers ADD COLUMN change_xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE subscribers ALTER COLUMN change_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX subscribers_change ON subscribers (change_xid);
DROP INDEX subscribers_updated;

CREATE FUNCTION subscribers_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    NEW.change_xid := pg_current_xact_id();
    RETURN NEW;
END $$;
DROP TRIGGER subscribers_updated_at ON subscribers;
CREATE TRIGGER subscribers_updated_at
    BEFORE UPDATE OF email, name, status, fields, tag_ids, source, timezone, language,
                     consent_at, consent_method, consent_form_id, consent_ip,
                     confirmed_at, unsubscribed_at
    ON subscribers FOR EACH ROW EXECUTE FUNCTION subscribers_stamp_change();

ALTER TABLE subscriber_removals ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX subscriber_removals_xid ON subscriber_removals (xid);

-- The list's search (address or name contains …) is answered by the live index. The
-- trigram index it replaces was half of an imported row's database cost
-- (docs/BENCHMARKS.md); without the live index (the first seconds after a start) the
-- search is a sequential scan.
DROP INDEX subscribers_search;
