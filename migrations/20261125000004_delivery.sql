-- Delivery: what messages say, the outbox, locally captured mail, shared send-rate windows.

-- What a message says, frozen when it is queued; a campaign's messages share one body.
CREATE TABLE message_bodies (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- What it is for: 'confirmation', 'test', 'campaign', … (shown in the Outbox).
    purpose    text NOT NULL,
    subject    text NOT NULL CHECK (length(subject) <= 998),
    preheader  text NOT NULL DEFAULT '',
    body       text NOT NULL,
    format     text NOT NULL DEFAULT 'markdown' CHECK (format IN ('markdown', 'html')),
    from_name  text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE message_status AS ENUM ('queued', 'sending', 'sent', 'failed', 'bounced', 'suppressed', 'cancelled');

-- The outbox: one row per message, written in the transaction that decided to send it.
CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- One message per decision: a retry, a crash or a second process writes nothing more.
    idempotency_key text NOT NULL,
    -- Marketing mail goes only to active subscribers (checked again at send time);
    -- transactional mail (confirmations, tests) also to the unconfirmed.
    marketing       boolean NOT NULL,
    body_id         bigint NOT NULL REFERENCES message_bodies (id),
    subscriber_id   bigint REFERENCES subscribers (id) ON DELETE SET NULL,
    to_email        text NOT NULL,
    to_name         text NOT NULL DEFAULT '',
    -- Merge data beyond the subscriber's own (a confirmation link, a content item, …).
    data            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    status          message_status NOT NULL DEFAULT 'queued',
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 8,
    run_at          timestamptz NOT NULL,
    -- A claim: which sender holds it and until when (then it may be sent again).
    claimed_by      uuid,
    lease_until     timestamptz,
    smtp_reply      text,
    message_id      text,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz
);
CREATE UNIQUE INDEX messages_idempotency_key ON messages (idempotency_key);
CREATE INDEX messages_due ON messages (run_at, id) WHERE status = 'queued';
CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_subscriber ON messages (subscriber_id, created_at DESC) WHERE subscriber_id IS NOT NULL;
CREATE INDEX messages_body ON messages (body_id, status);
CREATE INDEX messages_recent ON messages (created_at DESC, id DESC);

-- Wakes idle senders when mail is queued (any process).
CREATE FUNCTION messages_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('loopline_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_notify AFTER INSERT ON messages FOR EACH STATEMENT EXECUTE FUNCTION messages_notify();

-- With no SMTP server configured, "sent" mail is kept here (the exact bytes that would
-- have gone out) and shown in the dashboard's Outbox preview.
CREATE TABLE captured_mail (
    message_id  bigint PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    raw         bytea NOT NULL,
    -- The rendered parts, for showing without a MIME parser.
    subject     text NOT NULL,
    html        text NOT NULL,
    text        text NOT NULL,
    captured_at timestamptz NOT NULL
);

-- Send-rate windows shared by every process on this database.
CREATE TABLE send_windows (
    scope text NOT NULL CHECK (scope IN ('second', 'hour')),
    start timestamptz NOT NULL,
    used  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, start)
);

-- Per-message aggregates (opens, clicks, bounces of one message or one body) read events
-- by message.
ALTER TABLE events ADD COLUMN message_id bigint;
CREATE INDEX events_message ON events (message_id, kind) WHERE message_id IS NOT NULL;
