-- Coherence across instances (and with `webhook-broker apps create`). Every
-- change to apps or webhooks bumps the one-row counter and logs (version,
-- kind, entity_id) in the transaction of the change; the daemon polls the
-- log for versions above the last one it applied. SQLite has one writer at
-- a time, so versions become visible in order, without gaps.
CREATE TABLE registry_version (
    id INTEGER PRIMARY KEY NOT NULL,
    version BIGINT NOT NULL
);
INSERT INTO registry_version (id, version) VALUES (1, 0);

CREATE TABLE registry_changes (
    version BIGINT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX registry_changes_at ON registry_changes (at);
