-- The queue apart from the outbox. A message waiting to go (due, or claimed by a sender
-- and in flight) has a row in `message_queue`; `messages` keeps what was decided and what
-- happened. Recording an outcome used to change `messages.status` and `run_at`, which
-- `messages_due` indexes (its predicate and its key), so every recorded message was a new
-- row version with an entry in each of messages' five indexes. Now recording deletes the
-- queue row and updates only unindexed columns of `messages`, which PostgreSQL can do as
-- a heap-only (HOT) update; claims and lease renewals touch only the narrow queue row.
--
-- Invariant: a `message_queue` row exists exactly while its message's status is 'queued'.
CREATE TABLE message_queue (
    message_id  bigint PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    run_at      timestamptz NOT NULL,
    -- Attempts so far, counted when claimed (copied to `messages` with each outcome).
    attempts    integer NOT NULL DEFAULT 0,
    -- A claim: which sender holds it and until when (then it may be sent again).
    claimed_by  uuid,
    lease_until timestamptz
) WITH (fillfactor = 50);
CREATE INDEX message_queue_due ON message_queue (run_at, message_id);

INSERT INTO message_queue (message_id, run_at, attempts, claimed_by, lease_until)
SELECT id, run_at, attempts, claimed_by, lease_until FROM messages WHERE status = 'queued';

DROP INDEX messages_due;
-- Without `status`, recording an outcome leaves this index alone.
DROP INDEX messages_body;
CREATE INDEX messages_body ON messages (body_id);
-- A Message-ID carries the message's signed reference (`feedback::message_ref`), so a
-- report quoting it names the message without a lookup by Message-ID.
DROP INDEX messages_message_id;
ALTER TABLE messages DROP COLUMN run_at, DROP COLUMN claimed_by, DROP COLUMN lease_until;
-- Each outbox row is written once and updated once, with its outcome (reply, Message-ID,
-- time), which roughly doubles it: half of each page is left for that update, so it
-- stays on its page (measured in `bench/run send`: 57–61 % of outcomes heap-only at the
-- previous 70, 85–88 % at 50). Once the old versions are pruned, pages end up as full as
-- before. Applies to pages written from now on.
ALTER TABLE messages SET (fillfactor = 50);
