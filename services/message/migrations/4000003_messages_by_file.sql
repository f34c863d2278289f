-- The file service asks "was a message carrying file F sent in a conversation of user
-- U after U joined it" on every read of a file U does not own: one index lookup.
CREATE INDEX messages_by_file ON message.messages (file_id, conversation_id, seq)
    WHERE file_id IS NOT NULL;
