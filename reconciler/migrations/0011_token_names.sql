-- Tokens have a name (unique within their organisation, written to the
-- history as the actor) and may expire.
alter table tokens add column name text;
alter table tokens add column expires_at timestamptz;
create unique index tokens_org_name on tokens (org, name) where name is not null;
