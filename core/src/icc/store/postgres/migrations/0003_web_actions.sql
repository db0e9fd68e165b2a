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
