-- GitOps sources: a git repository, branch and directory declaring instances.

create table sources (
    name              text primary key,
    org               text not null references orgs (name),
    url               text not null,
    branch            text not null,
    path              text not null default '',
    interval_seconds  integer not null default 60,
    prune             boolean not null default false,
    drift_mode        text not null default 'report' check (drift_mode in ('report', 'heal')),
    adopt             boolean not null default false,
    -- HMAC-SHA256 key for the push webhook; never returned by the API.
    webhook_secret    text,
    last_good_commit  text,
    last_seen_commit  text,
    last_sync_at      timestamptz,
    created_at        timestamptz not null default now()
);

-- The history of syncs: which commit, what happened to each instance, errors.
create table source_syncs (
    id             bigserial primary key,
    source         text not null references sources (name) on delete cascade,
    commit_sha     text,
    author         text,
    message        text,
    commit_time    timestamptz,
    outcome        text not null,
    errors         jsonb not null default '[]',
    results        jsonb not null default '[]',
    at             timestamptz not null default now()
);
create index source_syncs_source on source_syncs (source, id desc);
