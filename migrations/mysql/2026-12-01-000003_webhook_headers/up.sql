-- Custom headers sent on every delivery attempt: a JSON object of strings.
-- A TEXT default must be an expression on MySQL (8.0.13+); MariaDB takes it too.
ALTER TABLE webhooks ADD COLUMN headers TEXT NOT NULL DEFAULT ('{}');
