-- What the data plane last reported of an instance's backups (kept after
-- the instance is deleted: its backups outlive it), and, for an instance
-- created from another's backups, which instance and point it restores.
alter table instances add column backups jsonb;
alter table instances add column restore_source jsonb;
