-- States and event names are closed vocabularies: the schema refuses a
-- value the code does not know, so reading one back never has to guess.
alter table instances
    add constraint instances_state_known check (state in (
        'Submitted', 'Up', 'Configuring', 'Restarting', 'Stopping', 'Stopped',
        'Starting', 'Deleting', 'Deleted', 'Error')),
    add constraint instances_last_event_known check (last_event in (
        'Create', 'Update', 'Restart', 'Stop', 'Start', 'Delete', 'Backup'));

alter table instance_history
    add constraint instance_history_states_known check (
        (from_state is null or from_state in (
            'Submitted', 'Up', 'Configuring', 'Restarting', 'Stopping', 'Stopped',
            'Starting', 'Deleting', 'Deleted', 'Error'))
        and to_state in (
            'Submitted', 'Up', 'Configuring', 'Restarting', 'Stopping', 'Stopped',
            'Starting', 'Deleting', 'Deleted', 'Error'));

alter table source_syncs
    add constraint source_syncs_outcome_known check (outcome in (
        'applied', 'unchanged', 'rejected', 'fetch-failed', 'refused'));
