-- Why an import or a job failed, as a stable code plus its parameters (a line number, a
-- column, a segment id…): pages word the code in the reader's language. The old text
-- columns (`imports.error`, `jobs.last_error`) keep the English technical detail, shown
-- second. Rows written before this migration have no code; pages show their text.
ALTER TABLE imports
    ADD COLUMN error_code text,
    ADD COLUMN error_params jsonb NOT NULL DEFAULT '{}';
ALTER TABLE jobs
    ADD COLUMN error_code text,
    ADD COLUMN error_params jsonb NOT NULL DEFAULT '{}';
