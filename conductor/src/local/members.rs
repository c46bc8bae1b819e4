//! The members of one instance on the local runtime: one primary and
//! `replicas - 1` streaming standbys, each a server with its own data
//! directory and port, all run by the instance's OS user. The state file
//! says which member is the primary; the servers are made to match it.
//!
//! Failover: supervision probes the primary every tick. A primary whose
//! postmaster is gone, or that has not answered for the failover timeout,
//! is fenced (its whole process group killed, so not even a hung server's
//! backends can commit), the most advanced standby is recorded as the
//! primary and promoted, the other standbys follow it, and the old primary
//! is rewound into a standby of the new one.
//!
//! Switchover (asked for, or the middle of a rolling restart): the primary
//! is shut down cleanly, which sends its last WAL to the standbys; once
//! the chosen standby has received it, that standby is recorded as the
//! primary and promoted, and the old primary starts again as its standby.
//! Nothing committed is lost, and writes are refused only from the
//! shutdown to the promotion.

use std::time::{Duration, Instant};

use agent::{Agent, Upstream};
use domain::{ConnectionInfo, InstanceSpec, MemberAddress, MemberRole, ObservedSpec};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{free_port, InstanceState, LocalRuntime};
use crate::runtime::{RuntimeError, Supervised, Supervision, SwitchedOver};

/// One server of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MemberState {
    /// 0 for the server the instance was created with; stable for the
    /// member's life, and never reused while the member exists.
    pub index: u32,
    pub port: u16,
}

/// How long a probe of the primary may take before it counts as no answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a switchover waits for the chosen standby to receive the old
/// primary's last WAL before it starts the old primary again instead.
const SWITCHOVER_CATCH_UP: Duration = Duration::from_secs(10);
/// How long observing a replicated instance may hold its lock.
pub(super) const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn member_name(index: u32) -> String {
    format!("member-{index}")
}

fn slot_name(index: u32) -> String {
    format!("pgplane_member_{index}")
}

impl InstanceState {
    /// Every member, member 0 first; an instance created before members
    /// existed is its one server.
    pub(super) fn members(&self) -> Vec<MemberState> {
        if self.members.is_empty() {
            vec![MemberState {
                index: 0,
                port: self.port,
            }]
        } else {
            self.members.clone()
        }
    }

    pub(super) fn primary_member(&self) -> MemberState {
        let members = self.members();
        members
            .iter()
            .copied()
            .find(|m| m.index == self.primary)
            .unwrap_or(members[0])
    }

    pub(super) fn standbys(&self) -> Vec<MemberState> {
        self.members()
            .into_iter()
            .filter(|m| m.index != self.primary)
            .collect()
    }

    /// Whether the instance has (or had, in this state file) more than one
    /// server.
    pub(super) fn replicated(&self) -> bool {
        self.members.len() > 1 || self.spec.replicas > 1
    }

    /// Every port the instance's members listen on.
    pub(super) fn ports(&self) -> Vec<u16> {
        self.members().iter().map(|m| m.port).collect()
    }
}

impl LocalRuntime {
    /// The data directory of one member.
    fn member_dir(&self, id: Uuid, index: u32) -> std::path::PathBuf {
        match index {
            0 => self.settings.root.join(Self::key(id)),
            n => self.settings.root.join(format!("{}-m{n}", Self::key(id))),
        }
    }

    /// The agent of one member, as a standby of the primary unless it is
    /// the primary.
    pub(super) fn member_agent(
        &self,
        state: &InstanceState,
        spec: &InstanceSpec,
        member: MemberState,
    ) -> Result<Agent, RuntimeError> {
        let primary = state.primary_member();
        let replicated = state.replicated() || spec.replicas > 1;
        let base = self.agent_at(state, spec, member.index, member.port)?;
        if member.index == primary.index {
            return Ok(base.with_replication(replicated));
        }
        let primary_agent = self.agent_at(state, spec, primary.index, primary.port)?;
        Ok(base.with_replication(true).with_upstream(Some(Upstream {
            socket_dir: primary_agent.socket_dir().to_path_buf(),
            port: primary.port,
            slot: slot_name(member.index),
            member: member_name(member.index),
        })))
    }

