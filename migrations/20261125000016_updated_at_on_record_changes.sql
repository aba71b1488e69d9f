-- `subscribers.updated_at` says when a subscriber's record last changed (address, name,
-- status, fields, tags, consent, preferences), not every send, open or click: the
-- engagement counters move with each of those, and the trigger ran a PL/pgSQL call on
-- every such update. It now fires only when one of the record's own columns is set.
DROP TRIGGER subscribers_updated_at ON subscribers;
CREATE TRIGGER subscribers_updated_at
    BEFORE UPDATE OF email, name, status, fields, tag_ids, source, timezone, language,
                     consent_at, consent_method, consent_form_id, consent_ip,
                     confirmed_at, unsubscribed_at
    ON subscribers FOR EACH ROW EXECUTE FUNCTION set_updated_at();
