-- CSV import speed (docs/BENCHMARKS.md, "import").
--
-- `subscribers_fields` (GIN, jsonb_path_ops) serves only `fields @> …`, `@?` and `@@`,
-- and no query uses them: segment conditions read `fields ->> key` (compared, cast,
-- LIKE) and `fields ? key`, none of which this operator class can answer. Every insert
-- still paid for one entry per custom field.
DROP INDEX IF EXISTS subscribers_fields;

-- Uploads are stored in 1 MiB chunks for the import job and deleted when it ends. The
-- default TOAST compression (pglz) ran at ~65 MB/s; lz4 is several times faster and still
-- shrinks CSV. Builds of PostgreSQL without lz4 keep the default.
DO $$
BEGIN
    ALTER TABLE import_chunks ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'PostgreSQL was built without lz4; import uploads keep pglz';
END $$;