    /// The agent of member `index` listening on `port`, without its role.
    fn agent_at(
        &self,
        state: &InstanceState,
        spec: &InstanceSpec,
        index: u32,
        port: u16,
    ) -> Result<Agent, RuntimeError> {
        let id = state.instance_id;
        let run_as = match &state.os_user {
            Some(user) if self.isolated => self.os_user(user)?,
            _ => self.run_as.clone(),
        };
        let mut config = agent::InstanceConfig::new(self.member_dir(id, index), port);
        config.listen_address = self.settings.listen_address.clone();
        let cgroup = match index {
            0 => Self::key(id),
            n => format!("{}-m{n}", Self::key(id)),
        };
        let limit = match (
            &self.memory,
            domain::quantity::parse_bytes(&spec.resources.memory),
        ) {
            (Some(m), Ok(bytes)) => Some(m.limit(&cgroup, bytes)),
            _ => None,
        };
        Ok(Agent::new(self.bins.clone(), run_as, config)
            .with_memory_limit(limit)
            .with_archiving(self.archiving(id, spec)))
    }

    /// The agents of the standbys.
    pub(super) fn standby_agents(
        &self,
        state: &InstanceState,
    ) -> Result<Vec<(MemberState, Agent)>, RuntimeError> {
        state
            .standbys()
            .into_iter()
            .map(|m| Ok((m, self.member_agent(state, &state.spec, m)?)))
            .collect()
    }

    /// Where clients connect: the primary, and every member for clients
    /// that find the primary (or a standby) themselves.
    pub(super) fn connection(&self, state: &InstanceState, primary: &Agent) -> ConnectionInfo {
        let mut info = primary.connection();
        if state.members().len() > 1 {
            let primary_index = state.primary_member().index;
            let mut members = state.members();
            members.sort_by_key(|m| (m.index != primary_index, m.index));
            info.members = members
                .iter()
                .map(|m| MemberAddress {
                    host: info.host.clone(),
                    port: m.port,
                })
                .collect();
        }
        info
    }

    /// Makes the standbys what `spec` declares, after the primary converged
    /// to it: as many as `replicas - 1` (new ones copied from the primary,
    /// surplus ones removed with their slots), each with the primary's
    /// configuration, running unless the instance is stopped. The state is
    /// saved before a new member's directory is made, so a crash resumes
    /// with the same directory and port.
    pub(super) async fn converge_members(
        &self,
        state: &mut InstanceState,
        spec: &InstanceSpec,
    ) -> Result<bool, RuntimeError> {
        if spec.stopped {
            for (_, agent) in self.standby_agents(state)? {
                agent.stop().await?;
            }
            return Ok(false);
        }
        let wanted = spec.replicas.saturating_sub(1) as usize;
        let mut standbys = state.standbys();
        standbys.sort_by_key(|m| m.index);
        // Fewer: the newest standbys go first.
        while standbys.len() > wanted {
            let gone = standbys.pop().expect("more standbys than wanted");
            let agent = self.member_agent(state, spec, gone)?;
            agent.delete().await?;
            let mut members = state.members();
            members.retain(|m| m.index != gone.index);
            state.members = members;
            self.save(state).await?;
            tracing::info!(instance = %state.name, member = %member_name(gone.index), "standby removed");
        }
        // More: the lowest free indices, on free ports.
        if standbys.len() < wanted {
            let _allocating = self.allocating.lock().await;
            let mut used: Vec<u16> = self
                .states()
                .await
                .iter()
                .flat_map(InstanceState::ports)
                .collect();
            used.extend(state.ports());
            let mut members = state.members();
            let mut index = 0;
            while members.len() < wanted + 1 {
                while members.iter().any(|m| m.index == index) {
                    index += 1;
                }
                let port = free_port(&self.settings.ports, &used)?;
                used.push(port);
                members.push(MemberState { index, port });
            }
            state.members = members;
            self.save(state).await?;
        }
        let primary = self.member_agent(state, spec, state.primary_member())?;
        let slots: Vec<String> = state
            .standbys()
            .iter()
            .map(|m| slot_name(m.index))
            .collect();
        primary.ensure_slots(&slots).await?;
        let mut restarted = false;
        for member in state.standbys() {
            let agent = self.member_agent(state, spec, member)?;
            if let Some(limit) = agent.memory_limit() {
                limit.apply(agent.run_as())?;
            }
            if !agent.is_created() {
                agent.create_standby(&primary).await?;
                tracing::info!(instance = %state.name, member = %member_name(member.index), "standby built");
            } else if !agent.is_running().await? {
                agent.rejoin(&primary).await?;
            }
            restarted |= agent.follow_config(&primary).await?;
        }
        Ok(restarted)
    }

