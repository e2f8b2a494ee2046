-- Custom headers sent on every delivery attempt: a JSON object of strings.
ALTER TABLE webhooks ADD COLUMN headers TEXT NOT NULL DEFAULT '{}';
