-- No query reads events by kind alone: timelines go through `events_subscriber`,
-- per-message aggregates and the click rules through `events_message`. The b-tree on
-- (kind, at) cost one more index entry (and WAL record) on every event — every send,
-- open and click — and grew with the largest table. Reads by time (rollups, exports of
-- a period) get a BRIN index instead: events arrive in time order, so a few hundred
-- bytes summarise millions of rows, and an insert costs next to nothing.
DROP INDEX events_kind;
CREATE INDEX events_at ON events USING brin (at);
