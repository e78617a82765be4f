-- Segment membership as reported in Segment Entered/Exited events (not as computed):
-- with the membership events stored after `hwm`, it says exactly what was reported.
ALTER TABLE segment_snapshots ADD COLUMN rule TEXT NOT NULL DEFAULT '';
ALTER TABLE segment_snapshots ADD COLUMN hwm BIGINT NOT NULL DEFAULT 0;
-- Snapshots of the old kind held computed membership: start from what is computed now.
DELETE FROM segment_snapshots;
-- Each start of the server is an epoch of membership event ids.
INSERT INTO counters (name, value) VALUES ('membership_epoch', 0);
