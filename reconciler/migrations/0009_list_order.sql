-- The console's list reads pages from a place in its order (name, then
-- creation time and id; or creation time and id), so each order has an
-- index that walks it.
drop index instances_org_name;
create index instances_org_name on instances (org, name, created_at, id);
create index instances_org_created on instances (org, created_at, id);
