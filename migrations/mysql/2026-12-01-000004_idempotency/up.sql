-- Idempotency keys of POST /v1/events, /v1/webhook and /v1/apps (and of
-- in-process ChannelEvents). The primary key on (scope, idem_key) is what
-- serialises two requests with the same key, on any instance: the first
-- INSERT of the in-flight row wins, the other finds the row. A done row
-- holds the first answer, exactly as sent (a create answer holds the API key
-- or the signing secret), until expires_at; the janitor deletes it then.
CREATE TABLE idempotency_keys (
    scope VARCHAR(64) NOT NULL,
    idem_key VARCHAR(255) NOT NULL,
    request_hash VARCHAR(64) NOT NULL,
    state VARCHAR(16) NOT NULL,
    status INT NULL,
    response_body MEDIUMTEXT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key),
    KEY idempotency_keys_expires_at (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
