-- Coherence across instances. Every change to apps or webhooks bumps the
-- one-row counter and logs (version, kind, entity_id) in the transaction of
-- the change; every instance polls the log for versions above the last one
-- it applied. The counter's row lock serialises writers from the bump to
-- their commit, so versions become visible in order, without gaps.
CREATE TABLE registry_version (
    id INT NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO registry_version (id, version) VALUES (1, 0);

CREATE TABLE registry_changes (
    version BIGINT NOT NULL PRIMARY KEY,
    kind VARCHAR(16) NOT NULL,
    entity_id VARCHAR(40) NOT NULL,
    at BIGINT NOT NULL,
    KEY registry_changes_at (at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
