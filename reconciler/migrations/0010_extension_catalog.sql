-- What each data plane can install, per extension: versions, preload
-- library and order, requirements, trust, package. Null for a data plane
-- that registered names only (`extensions`), which the control plane reads
-- as entries known by name.
alter table data_planes add column catalog jsonb;
