-- API keys: an app's keys (up to 10 at once, created and revoked by the
-- admin) and ingest keys (only POST /v1/events, optionally for some apps).
-- Only a key's SHA-256 is stored, with its first characters to tell keys
-- apart in a list. A revoked key's row is deleted; the change log carries
-- the revocation to every instance.
--
-- apps.api_key_hash keeps the hash of an app's first key, as before; it is
-- no longer read: authentication reads api_keys alone.
CREATE TABLE api_keys (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    -- 'app' or 'ingest'.
    kind VARCHAR(16) NOT NULL,
    -- The app an app key belongs to; NULL for ingest keys.
    app_id VARCHAR(40) NULL,
    -- An ingest key's apps, comma-separated; NULL: every app.
    apps TEXT NULL,
    name VARCHAR(255) NULL,
    key_hash CHAR(64) NOT NULL,
    prefix VARCHAR(16) NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NULL,
    UNIQUE KEY api_keys_key_hash (key_hash),
    KEY api_keys_by_app (app_id, created_at),
    CONSTRAINT api_keys_app FOREIGN KEY (app_id) REFERENCES apps (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Every existing app key becomes the app's first key in the new table.
INSERT INTO api_keys (id, kind, app_id, apps, name, key_hash, prefix, created_at, last_used_at)
SELECT CONCAT('key_', SUBSTRING(id, 5)), 'app', id, NULL, NULL, api_key_hash, 'wbk_', created_at, NULL
FROM apps;
