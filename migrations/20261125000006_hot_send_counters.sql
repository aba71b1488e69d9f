-- Sending bumps subscribers.last_sent_at and consecutive_unopened for every recipient.
-- An index on consecutive_unopened made each of those updates write a new entry into
-- every index of the table (trigram, JSONB, tags): no HOT update was possible. After one
-- campaign nearly every subscriber matches the old partial index anyway, so it did not
-- help the "N unopened in a row" segment condition either. (Migration 8 leaves free
-- space on each page so the updated row can stay on its page.)
DROP INDEX IF EXISTS subscribers_unopened;
