-- The newest server log of each instance, as its data plane shipped it at
-- each re-observation: chunks of whole lines, sealed like the secrets
-- (a log line may quote what a client sent).
create table instance_logs (
    id bigserial primary key,
    instance_id uuid not null,
    at timestamptz not null default now(),
    chunk text not null
);
create index instance_logs_instance on instance_logs (instance_id, id);
