//! `pgplane-bench`: the spine issue's benchmarks, each printed next to the
//! floor measured in the same run.
//!
//! ```sh
//! cargo build --release --bins
//! target/release/pgplane-bench all        # or: create | throughput | memory
//! ```
//!
//! The control plane runs as the release `pgplane` binary next to this one.

mod backup;
mod console_list;
mod databases;
mod fanout;
mod harness;
mod kube;
mod replicas;
mod scenarios;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pgplane-bench", about = "pgplane's benchmarks")]
struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand, Clone, Copy)]
enum Which {
    /// Create → connectable through the whole pipeline, median of N, next to
    /// the raw floor (template copy + spawn + first query).
    Create {
        #[arg(long, default_value_t = 11)]
        runs: usize,
    },
    /// Reload-only config updates across instances, API accept → all Up at
    /// the new generation, next to raw PGMQ send→read→delete.
    Throughput {
        #[arg(long, default_value_t = 1000)]
        updates: usize,
        #[arg(long, default_value_t = 50)]
        instances: usize,
    },
    /// Control-plane memory with N instances in the store (simulated runtime).
    Memory {
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
    },
    /// A full backup and a restore (branch) of a pgbench database through
    /// pgplane, each next to pgBackRest run by hand on the same data, and
    /// the WAL archive lag under a pgbench write load.
    Backup {
        /// pgbench scale: 70 is about 1 GiB.
        #[arg(long, default_value_t = 70)]
        scale: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Event-stream fan-out: N clients on GET /api/v1/events while
    /// instances change state (simulated runtime); delivery p50/p99, RSS.
    Fanout {
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value_t = 1000)]
        changes: usize,
        #[arg(long, default_value_t = 25)]
        instances: usize,
    },
    /// The console's instance list with N instances (simulated runtime):
    /// server time per page and bytes sent, next to a one-instance floor.
    ConsoleList {
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
    /// N databases with three extensions each declared on one instance:
    /// API request → Up, next to the same SQL run directly with psql.
    Databases {
        #[arg(long, default_value_t = 50)]
        count: usize,
    },
    /// Standbys: failover time (kill -9 → first write through the
    /// read-write URI) and the switchover write outage, each median of N
    /// next to one server's crash restart and restart; replication lag
    /// under pgbench at a fixed rate; memory and CPU per member.
    Replicas {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// pgbench transactions per second during the lag measurement.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Seconds of pgbench load.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
    },
    /// The Kubernetes data plane on a real single-node cluster: cold start
    /// to node Ready, and PostgresInstance create → connectable, median of
    /// N, next to a bare Pod of the same image.
    Kube {
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// All three with their defaults.
    All,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.which {
            Which::Create { runs } => scenarios::create(runs).await,
            Which::Throughput { updates, instances } => {
                scenarios::throughput(updates, instances).await
            }
            Which::Memory { instances } => scenarios::memory(instances).await,
            Which::Fanout {
                clients,
                changes,
                instances,
            } => fanout::fanout(clients, changes, instances).await,
            Which::Backup { scale, runs } => backup::backup(scale, runs).await,
            Which::Databases { count } => databases::databases(count).await,
            Which::Replicas {
                runs,
                rate,
                seconds,
            } => replicas::replicas(runs, rate, seconds).await,
            Which::Kube { runs } => kube::kube(runs).await,
            Which::ConsoleList {
                instances,
                requests,
            } => console_list::console_list(instances, requests).await,
            Which::All => {
                scenarios::create(11).await?;
                scenarios::throughput(1000, 50).await?;
                scenarios::memory(10_000).await
            }
        }
    })
}
