-- Times are epoch milliseconds in BIGINT on both backends, so rows compare
-- and sort the same way whichever store holds them.
CREATE TABLE apps (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    api_key_hash CHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE KEY apps_api_key_hash (api_key_hash)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE webhooks (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    app_id VARCHAR(40) NOT NULL,
    uri VARCHAR(2048) NOT NULL,
    events VARCHAR(255) NOT NULL,
    secret VARCHAR(128) NOT NULL,
    status VARCHAR(16) NOT NULL,
    disabled_reason TEXT NULL,
    disabled_at BIGINT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    KEY webhooks_by_app (app_id, id),
    CONSTRAINT webhooks_app FOREIGN KEY (app_id) REFERENCES apps (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE events (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    app_id VARCHAR(40) NOT NULL,
    event VARCHAR(32) NOT NULL,
    channel_id VARCHAR(255) NULL,
    event_time BIGINT NOT NULL,
    payload MEDIUMTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    KEY events_by_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per (event, webhook): the outbox. A claim walks deliveries_due.
CREATE TABLE deliveries (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    event_id VARCHAR(40) NOT NULL,
    webhook_id VARCHAR(40) NOT NULL,
    channel_id VARCHAR(255) NULL,
    status VARCHAR(16) NOT NULL,
    attempts INT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_status_code INT NULL,
    last_error TEXT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT NULL,
    lease_owner VARCHAR(64) NULL,
    lease_until BIGINT NULL,
    KEY deliveries_due (status, next_attempt_at),
    KEY deliveries_by_webhook (webhook_id, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE delivery_attempts (
    delivery_id VARCHAR(40) NOT NULL,
    attempt INT NOT NULL,
    at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code INT NULL,
    error TEXT NULL,
    response_body TEXT NULL,
    PRIMARY KEY (delivery_id, attempt)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
