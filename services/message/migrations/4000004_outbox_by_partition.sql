-- The relay reads each partition it owns from its oldest row, a bounded number of rows
-- per partition: an ordered range scan of this index that stops there. Without it
-- every fetch scanned the whole table, dead rows included (a queue table churns:
-- every row is inserted once and deleted once), which at a few thousand messages a
-- second cost tens of milliseconds per fetch.
CREATE INDEX outbox_by_partition ON message.outbox (partition, id);