    /// Adds the members to an observation of the primary.
    pub(super) async fn observe_members(
        &self,
        state: &InstanceState,
        primary: &Agent,
        observed: &mut ObservedSpec,
    ) {
        if !state.replicated() {
            return;
        }
        let downstreams = match observed.running {
            true => primary.downstreams().await.unwrap_or_default(),
            false => Vec::new(),
        };
        let mut members = Vec::new();
        let primary_index = state.primary_member().index;
        for m in state.members() {
            let name = member_name(m.index);
            let expected = match m.index == primary_index {
                true => MemberRole::Primary,
                false => MemberRole::Standby,
            };
            let agent = match m.index == primary_index {
                true => Ok(primary.clone()),
                false => self.member_agent(state, &state.spec, m),
            };
            let Ok(agent) = agent else { continue };
            let seen = downstreams.iter().find(|d| d.member == name);
            members.push(agent.observe_member(&name, expected, seen).await);
        }
        members.sort_by_key(|m| (m.role != MemberRole::Primary, m.name.clone()));
        observed.members = Some(members);
    }

    /// Supervises an instance with standbys (its lock held): a primary that
    /// is gone or hung is replaced by the most advanced standby; standbys
    /// that stopped are brought back. `Err(())`: there is no standby to
    /// promote, and the primary is supervised as a single server is.
    pub(super) async fn supervise_members(
        &self,
        id: Uuid,
        mut state: InstanceState,
    ) -> Result<Option<Supervised>, ()> {
        let primary_member = state.primary_member();
        let Ok(primary) = self.member_agent(&state, &state.spec, primary_member) else {
            return Ok(None);
        };
        let running = primary.is_running().await.unwrap_or(true);
        let healthy = running && primary.answers(PROBE_TIMEOUT).await;
        if healthy {
            self.unreachable
                .lock()
                .expect("unreachable map poisoned")
                .remove(&id);
            self.bring_back_standbys(&state, &primary).await;
            return Ok(None);
        }
        let since = *self
            .unreachable
            .lock()
            .expect("unreachable map poisoned")
            .entry(id)
            .or_insert_with(Instant::now);
        tracing::debug!(instance = %state.name, running, unanswered = ?since.elapsed(), "the primary does not answer");
        if running && since.elapsed() < self.settings.failover_timeout {
            return Ok(None);
        }
        let how = match running {
            true => format!("did not answer for {:.1} s", since.elapsed().as_secs_f64()),
            false => primary
                .take_exit()
                .map(agent::describe_exit)
                .unwrap_or_else(|| "its postmaster exited".to_owned()),
        };
        let Some(candidate) = self.best_standby(&state).await else {
            tracing::debug!(instance = %state.name, "no standby answers; nothing to fail over to");
            return match running {
                true => Ok(None),
                false => Err(()),
            };
        };
        Ok(self
            .fail_over(id, &mut state, &primary, candidate, since, how)
            .await)
    }

