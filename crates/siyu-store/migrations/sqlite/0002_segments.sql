-- Segments: named rules whose members the engine keeps live.
CREATE TABLE segments (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    rule        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Members as last reported, so changes while Siyu was down are reported at start.
CREATE TABLE segment_snapshots (
    name     TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    members  TEXT NOT NULL,
    taken_at INTEGER NOT NULL
);

-- An event's aggregate built after start reads its events through this index.
CREATE INDEX events_by_name ON events (name, ts);
