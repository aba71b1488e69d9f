-- A stable code per report line (`email`, `duplicate`, `erased`…) beside the English
-- reason: the downloadable report carries both, the import page names the code in the
-- reader's language. Lines written before this migration have no code ('').
ALTER TABLE import_report ADD COLUMN code text NOT NULL DEFAULT '';
