-- Feedback from mail providers (bounces, complaints, deliveries) arriving by webhook.

-- What has been received, so a provider's retry or a replayed request changes nothing:
-- `event:<provider event id>` for each event, `token:<signature token>` for providers
-- whose signatures carry a one-time token (Mailgun). Old rows are pruned as new ones come.
CREATE TABLE feedback_receipts (
    provider    text NOT NULL,
    key         text NOT NULL CHECK (length(key) <= 300),
    received_at timestamptz NOT NULL,
    PRIMARY KEY (provider, key)
);
CREATE INDEX feedback_receipts_received ON feedback_receipts (received_at);

-- Providers echo our Message-ID header; this finds the outbox row it belongs to.
CREATE INDEX messages_message_id ON messages (message_id) WHERE message_id IS NOT NULL;
