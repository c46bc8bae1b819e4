-- Web console sessions. The browser holds a random session id in an
-- HttpOnly cookie; only its SHA-256 hash is stored, so a read of this table
-- signs nobody in. A session acts with the token it was opened with, and
-- ends with it.
create table console_sessions (
    id_hash     text primary key,
    org         text not null references orgs (name),
    token_id    uuid not null references tokens (id) on delete cascade,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);
create index console_sessions_expiry on console_sessions (expires_at);

-- The console's event stream reads what changed since its last look.
create index instances_updated_at on instances (updated_at);
