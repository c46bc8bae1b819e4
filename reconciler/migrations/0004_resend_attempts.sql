-- How often the desired≠actual loop has re-sent the current generation's
-- event without a report; after a bounded number the instance fails.
alter table instances add column resends integer not null default 0;