    /// Fences `primary`, records `candidate` as the primary, promotes it,
    /// and makes the other members follow it.
    async fn fail_over(
        &self,
        id: Uuid,
        state: &mut InstanceState,
        primary: &Agent,
        candidate: MemberState,
        since: Instant,
        how: String,
    ) -> Option<Supervised> {
        let old = state.primary_member().index;
        // Fence first: the old primary accepts nothing from here on.
        if let Err(e) = primary.fence().await {
            tracing::error!(instance = %state.name, error = %e, "could not fence the primary; not failing over");
            return None;
        }
        state.primary = candidate.index;
        if let Err(e) = self.save(state).await {
            tracing::error!(instance = %state.name, error = %e, "could not record the new primary; not failing over");
            return None;
        }
        let new_primary = self.member_agent(state, &state.spec, candidate).ok()?;
        if let Err(e) = new_primary.promote().await {
            tracing::error!(instance = %state.name, error = %e, "promoting the standby failed");
            return None;
        }
        let unreachable_for = since.elapsed();
        self.unreachable
            .lock()
            .expect("unreachable map poisoned")
            .remove(&id);
        tracing::warn!(instance = %state.name, promoted = %member_name(candidate.index), old = %member_name(old), "failed over");
        let slots: Vec<String> = state
            .standbys()
            .iter()
            .map(|m| slot_name(m.index))
            .collect();
        if let Err(e) = new_primary.ensure_slots(&slots).await {
            tracing::warn!(instance = %state.name, error = %e, "creating the standbys' slots on the new primary failed");
        }
        // The other standbys follow the new primary; the old one rejoins.
        for (member, agent) in self.standby_agents(state).ok()? {
            let result = match member.index == old {
                true => agent.rejoin(&new_primary).await.map(|_| ()),
                false => agent.restart().await,
            };
            if let Err(e) = result {
                tracing::warn!(instance = %state.name, member = %member_name(member.index), error = %e, "a standby did not follow the new primary yet");
            }
        }
        let mut observed = new_primary.observe(&state.spec).await.ok()?;
        self.observe_members(state, &new_primary, &mut observed)
            .await;
        Some(Supervised {
            instance_id: id,
            generation: state.applied_generation,
            outcome: Supervision::FailedOver {
                note: format!(
                    "failover: {} promoted, {} unreachable for {:.1} s ({how})",
                    member_name(candidate.index),
                    member_name(old),
                    unreachable_for.as_secs_f64()
                ),
                observed: Box::new(observed),
                connection: self.connection(state, &new_primary),
            },
        })
    }

    /// Switches the instance's primary over to standby `to`, or to the most
    /// advanced standby (see the module's documentation).
    pub(super) async fn switch_over(
        &self,
        id: Uuid,
        to: Option<u32>,
    ) -> Result<SwitchedOver, RuntimeError> {
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let mut state = self
            .load(id)
            .await?
            .filter(|s| !s.deleted && s.applied_generation > 0)
            .ok_or_else(|| RuntimeError::Apply("this data plane runs no such instance".into()))?;
        if state.spec.stopped {
            return Err(RuntimeError::Apply("the instance is stopped".into()));
        }
        let old = state.primary_member().index;
        let candidate = match to {
            Some(i) if i == old => {
                return Err(RuntimeError::Apply(format!(
                    "{} is already the primary",
                    member_name(i)
                )))
            }
            Some(i) => state
                .standbys()
                .into_iter()
                .find(|m| m.index == i)
                .ok_or_else(|| {
                    RuntimeError::Apply(format!(
                        "{} is not a standby of this instance",
                        member_name(i)
                    ))
                })?,
            None => self.best_standby(&state).await.ok_or_else(|| {
                RuntimeError::Apply("no standby answers; there is nothing to switch over to".into())
            })?,
        };
        let spec = state.spec.clone();
        let (new_primary, outage) = self.planned_switch(&mut state, &spec, candidate).await?;
        let mut observed = new_primary.observe(&state.spec).await?;
        self.observe_members(&state, &new_primary, &mut observed)
            .await;
        Ok(SwitchedOver {
            generation: state.applied_generation,
            note: format!(
                "switchover: {} promoted, {} now a standby; writes refused for {:.2} s",
                member_name(candidate.index),
                member_name(old),
                outage.as_secs_f64()
            ),
            observed,
            connection: self.connection(&state, &new_primary),
        })
    }

