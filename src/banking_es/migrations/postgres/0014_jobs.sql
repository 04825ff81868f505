-- Background jobs started over the admin API (a projection rebuild): status and progress,
-- so any instance can answer GET /admin/jobs/{id}. The running process writes
-- `heartbeat_at` every few seconds; a `running` job whose heartbeat is stale belongs to a
-- process that died and is marked `failed` (application/jobs.py).
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    done         BIGINT NOT NULL DEFAULT 0,
    total        BIGINT NOT NULL DEFAULT 0,
    owner        TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    error        TEXT
);
CREATE INDEX jobs_running ON jobs (heartbeat_at) WHERE status = 'running';
