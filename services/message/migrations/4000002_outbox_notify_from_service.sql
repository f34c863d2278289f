-- The per-commit NOTIFY trigger serialized every sending transaction on PostgreSQL's
-- notification queue lock, held across the commit's WAL flush: measured, it halved
-- send throughput. The service now notifies from a background task instead, at most
-- one NOTIFY in flight per process however many sends commit meanwhile, and relays
-- still poll as a fallback.
DROP TRIGGER IF EXISTS outbox_notify ON message.outbox;
DROP FUNCTION IF EXISTS message.notify_outbox();
