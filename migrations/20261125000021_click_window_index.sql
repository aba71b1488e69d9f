-- Recording a click counts the distinct links of its message clicked in the last few
-- seconds (the link-burst rule) and may re-judge them: both read only a message's recent
-- clicks, which this index finds without visiting the message's older events.
CREATE INDEX events_message_clicks ON events (message_id, at) WHERE kind = 'clicked';
