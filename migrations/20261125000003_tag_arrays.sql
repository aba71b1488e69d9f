-- Tag memberships move onto the subscriber row as an indexed array of tag ids.
--
-- Why: a membership table costs two foreign-key probes and two index entries per
-- membership on every import row, and a segment like "tag X AND status AND field" had to
-- probe `subscribers` once per member. With `tag_ids` the insert writes the row once and
-- a tag condition is one bitmap scan of a GIN index on the same table as every other
-- condition (see docs/BENCHMARKS.md).
ALTER TABLE subscribers ADD COLUMN tag_ids bigint[] NOT NULL DEFAULT '{}';

UPDATE subscribers s SET tag_ids = m.ids
FROM (SELECT subscriber_id, array_agg(tag_id ORDER BY tag_id) AS ids FROM subscriber_tags GROUP BY subscriber_id) m
WHERE m.subscriber_id = s.id;

DROP TABLE subscriber_tags;

CREATE INDEX subscribers_tags ON subscribers USING gin (tag_ids);

-- Adds ids to a tag array, keeping it sorted and free of duplicates.
CREATE FUNCTION tag_ids_add(current bigint[], added bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT t ORDER BY t), '{}') FROM unnest(current || added) AS t
$$;

-- A deleted tag disappears from every subscriber (what ON DELETE CASCADE did).
CREATE FUNCTION tags_forget_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE subscribers SET tag_ids = array_remove(tag_ids, OLD.id) WHERE tag_ids @> ARRAY[OLD.id];
    RETURN OLD;
END
$$;
CREATE TRIGGER tags_forget_deleted AFTER DELETE ON tags FOR EACH ROW EXECUTE FUNCTION tags_forget_deleted();
