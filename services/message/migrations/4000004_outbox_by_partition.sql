-- The relay reads each partition it owns from its oldest row: one index range scan per
-- partition. Without it every fetch scanned the whole table, dead rows included (a
-- queue table churns: every row is inserted once and deleted once), which at a few
-- thousand messages a second cost tens of milliseconds per fetch.
CREATE INDEX outbox_by_partition ON message.outbox (partition, id);
