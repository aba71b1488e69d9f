-- A claim no longer changes `status`. It used to set 'sending', and `status` is in
-- `messages_body (body_id, status)` and in the predicates of `messages_due` and
-- `messages_leased`, so every claim wrote new entries into all of messages' indexes (and
-- the outcome did it again). Now a message being sent is a queued row with a live lease:
-- a claim sets only `attempts`, `claimed_by` and `lease_until`, none of them indexed, so
-- it can be a heap-only (HOT) update; "sending" is derived from the lease where it is
-- shown. The enum keeps its 'sending' value (no longer written).
--
-- Claims held by a sender of the previous version stay held until their lease ends.
UPDATE messages SET status = 'queued' WHERE status = 'sending';
-- Indexed on the lease itself, it would forbid the heap-only claim; expired leases are
-- now found by the claim's own scan of `messages_due`.
DROP INDEX messages_leased;
-- Room on each page for the claimed row version, so it can stay on its page (HOT).
-- Applies to pages written from now on.
ALTER TABLE messages SET (fillfactor = 70);
-- No query reads messages by creation time (the Outbox pages by id, the primary key), yet
-- every new row version (enqueue, and the outcome's update, which changes `status`) wrote
-- an entry here: one of five index writes per recorded message, measured ~6 % of its WAL.
DROP INDEX messages_recent;
