-- Audience: subscribers, consent, tags, custom fields, signup forms, the event log.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TYPE subscriber_status AS ENUM ('unconfirmed', 'active', 'unsubscribed', 'bounced', 'complained');

CREATE TABLE subscribers (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email                text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    name                 text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    status               subscriber_status NOT NULL DEFAULT 'unconfirmed',
    -- Typed custom field values, keyed by custom_fields.key.
    fields               jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(fields) = 'object'),
    source               text NOT NULL DEFAULT '',
    timezone             text,
    language             text,
    -- The consent record: when, how, through which form, from which address.
    consent_at           timestamptz,
    consent_method       text,
    consent_form_id      bigint,
    consent_ip           text,
    confirmed_at         timestamptz,
    unsubscribed_at      timestamptz,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- Engagement counters, maintained incrementally by tracking (human events only).
    last_sent_at         timestamptz,
    last_open_at         timestamptz,
    last_click_at        timestamptz,
    last_engaged_at      timestamptz,
    consecutive_unopened integer NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX subscribers_email_key ON subscribers (lower(email));
CREATE INDEX subscribers_status ON subscribers (status, id);
CREATE INDEX subscribers_created ON subscribers (created_at, id);
CREATE INDEX subscribers_engaged ON subscribers (last_engaged_at);
CREATE INDEX subscribers_unopened ON subscribers (consecutive_unopened) WHERE consecutive_unopened > 0;
CREATE INDEX subscribers_fields ON subscribers USING gin (fields jsonb_path_ops);
CREATE INDEX subscribers_search ON subscribers USING gin (lower(email) gin_trgm_ops, lower(name) gin_trgm_ops);
CREATE TRIGGER subscribers_updated_at BEFORE UPDATE ON subscribers FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE tags (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- Topics are the tags a subscriber may choose on the preference page.
    is_topic   boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tags_name_key ON tags (lower(name));

CREATE TABLE subscriber_tags (
    subscriber_id bigint NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    tag_id        bigint NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber_id, tag_id)
);
CREATE INDEX subscriber_tags_tag ON subscriber_tags (tag_id, subscriber_id);

CREATE TYPE field_type AS ENUM ('text', 'number', 'date', 'boolean', 'choice');

CREATE TABLE custom_fields (
    key        text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    label      text NOT NULL,
    type       field_type NOT NULL,
    choices    text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE forms (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug          text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name          text NOT NULL,
    double_opt_in boolean NOT NULL DEFAULT true,
    tag_ids       bigint[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Addresses that must never be added back without their own new consent: erased on
-- request (kept only as a hash).
CREATE TABLE suppressions (
    email_hash bytea PRIMARY KEY,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One append-only event log for the whole loop. Timelines read it per subscriber;
-- erasure detaches events (subscriber_id NULL, personal data removed) so aggregate
-- counts survive.
CREATE TABLE events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscriber_id bigint REFERENCES subscribers (id) ON DELETE SET NULL,
    kind          text NOT NULL,
    at            timestamptz NOT NULL,
    data          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_subscriber ON events (subscriber_id, at DESC) WHERE subscriber_id IS NOT NULL;
CREATE INDEX events_kind ON events (kind, at);

-- Generic rate limiting (signups per IP, …), shared by every process.
CREATE TABLE rate_hits (
    bucket text NOT NULL,
    key    text NOT NULL,
    at     timestamptz NOT NULL
);
CREATE INDEX rate_hits_lookup ON rate_hits (bucket, key, at);

-- Saved, dynamic segments: a condition tree compiled to one parameterised query.
CREATE TABLE segments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX segments_name_key ON segments (lower(name));
CREATE TRIGGER segments_updated_at BEFORE UPDATE ON segments FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- CSV imports. The file is stored in PostgreSQL (in chunks) so any process can run the
-- import job; rows are applied in batches, each in one transaction with the progress
-- mark, so a crash or cancel leaves no half-applied batch and the job resumes.
CREATE TYPE import_status AS ENUM ('uploaded', 'queued', 'running', 'done', 'failed', 'cancelled');

CREATE TABLE imports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    filename    text NOT NULL,
    size_bytes  bigint NOT NULL DEFAULT 0,
    encoding    text,
    vendor      text,
    headers     text[] NOT NULL DEFAULT '{}',
    mapping     text[] NOT NULL DEFAULT '{}',
    mode        text NOT NULL DEFAULT 'add_update' CHECK (mode IN ('add_update', 'add_only', 'update_only')),
    tags        text[] NOT NULL DEFAULT '{}',
    status      import_status NOT NULL DEFAULT 'uploaded',
    lines_done  bigint NOT NULL DEFAULT 0,
    bytes_done  bigint NOT NULL DEFAULT 0,
    added       bigint NOT NULL DEFAULT 0,
    updated     bigint NOT NULL DEFAULT 0,
    skipped     bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    error       text,
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);

CREATE TABLE import_chunks (
    import_id bigint NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
    seq       integer NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (import_id, seq)
);

-- One line per row not imported: the downloadable report.
CREATE TABLE import_report (
    import_id bigint NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
    line      bigint NOT NULL,
    value     text NOT NULL,
    reason    text NOT NULL,
    PRIMARY KEY (import_id, line)
);
