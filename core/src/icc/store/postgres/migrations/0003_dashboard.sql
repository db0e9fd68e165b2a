-- Actions taken through the dashboard (icc web): what (run, disable, retry, ...), on what (a job, queue:<q>:<id>,
-- pause), when, from which address, and how it went. The job page shows a job's actions (the index).

CREATE TABLE {schema}.web_actions (
    id bigserial PRIMARY KEY,
    at double precision NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    remote text NOT NULL,
    detail text
);
CREATE INDEX web_actions_target ON {schema}.web_actions (target, id);

-- Messages handled (acknowledged) per queue and minute (the acknowledging host's clock): the throughput icc web
-- shows for the last hour. Rows older than a day are dropped as a consumer starts a new minute.
CREATE TABLE {schema}.handled (
    queue text NOT NULL,
    minute bigint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (queue, minute)
);
