-- The customer graph: profiles, the identities that find them, their traits, tags and
-- events, the organisation that serves them, and the admin bits.
-- Times are UTC epoch milliseconds. JSON is stored as text.

CREATE TABLE profiles (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    merged_into INTEGER
);

CREATE TABLE identities (
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    profile_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE INDEX identities_by_profile ON identities (profile_id);

CREATE TABLE traits (
    profile_id INTEGER NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (profile_id, key)
) WITHOUT ROWID;

CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    profile_id   INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT,
    ts           INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    user_id      TEXT,
    anonymous_id TEXT,
    payload      TEXT NOT NULL,
    context      TEXT
);
CREATE INDEX events_by_profile ON events (profile_id, ts);

-- Every messageId ever accepted, so a retried message is acknowledged and stored once.
CREATE TABLE message_ids (
    message_id  TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE profile_tags (
    profile_id INTEGER NOT NULL,
    tag        TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (profile_id, tag)
) WITHOUT ROWID;
CREATE INDEX profile_tags_by_tag ON profile_tags (tag);

CREATE TABLE merges (
    id         INTEGER PRIMARY KEY,
    survivor   INTEGER NOT NULL,
    merged     INTEGER NOT NULL,
    message_id TEXT,
    reason     TEXT NOT NULL,
    merged_at  INTEGER NOT NULL
);
CREATE INDEX merges_by_survivor ON merges (survivor);

CREATE TABLE stores (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    city       TEXT NOT NULL,
    time_zone  TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE staff (
    userid       TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    store_id     TEXT,
    role         TEXT NOT NULL,
    customer_cap INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX staff_by_store ON staff (store_id);

-- Which guides have added which customers (a customer can be added by several).
CREATE TABLE staff_customers (
    profile_id   INTEGER NOT NULL,
    staff_userid TEXT NOT NULL,
    status       TEXT NOT NULL,
    added_at     INTEGER NOT NULL,
    removed_at   INTEGER,
    state        TEXT,
    PRIMARY KEY (profile_id, staff_userid)
) WITHOUT ROWID;
CREATE INDEX staff_customers_by_staff ON staff_customers (staff_userid, status);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
-- ingest_applied_seq: the last ingest-log record applied to this store; it moves in
-- the same transaction as the data the record produced.
INSERT INTO counters (name, value) VALUES ('profiles', 0), ('events', 0), ('ingest_applied_seq', 0);

-- Messages the indexer could not apply even on their own (kept, never dropped).
CREATE TABLE ingest_failures (
    seq        INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    error      TEXT NOT NULL,
    message    TEXT NOT NULL,
    failed_at  INTEGER NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE api_tokens (
    token_hash   TEXT PRIMARY KEY,
    role         TEXT NOT NULL,
    staff_userid TEXT,
    label        TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