    /// Makes `candidate` the primary without losing a commit; the caller
    /// holds the instance's lock. Returns the new primary's agent and how
    /// long writes were refused. When the candidate does not catch up, the
    /// old primary is started again and nothing changed.
    pub(super) async fn planned_switch(
        &self,
        state: &mut InstanceState,
        spec: &InstanceSpec,
        candidate: MemberState,
    ) -> Result<(Agent, Duration), RuntimeError> {
        let old = state.primary_member();
        let primary = self.member_agent(state, spec, old)?;
        let standby = self.member_agent(state, spec, candidate)?;
        // A standby that just restarted connects again within moments.
        let deadline = Instant::now() + SWITCHOVER_CATCH_UP;
        let streaming = loop {
            let streaming = primary
                .downstreams()
                .await?
                .into_iter()
                .any(|d| d.member == member_name(candidate.index) && d.state == "streaming");
            if streaming || Instant::now() >= deadline {
                break streaming;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !streaming {
            return Err(RuntimeError::Apply(format!(
                "{} is not streaming from the primary; a switchover to it could lose commits",
                member_name(candidate.index)
            )));
        }
        let refused_from = Instant::now();
        // A clean shutdown sends the last WAL to the connected standbys.
        primary.stop().await?;
        let caught_up = match primary.shutdown_checkpoint().await? {
            Some(end) => standby.wait_received(end, SWITCHOVER_CATCH_UP).await?,
            None => false,
        };
        if !caught_up {
            primary.start().await?;
            return Err(RuntimeError::Apply(format!(
                "{} did not receive the primary's last WAL within {} s; the primary runs again",
                member_name(candidate.index),
                SWITCHOVER_CATCH_UP.as_secs()
            )));
        }
        state.primary = candidate.index;
        self.save(state).await?;
        let new_primary = self.member_agent(state, spec, candidate)?;
        new_primary.promote().await?;
        let outage = refused_from.elapsed();
        tracing::info!(instance = %state.name, promoted = %member_name(candidate.index), old = %member_name(old.index), ?outage, "switched over");
        let slots: Vec<String> = state
            .standbys()
            .iter()
            .map(|m| slot_name(m.index))
            .collect();
        new_primary.ensure_slots(&slots).await?;
        for (member, agent) in self.standby_agents(state)? {
            let result = match member.index == old.index {
                true => agent.rejoin(&new_primary).await.map(|_| ()),
                false => agent.restart().await,
            };
            if let Err(e) = result {
                tracing::warn!(instance = %state.name, member = %member_name(member.index), error = %e, "a standby did not follow the new primary yet");
            }
        }
        Ok((new_primary, outage))
    }

    /// Converges a replicated instance so that a restart never takes the
    /// primary down first: the primary takes the new configuration without
    /// restarting, the standbys follow it (restarting when it needs that),
    /// and when the primary needs a restart (or one was asked for) it hands
    /// over to the most advanced standby and restarts as that one's
    /// standby; the new primary then converges the rest of the spec. When
    /// no standby can take over, the primary restarts in place.
    /// Returns the outcome, whether a standby restarted, the primary's
    /// agent afterwards and a note for the history.
    pub(super) async fn rolling_converge(
        &self,
        state: &mut InstanceState,
        primary: Agent,
        event: &domain::DataPlaneEvent,
        passwords: &agent::RolePasswords,
    ) -> Result<(agent::ConvergeOutcome, bool, Agent, Option<String>), RuntimeError> {
        let spec = &event.spec;
        let forced = event.kind == domain::EventKind::Restart;
        let staged = primary.converge_deferring_restart(spec, passwords).await?;
        let mut standbys_restarted = self.converge_members(state, spec).await?;
        let pending = staged.pending_restart_before.clone();
        if !forced && pending.is_empty() {
            return Ok((staged, standbys_restarted, primary, None));
        }
        if forced {
            for (_, standby) in self.standby_agents(state)? {
                standby.restart().await?;
            }
            standbys_restarted = true;
        }
        let old = state.primary_member().index;
        let switched = match self.best_standby(state).await {
            Some(candidate) => self.planned_switch(state, spec, candidate).await,
            None => Err(RuntimeError::Apply("no standby answers".to_owned())),
        };
        let why = match pending.is_empty() {
            true => "a restart was asked for".to_owned(),
            false => format!("{} needed a restart", pending.join(", ")),
        };
        match switched {
            Ok((new_primary, outage)) => {
                let mut outcome = new_primary.converge_with(spec, false, passwords).await?;
                outcome.restarted = true;
                outcome.pending_restart_before = pending;
                let note = format!(
                    "rolling restart ({why}): standbys restarted first, then {} promoted and {} restarted as its standby; writes refused for {:.2} s",
                    member_name(state.primary),
                    member_name(old),
                    outage.as_secs_f64()
                );
                Ok((outcome, standbys_restarted, new_primary, Some(note)))
            }
            // The primary did not move: it restarts where it is.
            Err(e) if state.primary == old => {
                tracing::warn!(instance = %state.name, error = %e, "no switchover for the restart; restarting the primary in place");
                let mut outcome = primary.converge_with(spec, forced, passwords).await?;
                outcome.restarted = true;
                let note = format!(
                    "restart ({why}): standbys restarted first; the primary restarted in place, as no switchover was possible: {e}"
                );
                Ok((outcome, standbys_restarted, primary, Some(note)))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the primary answers within the probe's timeout, or is not
    /// running at all (observing that is quick).
    pub(super) async fn primary_answers(&self, state: &InstanceState) -> bool {
        let Ok(agent) = self.member_agent(state, &state.spec, state.primary_member()) else {
            return false;
        };
        match agent.is_running().await {
            Ok(true) => agent.answers(PROBE_TIMEOUT).await,
            _ => true,
        }
    }

    /// The running standby that has received the most WAL.
    async fn best_standby(&self, state: &InstanceState) -> Option<MemberState> {
        let mut best: Option<(MemberState, domain::Lsn)> = None;
        for (member, agent) in self.standby_agents(state).ok()? {
            if !agent.answers(PROBE_TIMEOUT).await {
                continue;
            }
            let Ok(Some(position)) = agent.replication_position().await else {
                continue;
            };
            let lsn = position
                .received_lsn
                .as_deref()
                .and_then(|l| domain::Lsn::parse(l).ok())
                .unwrap_or(domain::Lsn(0));
            if position.in_recovery && best.as_ref().is_none_or(|(_, b)| lsn > *b) {
                best = Some((member, lsn));
            }
        }
        best.map(|(m, _)| m)
    }

    /// Standbys that stopped come back (rewound first, when their history
    /// left the primary's); a standby that accepts writes is fenced and
    /// rejoins.
    async fn bring_back_standbys(&self, state: &InstanceState, primary: &Agent) {
        let Ok(standbys) = self.standby_agents(state) else {
            return;
        };
        for (member, agent) in standbys {
            let position = agent.replication_position().await.ok().flatten();
            let rejoin = match position {
                None => !agent.is_running().await.unwrap_or(true),
                Some(p) if !p.in_recovery => {
                    tracing::warn!(instance = %state.name, member = %member_name(member.index), "a standby accepts writes; fencing it");
                    agent.fence().await.is_ok()
                }
                Some(_) => false,
            };
            if rejoin && agent.is_created() {
                match agent.rejoin(primary).await {
                    Ok(how) => {
                        tracing::info!(instance = %state.name, member = %member_name(member.index), how, "standby back")
                    }
                    Err(e) => {
                        tracing::warn!(instance = %state.name, member = %member_name(member.index), error = %e, "bringing a standby back failed")
                    }
                }
            }
        }
    }
}
