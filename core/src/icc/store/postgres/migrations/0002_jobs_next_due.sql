-- The due column: a tick reads only the jobs whose next slot it reached, and the idle tick's MIN(next_due) is an
-- index look-up instead of a scan of every job.

CREATE INDEX jobs_next_due ON {schema}.jobs (next_due);
