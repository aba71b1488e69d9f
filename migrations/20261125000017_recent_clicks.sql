-- The link-burst rule asks, for each click, which links of its message were clicked in
-- the last few seconds. Reading that from `events` visited every recent click of the
-- message (a heap fetch and a JSON field each: ~40 µs a click when a message is clicked
-- often). Each message now keeps the time of the latest click of each of its links,
-- `{"<position>": <epoch ms>, …}`, set by the same statement that stores the clicks: one
-- row read per message, and an update of an unindexed column (heap-only: `messages`
-- keeps half of each page free).
ALTER TABLE messages ADD COLUMN recent_clicks jsonb;
