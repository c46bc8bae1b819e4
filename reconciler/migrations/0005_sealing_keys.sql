-- The control plane's public keys that secrets at rest are sealed to
-- (instance passwords, webhook secrets). The private keys are never here.
create table sealing_keys (
    id          text primary key,
    public_key  bytea not null,
    current     boolean not null default false,
    created_at  timestamptz not null default now()
);
create unique index sealing_keys_one_current on sealing_keys (current) where current;
