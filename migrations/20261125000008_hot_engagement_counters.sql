-- Every human open and click moves the subscriber's engagement counters (last_open_at,
-- last_click_at, last_engaged_at). An index on a column that changes forbids PostgreSQL's
-- heap-only (HOT) update, so with `subscribers_engaged` each counter update wrote new
-- entries into all of subscribers' indexes, three of them GIN (search trigrams, fields,
-- tags): measured in `bench/run click`, that was most of the click path's database time
-- and the source of its latency spikes (GIN pending-list flushes). Without it, and with
-- room left on each page for the new row version, counter updates are heap-only.
-- Lifecycle stages filter on last_engaged_at with ranges that cover large parts of the
-- list, which a scan serves about as well (see docs/ARCHITECTURE.md, Decisions).
DROP INDEX subscribers_engaged;
ALTER TABLE subscribers SET (fillfactor = 85);
