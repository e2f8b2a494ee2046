-- deliveries_due (status, next_attempt_at) served one query on MySQL,
-- pruning, and every outcome moved its entry (the status and the time
-- change on each attempt). Pruning now walks the deliveries by age, an
-- index written once, at insert, and passes over the failed and pending
-- rows it keeps (the janitor resumes each batch where the last one
-- stopped, so a pass reads those once). Measured on MariaDB here
-- (docs/benchmarks.md, session 10): with the narrower success update, a
-- round of 1,000 outcomes and their attempts went from 54 to 48 ms.
DROP INDEX deliveries_due ON deliveries;
CREATE INDEX deliveries_by_created ON deliveries (created_at);
