-- WeCom: live QR codes (contact ways) and the mass message a delivery went out in.
CREATE TABLE contact_ways (
    config_id  TEXT PRIMARY KEY,
    state      TEXT NOT NULL UNIQUE,
    store_id   TEXT,
    guide      TEXT NOT NULL,
    channel    TEXT NOT NULL,
    tags       TEXT NOT NULL,
    welcome    TEXT,
    qr_code    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

ALTER TABLE deliveries ADD COLUMN external_ref TEXT;
CREATE INDEX deliveries_by_external_ref ON deliveries (external_ref);
