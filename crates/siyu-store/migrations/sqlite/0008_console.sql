-- The console: local sign-in accounts (passwords kept as argon2 hashes), sessions (only
-- the hash of the cookie's secret is kept), and the audit log of personal data shown in
-- full or exported (PIPL: who, whose, when, from where).
CREATE TABLE console_accounts (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    -- NULL: an admin. Otherwise the member of staff this account signs in as (their
    -- role and store come from the staff record, as for API tokens).
    staff_userid  TEXT,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE console_sessions (
    id_hash      TEXT PRIMARY KEY,
    -- Who signed in: an admin (no staff_userid) or a member of staff.
    staff_userid TEXT,
    -- How: 'password:<username>' or 'wecom'.
    method       TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    ip      TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
