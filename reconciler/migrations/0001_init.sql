-- pgplane control-plane schema.

create table orgs (
    name        text primary key,
    created_at  timestamptz not null default now()
);

-- Bearer tokens, scoped to one organisation; only a SHA-256 hash is stored.
create table tokens (
    id          uuid primary key,
    org         text not null references orgs (name),
    hash        text not null unique,
    admin       boolean not null default false,
    description text,
    created_at  timestamptz not null default now()
);

-- Data planes announce themselves and what they can run.
create table data_planes (
    name        text primary key,
    extensions  jsonb not null default '[]',
    last_seen   timestamptz not null default now()
);

create table instances (
    id                  uuid primary key,
    org                 text not null references orgs (name),
    name                text not null,
    data_plane          text not null,
    owner               text not null default 'api',
    state               text not null,
    spec                jsonb not null,
    generation          bigint not null,
    observed_generation bigint not null default 0,
    observed            jsonb,
    observed_at         timestamptz,
    connection          jsonb,
    error               text,
    restart_reasons     jsonb not null default '[]',
    -- the command whose event was sent last (re-sent when its report is overdue)
    last_event          text not null default 'Create',
    last_event_at       timestamptz not null default now(),
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now()
);
-- A name is unique among an organisation's live instances; deleted ones keep
-- their row (and history) and free the name.
create unique index instances_live_name on instances (org, name) where state <> 'Deleted';
create index instances_org_name on instances (org, name, created_at desc);
create index instances_transitional on instances (state, last_event_at)
    where state in ('Submitted', 'Configuring', 'Restarting', 'Stopping', 'Starting', 'Deleting');

-- The timeline a user sees: every transition, who caused it, and why.
create table instance_history (
    id          bigserial primary key,
    instance_id uuid not null references instances (id),
    from_state  text,
    event       text not null,
    to_state    text not null,
    generation  bigint not null,
    actor       text not null,
    detail      text,
    at          timestamptz not null default now()
);
create index instance_history_instance on instance_history (instance_id, id);

-- The secret store: passwords never travel on a queue.
create table instance_secrets (
    instance_id uuid primary key,
    password    text not null,
    updated_at  timestamptz not null default now()
);

-- Messages that could not be handled, and why.
create table dead_letters (
    id          bigserial primary key,
    queue       text not null,
    msg_id      bigint not null,
    read_ct     integer not null,
    reason      text not null,
    message     jsonb,
    at          timestamptz not null default now()
);
