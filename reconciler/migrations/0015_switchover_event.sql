-- A switchover is an event kind the control plane sends to a data plane.
alter table instances drop constraint instances_last_event_known;
alter table instances
    add constraint instances_last_event_known check (last_event in (
        'Create', 'Update', 'Restart', 'Stop', 'Start', 'Delete', 'Backup', 'Switchover'));
