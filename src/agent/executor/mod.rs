//! Carries out an [`IsolationPlan`]: the namespace, the link, its configuration and the DNS files,
//! all or nothing, and takes them down again.
//!
//! Every check that needs no side effect comes first (leases, ownership, the link's kind, what
//! sits at `/run/netns/NAME`). Then each side effect pushes its undo step, and any failure, the
//! deadline included, runs the undo steps in reverse. Teardown goes on past a failed step and
//! reports every error.
//!
//! What the agent owns is kept in one [`Record`] per namespace under [`Paths::state`], written
//! before the side effects it describes can be lost: before a namespace is created, and before a
//! file is overwritten (with the old content as backup). A copy under [`Paths::durable`] outlives
//! a reboot, as `/etc/netns` does. A restarted agent reloads them (`store`); `ownership` decides
//! who may use what.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info};

use crate::agent::policy::POLICY_PATH;
pub use crate::agent::record::{DnsFile, FileRecord, Record};
use crate::agent::sys::{FileId, Link, NetnsId, NetnsSetup, Sys, SysError};
use crate::plan::settings::NetnsName;
use crate::plan::{IsolationPlan, NETNS_ETC_DIR, NETNS_RUN_DIR};
use crate::report::Chain;

mod delete;
mod dns;
mod error;
mod ownership;
mod prepare;
mod store;
mod stranded;
mod teardown;

pub use delete::{Deleted, END_GRACE};
pub use error::{ExecError, TeardownError};
pub use prepare::{PrepareArgs, Prepared};

const PING_GROUP_RANGE: &str = "net.ipv4.ping_group_range";

/// Where namespaces, their DNS files, the agent's records and its policy live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub run_netns: PathBuf,
    pub etc_netns: PathBuf,
    /// The records, gone at a reboot with the namespaces they describe.
    pub state: PathBuf,
    /// A copy of each record that survives a reboot, as `/etc/netns` does: the proof that the
    /// agent made `/etc/netns/NAME` and its files, and the backups of what they replaced.
    pub durable: PathBuf,
    /// The administrator's policy ([`Policy`]).
    pub policy: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            run_netns: PathBuf::from(NETNS_RUN_DIR),
            etc_netns: PathBuf::from(NETNS_ETC_DIR),
            state: PathBuf::from("/run/nm-vpn-netns"),
            durable: PathBuf::from("/var/lib/nm-vpn-netns"),
            policy: PathBuf::from(POLICY_PATH),
        }
    }
}

/// One isolation, as the agent asks for it: the connection and its namespace, as `Prepare` has
/// them, and the tun with its plan.
#[derive(Debug, Clone)]
pub struct IsolateArgs {
    /// `claim.netns` is `plan.netns`: both come from the same request.
    pub claim: PrepareArgs,
    pub plan: IsolationPlan,
    /// The link in the agent's namespace, where it is named `plan.link.name`.
    pub tun_ifindex: u32,
}

/// A finished isolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolated {
    pub netns: NetnsName,
    /// This call created the namespace.
    pub created: bool,
    /// The link's name inside the namespace.
    pub link: String,
    pub elapsed: Duration,
}

/// One side effect's reversal.
#[derive(Debug)]
enum Undo {
    NetnsDel,
    LinkBack { link: String, original: Link },
    DirRemove(PathBuf),
    FileRemove(PathBuf),
    FileRestore(DnsFile, PathBuf, Vec<u8>),
}

/// An isolation under way: what to undo if it fails.
struct Attempt<N> {
    name: NetnsName,
    path: PathBuf,
    netns: N,
    netns_id: NetnsId,
    /// The file under the namespace's mount, if the agent made it (see [`Record::netns_file`]).
    netns_file: Option<FileId>,
    created: bool,
    /// The namespace is the agent's: this attempt or an earlier one created it.
    ours: bool,
    previous: Option<Record>,
    undo: Vec<Undo>,
}

/// Runs isolations on a [`Sys`], keeping the records of what it owns.
#[derive(Debug)]
pub struct Executor<S: Sys> {
    sys: S,
    paths: Paths,
    records: BTreeMap<NetnsName, Record>,
    /// What a reboot leaves of each durable copy on disk ([`Record::after_reboot`]).
    durable: BTreeMap<NetnsName, Record>,
}

/// A namespace found at its path: the handle and its identity.
type Opened<N> = Option<(N, NetnsId)>;

