-- Idempotency keys of POST /v1/events, /v1/webhook and /v1/apps (and of
-- in-process ChannelEvents). The primary key on (scope, idem_key) is what
-- serialises two requests with the same key: the first INSERT of the
-- in-flight row wins, the other finds the row. A done row holds the first
-- answer, exactly as sent (a create answer holds the API key or the signing
-- secret), until expires_at; the janitor deletes it then.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    response_body TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
