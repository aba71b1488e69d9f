-- The subscriber list's status and tag filters, and the tags page's counts, are answered
-- by the live index in memory (src/audience/live_index.rs), as segment counts and search
-- already are. These three indexes served nothing else an interactive page waits on, and
-- each imported or re-written subscriber paid for all three: without them a 1,000,000-row
-- import writes 3 WAL records a row instead of 6, and its database time fell by a fifth.
-- Without the live index (before its first build, after a database error) these filters
-- and counts are sequential scans, as segment conditions on fields already are; sending,
-- exports and bulk actions select their recipients in one pass either way.
DROP INDEX subscribers_tags;
DROP INDEX subscribers_status;
DROP INDEX subscribers_created;