impl<S: Sys> Executor<S> {
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// Moves the request's link into its namespace and configures it, or leaves nothing behind.
    pub fn isolate(&mut self, req: &IsolateArgs) -> Result<Isolated, ExecError> {
        let start = self.sys.now();
        let netns = &req.plan.netns;
        info!(
            "isolating connection {} ({}) in namespace {netns}: link {} (ifindex {})",
            req.claim.connection_id, req.claim.connection_uuid, req.plan.link.name, req.tun_ifindex
        );
        let claim = &req.claim;
        debug_assert_eq!(claim.netns, *netns, "one request, one namespace");
        let previous = self.check_claim(claim)?;
        let link = self.check_link(req)?;
        let path = self.paths.run_netns.join(netns.as_str());
        let (existing, ours) = self.open_claimed(claim, &path, previous.as_ref())?;
        // A namespace someone else made keeps its own settings.
        let ping_group_range = if ours || existing.is_none() {
            Some(self.sys.sysctl_read(PING_GROUP_RANGE)?)
        } else {
            None
        };
        let (handle, netns_id, netns_file, created) = match existing {
            Some((handle, id)) => {
                let file = previous
                    .as_ref()
                    .filter(|_| ours)
                    .and_then(|r| r.netns_file);
                (handle, id, file, false)
            }
            None => {
                check_deadline(&self.sys, claim, start, "creating the namespace")?;
                let (handle, id, file) = self.create_netns(claim, &path, previous.as_ref())?;
                (handle, id, Some(file), true)
            }
        };
        let mut attempt = Attempt {
            name: netns.clone(),
            path,
            netns: handle,
            netns_id,
            netns_file,
            created,
            ours: ours || created,
            previous,
            undo: if created {
                vec![Undo::NetnsDel]
            } else {
                Vec::new()
            },
        };
        let steps = self.isolate_steps(req, &mut attempt, &link, ping_group_range, start);
        match steps {
            Ok(isolation) => {
                info!(
                    "isolated connection {} in namespace {netns} as link {} in {} µs",
                    req.claim.connection_id,
                    isolation.link,
                    isolation.elapsed.as_micros()
                );
                Ok(isolation)
            }
            Err(e) => Err(self.roll_back(attempt, e)),
        }
    }

    /// The namespace at `path` and its identity, if there is one.
    /// The checks of a claim on its namespace before anything of it is opened: no other lease
    /// holds it and the user is within the limit. Returns the namespace's previous record.
    fn check_claim(&mut self, claim: &PrepareArgs) -> Result<Option<Record>, ExecError> {
        let previous = self.previous_record(&claim.netns)?;
        ownership::check_lease(&claim.netns, previous.as_ref(), claim)?;
        self.check_user_limit(claim)?;
        Ok(previous)
    }

    /// Opens the claimed namespace at `path` if it exists, and says whether it is ours; one that
    /// is not must be one the claim may use, and a user's must have no stray entries.
    fn open_claimed(
        &mut self,
        claim: &PrepareArgs,
        path: &Path,
        previous: Option<&Record>,
    ) -> Result<(Opened<S::Netns>, bool), ExecError> {
        let existing = self.open_netns(path)?;
        let ours = existing
            .as_ref()
            .is_some_and(|(_, id)| ownership::is_ours(previous, *id));
        if existing.is_some() && !ours {
            ownership::check_foreign(&claim.netns, claim)?;
        }
        if claim.user.is_some() {
            self.check_user_entries(&claim.netns, previous)?;
        }
        Ok((existing, ours))
    }

    fn open_netns(&mut self, path: &Path) -> Result<Option<(S::Netns, NetnsId)>, SysError> {
        let Some(handle) = self.sys.netns_open(path)? else {
            return Ok(None);
        };
        let id = self.sys.netns_id(&handle)?;
        Ok(Some((handle, id)))
    }

    /// Creates the namespace and the file it is mounted on, both on record as the agent's with
    /// their identities before they get the name: a crash at any point finds either no name, or
    /// the file or namespace the record identifies, never one it could mistake for another. Puts
    /// the record back as it was if that fails.
    /// Returns the namespace, its identity and that of the file it is mounted on.
    pub(super) fn create_netns(
        &mut self,
        req: &PrepareArgs,
        path: &Path,
        previous: Option<&Record>,
    ) -> Result<(S::Netns, NetnsId, FileId), ExecError> {
        let netns = &req.netns;
        let (handle, id) = self.sys.netns_create(path)?;
        let (mount_point, file) = self.sys.netns_mount_point(&self.paths.run_netns)?;
        let mut intent = new_record(req, previous, true);
        intent.netns_id = Some(id);
        intent.netns_file = Some(file);
        // The bind leaves the empty file under the name if it is cut short between its link and
        // its mount; it is on record as the agent's before it has that name.
        intent.netns_pending = true;
        let bound = self
            .save(&intent)
            .and_then(|()| self.sys.netns_bind(&handle, mount_point, path));
        if let Err(e) = bound {
            let restored = match previous {
                Some(previous) => self.save(previous),
                None => self.forget(netns),
            };
            if let Err(r) = restored {
                error!("putting back the record of {netns}: {}", Chain(&r));
            }
            return Err(e.into());
        }
        info!("created namespace {netns} at {}", path.display());
        Ok((handle, id, file))
    }

