-- Recording a click counts the distinct links of its message clicked in the last few
-- seconds (the link-burst rule) and may re-judge those clicks: both read only a
-- message's recent clicks. With `at` in the per-message index they are found without
-- visiting the message's older events; per-message aggregates use the same index's
-- (message_id, kind) prefix as before, so events still carry the same number of indexes.
DROP INDEX events_message;
CREATE INDEX events_message ON events (message_id, kind, at) WHERE message_id IS NOT NULL;
