-- Samples of what each running instance does (client connections, the
-- transaction counter, database size), as its data plane observes them.
-- Only the newest samples of each instance are kept, for the console's
-- charts and the activity endpoint.
create table instance_activity (
    instance_id uuid not null references instances (id) on delete cascade,
    at timestamptz not null default clock_timestamp(),
    connections bigint not null,
    transactions bigint not null,
    database_bytes bigint not null,
    primary key (instance_id, at)
);