    fn check_link(&mut self, req: &IsolateArgs) -> Result<Link, ExecError> {
        let expected = req.plan.link.name.as_str();
        let missing = || ExecError::LinkMissing {
            ifindex: req.tun_ifindex,
            name: expected.to_owned(),
        };
        if req.tun_ifindex == 0 {
            return Err(missing());
        }
        let link = self.sys.link_get(req.tun_ifindex)?.ok_or_else(missing)?;
        if link.name != expected {
            return Err(ExecError::LinkRenamed {
                ifindex: req.tun_ifindex,
                expected: expected.to_owned(),
                found: link.name,
            });
        }
        match link.kind.as_deref() {
            Some("tun") => Ok(link),
            Some(kind @ ("ovpn-dco" | "ovpn")) => Err(ExecError::Dco {
                kind: kind.to_owned(),
                link: link.name,
            }),
            kind => Err(ExecError::NotTun {
                kind: kind.map_or_else(
                    || "a device with no link kind (a physical device?)".to_owned(),
                    |k| format!("a {k} device"),
                ),
                link: link.name,
            }),
        }
    }

    fn isolate_steps(
        &mut self,
        req: &IsolateArgs,
        attempt: &mut Attempt<S::Netns>,
        link: &Link,
        ping_group_range: Option<String>,
        start: Instant,
    ) -> Result<Isolated, ExecError> {
        const SETUP: &str = "configuring the namespace";
        let claim = &req.claim;
        let mut record = self.record_attempt(claim, attempt)?;
        check_deadline(&self.sys, claim, start, "moving the link")?;
        let inside = self.move_link(attempt, link)?;
        check_deadline(&self.sys, claim, start, SETUP)?;
        let setup = NetnsSetup {
            link: &inside,
            mtu: req.plan.link.mtu,
            ipv4: req.plan.ipv4.as_ref(),
            ipv6: req.plan.ipv6.as_ref(),
            ping_group_range: ping_group_range.as_deref(),
            reapply: false,
            deadline: Some(req.claim.deadline),
        };
        let ifindex = self
            .sys
            .netns_setup(&attempt.netns, &setup)
            .map_err(|e| match e {
                SysError::Deadline { .. } => timeout(claim, start, self.sys.now(), SETUP),
                e => e.into(),
            })?;
        log_setup(&attempt.name, &setup);
        check_deadline(&self.sys, claim, start, "writing the DNS files")?;
        self.write_dns_files(&mut record, &req.plan, &mut attempt.undo)?;
        check_deadline(&self.sys, claim, start, "recording the isolation")?;
        record.link = Some(inside.clone());
        record.link_ifindex = Some(ifindex);
        self.save(&record)?;
        Ok(Isolated {
            netns: attempt.name.clone(),
            created: attempt.created,
            link: inside,
            elapsed: self.sys.now().saturating_duration_since(start),
        })
    }

    /// The record of this isolation, saved at once if the namespace is new: from then on the
    /// agent must know it as its own, with its identity, even across a crash.
    fn record_attempt(
        &mut self,
        req: &PrepareArgs,
        attempt: &Attempt<S::Netns>,
    ) -> Result<Record, ExecError> {
        let mut record = new_record(req, attempt.previous.as_ref(), attempt.ours);
        record.netns_id = Some(attempt.netns_id);
        record.netns_file = attempt.netns_file;
        if attempt.created {
            self.save(&record)?;
        }
        Ok(record)
    }

    /// Moves the link into the namespace, renamed if its name is taken there; returns its name
    /// inside.
    fn move_link(
        &mut self,
        attempt: &mut Attempt<S::Netns>,
        link: &Link,
    ) -> Result<String, ExecError> {
        // A new namespace holds only `lo`, which no tun can be named.
        let rename = if attempt.created {
            None
        } else {
            let links = self.sys.link_list(&attempt.netns)?;
            let taken: Vec<String> = links.into_iter().map(|l| l.name).collect();
            free_name(&link.name, &taken)
        };
        self.sys
            .link_set_netns(link.ifindex, &attempt.netns, rename.as_deref())?;
        let inside = rename.unwrap_or_else(|| link.name.clone());
        info!(
            "moved link {} (ifindex {}) into namespace {} as {inside}",
            link.name, link.ifindex, attempt.name
        );
        attempt.undo.push(Undo::LinkBack {
            link: inside.clone(),
            original: link.clone(),
        });
        Ok(inside)
    }

