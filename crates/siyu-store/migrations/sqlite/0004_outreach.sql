-- Outreach: campaigns with their audit trail, deliveries (every planned touch, sent or
-- not and why), guide tasks, journeys and each customer's position in them.
CREATE TABLE campaigns (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    spec          TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT,
    next_run_at   INTEGER,
    runs          INTEGER NOT NULL,
    snapshot      TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE campaign_audit (
    id          INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX campaign_audit_by_campaign ON campaign_audit (campaign_id, id);

-- One row per planned touch. `key` is the idempotency key (source, step, profile):
-- a touch is planned once, whatever restarts happen.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    profile_id  INTEGER NOT NULL,
    campaign_id INTEGER,
    journey_id  INTEGER,
    channel     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    guide       TEXT,
    task_id     INTEGER,
    content     TEXT,
    created_at  INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    sent_at     INTEGER
);
CREATE INDEX deliveries_by_profile ON deliveries (profile_id, id);
CREATE INDEX deliveries_due ON deliveries (status, due_at);
CREATE INDEX deliveries_by_campaign ON deliveries (campaign_id, status);
CREATE INDEX deliveries_by_task ON deliveries (task_id);

CREATE TABLE tasks (
    id           INTEGER PRIMARY KEY,
    campaign_id  INTEGER,
    journey_id   INTEGER,
    guide        TEXT NOT NULL,
    store_id     TEXT,
    title        TEXT NOT NULL,
    status       TEXT NOT NULL,
    deadline     INTEGER NOT NULL,
    reminded_at  INTEGER,
    created_at   INTEGER NOT NULL,
    completed_at INTEGER
);
CREATE INDEX tasks_by_guide ON tasks (guide, status);
CREATE INDEX tasks_by_status ON tasks (status, deadline);

CREATE TABLE journeys (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    spec       TEXT NOT NULL,
    enabled    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE journey_states (
    journey_id INTEGER NOT NULL,
    profile_id INTEGER NOT NULL,
    entry      INTEGER NOT NULL,
    step       INTEGER NOT NULL,
    status     TEXT NOT NULL,
    wake_at    INTEGER NOT NULL,
    entered_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (journey_id, profile_id)
);
CREATE INDEX journey_states_due ON journey_states (status, wake_at);

-- How far the journey runner has read the event table.
CREATE TABLE outreach_cursors (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
