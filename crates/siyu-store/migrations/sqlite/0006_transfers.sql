-- WeCom customer transfers (在职/离职继承): one row per customer and request.
CREATE TABLE transfers (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    handover        TEXT NOT NULL,
    takeover        TEXT NOT NULL,
    profile_id      INTEGER NOT NULL,
    external_userid TEXT NOT NULL,
    resigned        INTEGER NOT NULL,
    -- waiting · completed · refused · customer_refused · takeover_full · no_record
    status          TEXT NOT NULL,
    errcode         INTEGER,
    requested_at    INTEGER NOT NULL,
    settled_at      INTEGER
);
CREATE INDEX transfers_by_status ON transfers (status, handover, takeover);
