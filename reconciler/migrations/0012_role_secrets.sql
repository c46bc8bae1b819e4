-- The passwords of roles declared inside instances, sealed like the
-- instances' own (`instance_secrets`): put by the data plane that generated
-- them, opened only by the control plane.
create table role_secrets (
    instance_id uuid not null,
    role        text not null,
    password    text not null,
    updated_at  timestamptz not null default now(),
    primary key (instance_id, role)
);
