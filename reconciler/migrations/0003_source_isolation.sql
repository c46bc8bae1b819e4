-- Source names are per organisation: two organisations may both have a
-- source `prod`, each with its own syncs, owner `git:prod` and webhook.

alter table source_syncs drop constraint source_syncs_source_fkey;
alter table source_syncs add column org text;
update source_syncs s set org = src.org from sources src where src.name = s.source;
alter table source_syncs alter column org set not null;

alter table sources drop constraint sources_pkey;
alter table sources add primary key (org, name);

alter table source_syncs
    add constraint source_syncs_source_fkey foreign key (org, source)
    references sources (org, name) on delete cascade;
drop index source_syncs_source;
create index source_syncs_source on source_syncs (org, source, id desc);

-- Every source has a webhook secret, so that a webhook call cannot tell a
-- source that exists from one that does not: both answer "invalid
-- signature" unless signed with the source's secret. Sources added without
-- one get a random secret (gen_random_uuid draws from a strong random
-- source); re-adding such a source shows a new one.
update sources
   set webhook_secret = replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
 where webhook_secret is null;
alter table sources alter column webhook_secret set not null;
