//! The operator's configuration: one clap-derived struct, parsed in `main`.

use std::time::Duration;

use clap::Parser;

use crate::leader::LeaseSettings;

/// pgplane's Kubernetes operator for `PostgresInstance` resources.
#[derive(Debug, Clone, Parser)]
#[command(name = "pgplane-operator", version)]
pub struct Config {
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "PGPLANE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image of the instance pod (the instance agent in front of postgres).
    #[arg(long, env = "PGPLANE_INSTANCE_IMAGE", default_value = Settings::DEFAULT_IMAGE)]
    pub instance_image: String,
    /// Address of the admin endpoint (/health, /ready, /metrics).
    #[arg(long, env = "PGPLANE_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: String,
    /// Reconciles running at once (never two for one instance); bounds the
    /// operator's load on the API server. 0: unbounded.
    #[arg(long, env = "PGPLANE_MAX_CONCURRENT_RECONCILES", default_value_t = Settings::DEFAULT_CONCURRENCY)]
    pub max_concurrent_reconciles: u16,
    /// Run the controller only while holding the leader Lease, so that
    /// several replicas can run with exactly one active. `false` runs it
    /// unconditionally (one replica only).
    #[arg(long, env = "PGPLANE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease [default: --namespace, else "default"].
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "PGPLANE_LEASE_NAME", default_value = "pgplane-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease [default: the pod name (POD_NAME)
    /// or host name, plus a random suffix].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a silent leader keeps the Lease before a standby takes it.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_duration_secs: u64,
    /// Seconds the leader keeps leading without a successful renewal
    /// (must be less than --lease-duration-secs).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub renew_deadline_secs: u64,
    /// Seconds between attempts to acquire or renew the Lease (must be less
    /// than --renew-deadline-secs).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_period_secs: u64,
    /// Seconds between re-checks of a converged instance: its children, and
    /// what the agent in its pod observes (so an out-of-band change, such
    /// as `ALTER SYSTEM`, shows in `status.observedSpec` within one resync).
    #[arg(long, env = "PGPLANE_RESYNC_SECS", default_value_t = Settings::DEFAULT_RESYNC.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_secs: u64,
    /// What deleting an instance does to its data volumes (the
    /// StatefulSet's PersistentVolumeClaims): `delete` them, or `retain`
    /// them for an administrator to recover. A retained volume is mounted
    /// again by the next instance of the same name in the namespace, which
    /// may belong to someone else: retain only where names are not reused.
    #[arg(long, env = "PGPLANE_VOLUMES_ON_DELETE", value_enum, default_value_t = VolumePolicy::Delete)]
    pub volumes_on_delete: VolumePolicy,
}

/// What deleting an instance does to its data volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VolumePolicy {
    /// Delete the PersistentVolumeClaims with the instance.
    Delete,
    /// Keep them.
    Retain,
}

/// What the reconciler needs, as a plain struct (tests build it directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub namespace: Option<String>,
    pub instance_image: String,
    /// Reconciles at once (0: unbounded).
    pub concurrency: u16,
    /// Re-check of a converged instance.
    pub resync: Duration,
    /// What deleting an instance does to its volumes.
    pub volumes_on_delete: VolumePolicy,
}

impl Settings {
    pub const DEFAULT_IMAGE: &'static str = "pgplane/instance:15";
    pub const DEFAULT_CONCURRENCY: u16 = 32;
    pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            instance_image: Self::DEFAULT_IMAGE.to_owned(),
            concurrency: Self::DEFAULT_CONCURRENCY,
            resync: Self::DEFAULT_RESYNC,
            volumes_on_delete: VolumePolicy::Delete,
        }
    }
}

impl Config {
    pub fn settings(&self) -> Settings {
        Settings {
            namespace: self.namespace.clone(),
            instance_image: self.instance_image.clone(),
            concurrency: self.max_concurrent_reconciles,
            resync: Duration::from_secs(self.resync_secs),
            volumes_on_delete: self.volumes_on_delete,
        }
    }

    /// The Lease to hold, `None` when leader election is off, or why the
    /// timings cannot work.
    pub fn lease(&self) -> Result<Option<LeaseSettings>, String> {
        if !self.leader_election {
            return Ok(None);
        }
        if self.renew_deadline_secs >= self.lease_duration_secs {
            return Err(format!(
                "--renew-deadline-secs ({}) must be less than --lease-duration-secs ({}): a leader must stop before others may take over",
                self.renew_deadline_secs, self.lease_duration_secs
            ));
        }
        if self.retry_period_secs >= self.renew_deadline_secs {
            return Err(format!(
                "--retry-period-secs ({}) must be less than --renew-deadline-secs ({}): the leader must get a chance to renew",
                self.retry_period_secs, self.renew_deadline_secs
            ));
        }
        let namespace = self
            .lease_namespace
            .clone()
            .or_else(|| self.namespace.clone())
            .unwrap_or_else(|| "default".to_owned());
        let base = self
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "pgplane-operator".to_owned());
        let identity = format!("{base}_{:08x}", rand::random::<u32>());
        let mut lease = LeaseSettings::new(&namespace, &self.lease_name, &identity);
        lease.lease_duration = Duration::from_secs(self.lease_duration_secs);
        lease.renew_deadline = Duration::from_secs(self.renew_deadline_secs);
        lease.retry_period = Duration::from_secs(self.retry_period_secs);
        Ok(Some(lease))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("pgplane-operator").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn lease_defaults_and_checks() {
        let lease = parse(&["--namespace", "shop", "--identity", "op-a"])
            .lease()
            .unwrap()
            .unwrap();
        assert_eq!(lease.namespace, "shop");
        assert_eq!(lease.name, "pgplane-operator");
        assert!(lease.identity.starts_with("op-a_"), "{}", lease.identity);
        assert_eq!(lease.lease_duration, Duration::from_secs(15));
        assert_eq!(parse(&["--leader-election", "false"]).lease(), Ok(None));
        let err = parse(&["--lease-duration-secs", "5", "--renew-deadline-secs", "5"])
            .lease()
            .unwrap_err();
        assert!(
            err.contains("--renew-deadline-secs (5) must be less than --lease-duration-secs (5)"),
            "{err}"
        );
        let err = parse(&["--retry-period-secs", "10"]).lease().unwrap_err();
        assert!(err.contains("--retry-period-secs (10)"), "{err}");
        assert!(
            Config::try_parse_from(["pgplane-operator", "--lease-duration-secs", "0"]).is_err()
        );
    }

    #[test]
    fn volumes_are_deleted_with_an_instance_unless_retained() {
        assert_eq!(
            parse(&[]).settings().volumes_on_delete,
            VolumePolicy::Delete
        );
        assert_eq!(
            parse(&["--volumes-on-delete", "retain"])
                .settings()
                .volumes_on_delete,
            VolumePolicy::Retain
        );
        let err = Config::try_parse_from(["pgplane-operator", "--volumes-on-delete", "keep"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--volumes-on-delete") && err.contains("retain"),
            "{err}"
        );
    }
}