    /// Applies `plan` again to the link already in `netns`, as after an openvpn restart that sent
    /// its configuration anew.
    pub fn reapply(&mut self, netns: &NetnsName, plan: &IsolationPlan) -> Result<(), ExecError> {
        if plan.netns != *netns {
            return Err(ExecError::PlanMismatch {
                netns: netns.clone(),
                plan: plan.netns.clone(),
            });
        }
        let not_isolated = || ExecError::NotIsolated {
            netns: netns.clone(),
        };
        let mut record = self
            .records
            .get(netns)
            .filter(|r| r.leased)
            .cloned()
            .ok_or_else(not_isolated)?;
        let link = record.link.clone().ok_or_else(not_isolated)?;
        let path = self.paths.run_netns.join(netns.as_str());
        let handle = self
            .sys
            .netns_open(&path)?
            .ok_or_else(|| ExecError::NetnsGone {
                netns: netns.clone(),
                path,
            })?;
        let setup = NetnsSetup {
            link: &link,
            mtu: plan.link.mtu,
            ipv4: plan.ipv4.as_ref(),
            ipv6: plan.ipv6.as_ref(),
            ping_group_range: None,
            reapply: true,
            // A re-sent config has no request deadline: openvpn restarted on its own.
            deadline: None,
        };
        self.sys.netns_setup(&handle, &setup)?;
        log_setup(netns, &setup);
        // Nothing to roll back to: the previous configuration is gone once the new one applies.
        self.write_dns_files(&mut record, plan, &mut Vec::new())?;
        if self.records.get(netns) != Some(&record) {
            self.save(&record)?;
        }
        Ok(())
    }
}

/// The record of `req`'s isolation, carrying on what `previous` knew of the namespace's
/// directory and files; `ours`: the agent created the namespace.
pub(super) fn new_record(req: &PrepareArgs, previous: Option<&Record>, ours: bool) -> Record {
    Record {
        netns: req.netns.clone(),
        connection_uuid: req.connection_uuid.clone(),
        connection_id: req.connection_id.clone(),
        owner: req.owner.clone(),
        never_default_v4: req.never_default_v4,
        never_default_v6: req.never_default_v6,
        tunnel_mtu: req.tunnel_mtu,
        created: ours,
        netns_id: None,
        identity_first: true,
        netns_pending: false,
        netns_file: None,
        user: req.user.clone(),
        persistent: req.persistent,
        leased: true,
        link: None,
        link_ifindex: None,
        etc_dir_created: previous.is_some_and(|r| r.etc_dir_created),
        files: previous.map(|r| r.files.clone()).unwrap_or_default(),
    }
}

pub(super) fn check_deadline<S: Sys>(
    sys: &S,
    req: &PrepareArgs,
    start: Instant,
    step: &'static str,
) -> Result<(), ExecError> {
    let now = sys.now();
    if now < req.deadline {
        return Ok(());
    }
    Err(timeout(req, start, now, step))
}

fn timeout(req: &PrepareArgs, start: Instant, now: Instant, step: &'static str) -> ExecError {
    ExecError::Timeout {
        netns: req.netns.clone(),
        elapsed: now.saturating_duration_since(start),
        step,
    }
}

/// The name to give the link inside the namespace if its own is taken there.
fn free_name(name: &str, taken: &[String]) -> Option<String> {
    if !taken.iter().any(|t| t == name) {
        return None;
    }
    (0u32..)
        .map(|n| format!("vpn{n}"))
        .find(|candidate| !taken.contains(candidate))
}

fn log_setup(netns: &NetnsName, setup: &NetnsSetup<'_>) {
    let family = |plan: Option<(String, u8, usize, bool)>| match plan {
        None => "none".to_owned(),
        Some((address, prefix, routes, default)) => format!(
            "{address}/{prefix}, {routes} routes{}",
            if default { " and a default route" } else { "" }
        ),
    };
    info!(
        "configured namespace {netns}: lo up, {} up with mtu {:?}; IPv4 {}; IPv6 {}{}",
        setup.link,
        setup.mtu,
        family(setup.ipv4.map(|p| (
            p.address.to_string(),
            p.prefix,
            p.routes.len(),
            p.default_route.is_some()
        ))),
        family(setup.ipv6.map(|p| (
            p.address.to_string(),
            p.prefix,
            p.routes.len(),
            p.default_route.is_some()
        ))),
        setup
            .ping_group_range
            .map_or(String::new(), |r| format!("; {PING_GROUP_RANGE} {r}"))
    );
}

#[cfg(test)]
pub(crate) mod tests;
