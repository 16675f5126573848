//! Carries out an [`IsolationPlan`]: the namespace, the link, its configuration and the DNS files,
//! all or nothing, and takes them down again.
//!
//! Every check that needs no side effect comes first (leases, ownership, the link's kind, what
//! sits at `/run/netns/NAME`). Then each side effect pushes its undo step, and any failure, the
//! deadline included, runs the undo steps in reverse. Teardown goes on past a failed step and
//! reports every error.
//!
//! What the agent owns is kept in one [`Record`] per namespace under [`Paths::state`], written
//! before the side effects it describes can be lost: right after a namespace is created, and
//! before a file is overwritten (with the old content as backup). A restarted agent reloads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::agent::record::Format;
pub use crate::agent::record::{DnsFile, FileRecord, Record};
use crate::agent::sys::{Link, NetnsSetup, Sys, SysError};
use crate::plan::settings::NetnsName;
use crate::plan::IsolationPlan;
use crate::report::Chain;

mod error;
mod stranded;
mod teardown;

pub use error::{ExecError, TeardownError};

const PING_GROUP_RANGE: &str = "net.ipv4.ping_group_range";

/// Where namespaces, their DNS files and the agent's records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub run_netns: PathBuf,
    pub etc_netns: PathBuf,
    pub state: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            run_netns: PathBuf::from("/run/netns"),
            etc_netns: PathBuf::from("/etc/netns"),
            state: PathBuf::from("/run/nm-vpn-netns"),
        }
    }
}

/// One isolation, as the agent asks for it.
#[derive(Debug, Clone)]
pub struct IsolateArgs {
    pub plan: IsolationPlan,
    pub connection_uuid: String,
    pub connection_id: String,
    /// Keep the namespace and its DNS files after release, for the next isolation of this
    /// connection.
    pub persistent: bool,
    /// No `connection.permissions`: only such a connection may use a namespace that the agent
    /// did not create.
    pub system_connection: bool,
    /// The link in the agent's namespace, where it is named `plan.link.name`.
    pub tun_ifindex: u32,
    /// Who holds the lease, such as the caller's unique bus name; kept in the record.
    pub owner: String,
    /// The connection's `ipv4.never-default` and `ipv6.never-default`, kept in the record for
    /// a `Reapply` after the agent restarted.
    pub never_default_v4: bool,
    pub never_default_v6: bool,
    /// From `netns-timeout`: past it, everything is rolled back.
    pub deadline: Instant,
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
    FileRestore(PathBuf, Vec<u8>),
}

/// An isolation under way: what to undo if it fails.
struct Attempt<N> {
    name: NetnsName,
    path: PathBuf,
    netns: N,
    created: bool,
    previous: Option<Record>,
    undo: Vec<Undo>,
}

/// Runs isolations on a [`Sys`], keeping the records of what it owns.
#[derive(Debug)]
pub struct Executor<S: Sys> {
    sys: S,
    paths: Paths,
    records: BTreeMap<NetnsName, Record>,
}

impl<S: Sys> Executor<S> {
    /// Loads the records under `paths.state`, creating that directory if needed.
    pub fn new(mut sys: S, paths: Paths) -> Result<Self, ExecError> {
        if sys.dir_create(&paths.state, 0o700)? {
            info!("created state directory {}", paths.state.display());
        }
        let mut records = BTreeMap::new();
        for entry in sys.dir_list(&paths.state)? {
            // Dot files are temporary files of an interrupted write.
            if entry.starts_with('.') {
                continue;
            }
            let path = paths.state.join(&entry);
            let Ok(netns) = entry.parse::<NetnsName>() else {
                warn!("ignoring {}: not a namespace name", path.display());
                continue;
            };
            if let Some(record) = load_record(&mut sys, &path, &netns)? {
                records.insert(netns, record);
            }
        }
        Ok(Executor {
            sys,
            paths,
            records,
        })
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
            req.connection_id, req.connection_uuid, req.plan.link.name, req.tun_ifindex
        );
        let previous = self.records.get(netns).cloned();
        check_lease(netns, previous.as_ref(), req)?;
        let link = self.check_link(req)?;
        let path = self.paths.run_netns.join(netns.as_str());
        let existing = self.sys.netns_open(&path)?;
        let ours = previous.as_ref().is_some_and(|r| r.created);
        if existing.is_some() && !ours && !req.system_connection {
            return Err(ExecError::ForeignNetns {
                netns: netns.clone(),
                connection_id: req.connection_id.clone(),
            });
        }
        // A namespace someone else made keeps its own settings.
        let ping_group_range = if ours || existing.is_none() {
            Some(self.sys.sysctl_read(PING_GROUP_RANGE)?)
        } else {
            None
        };
        let (handle, created) = match existing {
            Some(handle) => (handle, false),
            None => {
                check_deadline(&self.sys, req, start, "creating the namespace")?;
                let handle = self.sys.netns_add(&path)?;
                info!("created namespace {netns} at {}", path.display());
                (handle, true)
            }
        };
        let mut attempt = Attempt {
            name: netns.clone(),
            path,
            netns: handle,
            created,
            previous,
            undo: if created {
                vec![Undo::NetnsDel]
            } else {
                Vec::new()
            },
        };
        match self.isolate_steps(req, &mut attempt, &link, ping_group_range.as_deref(), start) {
            Ok(isolation) => {
                info!(
                    "isolated connection {} in namespace {netns} as link {} in {} µs",
                    req.connection_id,
                    isolation.link,
                    isolation.elapsed.as_micros()
                );
                Ok(isolation)
            }
            Err(e) => Err(self.roll_back(attempt, e)),
        }
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
        ping_group_range: Option<&str>,
        start: Instant,
    ) -> Result<Isolated, ExecError> {
        const SETUP: &str = "configuring the namespace";
        let mut record = self.record_attempt(req, attempt)?;
        check_deadline(&self.sys, req, start, "moving the link")?;
        let inside = self.move_link(attempt, link)?;
        check_deadline(&self.sys, req, start, SETUP)?;
        let setup = NetnsSetup {
            link: &inside,
            mtu: req.plan.link.mtu,
            ipv4: req.plan.ipv4.as_ref(),
            ipv6: req.plan.ipv6.as_ref(),
            ping_group_range,
            reapply: false,
            deadline: Some(req.deadline),
        };
        self.sys
            .netns_setup(&attempt.netns, &setup)
            .map_err(|e| match e {
                SysError::Deadline { .. } => timeout(req, start, self.sys.now(), SETUP),
                e => e.into(),
            })?;
        log_setup(&attempt.name, &setup);
        check_deadline(&self.sys, req, start, "writing the DNS files")?;
        self.write_dns_files(&mut record, &req.plan, &mut attempt.undo)?;
        check_deadline(&self.sys, req, start, "recording the isolation")?;
        record.link = Some(inside.clone());
        self.save(&record)?;
        Ok(Isolated {
            netns: attempt.name.clone(),
            created: attempt.created,
            link: inside,
            elapsed: self.sys.now().saturating_duration_since(start),
        })
    }

    /// The record of this isolation, saved at once if the namespace is new: from then on the
    /// agent must know it as its own, even across a crash.
    fn record_attempt(
        &mut self,
        req: &IsolateArgs,
        attempt: &Attempt<S::Netns>,
    ) -> Result<Record, ExecError> {
        let previous = attempt.previous.as_ref();
        let record = Record {
            netns: attempt.name.clone(),
            connection_uuid: req.connection_uuid.clone(),
            connection_id: req.connection_id.clone(),
            owner: req.owner.clone(),
            never_default_v4: req.never_default_v4,
            never_default_v6: req.never_default_v6,
            created: attempt.created || previous.is_some_and(|r| r.created),
            persistent: req.persistent,
            leased: true,
            link: None,
            etc_dir_created: previous.is_some_and(|r| r.etc_dir_created),
            files: previous.map(|r| r.files.clone()).unwrap_or_default(),
        };
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
            free_name(&link.name, &self.sys.link_names(&attempt.netns)?)
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

    /// Writes resolv.conf and nsswitch.conf: a new file atomically, an existing one in place so
    /// that apps that see it through `ip netns exec`'s bind mount get the new content.
    fn write_dns_files(
        &mut self,
        record: &mut Record,
        plan: &IsolationPlan,
        undo: &mut Vec<Undo>,
    ) -> Result<(), ExecError> {
        if self.sys.dir_create(&self.paths.etc_netns, 0o755)? {
            info!("created {}", self.paths.etc_netns.display());
        }
        let dir = self.paths.etc_netns.join(record.netns.as_str());
        if self.sys.dir_create(&dir, 0o755)? {
            info!("created {}", dir.display());
            record.etc_dir_created = true;
            undo.push(Undo::DirRemove(dir.clone()));
        }
        let mut old = Vec::new();
        for file in DnsFile::ALL {
            let content = self.sys.file_read(&dir.join(file.name()))?;
            if record.file(file).is_none() {
                record.files.push(FileRecord {
                    file,
                    backup: content.clone(),
                });
            }
            old.push((file, content));
        }
        // The backups reach the disk before the files change, or a crash would lose them.
        if self.records.get(&record.netns) != Some(record) {
            self.save(record)?;
        }
        for (file, content) in old {
            let path = dir.join(file.name());
            let new = file.content(plan).as_bytes();
            match content {
                Some(content) => {
                    self.sys.file_rewrite(&path, new)?;
                    info!("rewrote {} in place", path.display());
                    undo.push(Undo::FileRestore(path, content));
                }
                None => {
                    self.sys.file_create(&path, new, 0o644)?;
                    info!("wrote {}", path.display());
                    undo.push(Undo::FileRemove(path));
                }
            }
        }
        Ok(())
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
        self.write_dns_files(&mut record, plan, &mut Vec::new())
    }

    fn save(&mut self, record: &Record) -> Result<(), SysError> {
        let path = self.paths.state.join(record.netns.as_str());
        self.sys.file_replace(&path, &record.encode(), 0o600)?;
        info!(
            "recorded namespace {} at {} (created {}, leased {})",
            record.netns,
            path.display(),
            record.created,
            record.leased
        );
        self.records.insert(record.netns.clone(), record.clone());
        Ok(())
    }

    /// Saves `record` as no longer leased: its namespace is the agent's, with no VPN in it.
    fn save_unleased(&mut self, mut record: Record) -> Result<(), SysError> {
        record.leased = false;
        record.link = None;
        self.save(&record)
    }

    fn forget(&mut self, netns: &NetnsName) -> Result<(), SysError> {
        let path = self.paths.state.join(netns.as_str());
        self.sys.file_remove(&path)?;
        info!("removed record {}", path.display());
        self.records.remove(netns);
        Ok(())
    }
}

/// Reads one record, rewriting a version 1 record in the current format. A record that cannot
/// be read is skipped: its namespace then looks foreign, which only makes the agent more careful
/// with it, as it never deletes a foreign namespace.
fn load_record<S: Sys>(
    sys: &mut S,
    path: &Path,
    netns: &NetnsName,
) -> Result<Option<Record>, SysError> {
    let Some(text) = sys.file_read(path)? else {
        return Ok(None);
    };
    let (record, format) = match Record::decode(netns, &text) {
        Ok(decoded) => decoded,
        Err(e) => {
            error!("ignoring record {}: {}", path.display(), Chain(&e));
            return Ok(None);
        }
    };
    info!(
        "loaded record of namespace {netns}: connection {} ({}), created {}, leased {}",
        record.connection_id, record.connection_uuid, record.created, record.leased
    );
    if format == Format::V1 {
        // The old file still says the same, so a failed rewrite loses nothing.
        match sys.file_replace(path, &record.encode(), 0o600) {
            Ok(()) => info!("rewrote record {} in the current format", path.display()),
            Err(e) => warn!("could not rewrite record {}: {}", path.display(), Chain(&e)),
        }
    }
    Ok(Some(record))
}

fn check_lease(
    netns: &NetnsName,
    previous: Option<&Record>,
    req: &IsolateArgs,
) -> Result<(), ExecError> {
    let Some(r) = previous else {
        return Ok(());
    };
    if r.leased {
        return Err(ExecError::InUse {
            netns: netns.clone(),
            connection_id: r.connection_id.clone(),
            connection_uuid: r.connection_uuid.clone(),
        });
    }
    if r.created && r.connection_uuid != req.connection_uuid {
        return Err(ExecError::OwnedByOther {
            netns: netns.clone(),
            owner_id: r.connection_id.clone(),
            owner_uuid: r.connection_uuid.clone(),
            connection_id: req.connection_id.clone(),
            connection_uuid: req.connection_uuid.clone(),
        });
    }
    Ok(())
}

fn check_deadline<S: Sys>(
    sys: &S,
    req: &IsolateArgs,
    start: Instant,
    step: &'static str,
) -> Result<(), ExecError> {
    let now = sys.now();
    if now < req.deadline {
        return Ok(());
    }
    Err(timeout(req, start, now, step))
}

fn timeout(req: &IsolateArgs, start: Instant, now: Instant, step: &'static str) -> ExecError {
    ExecError::Timeout {
        netns: req.plan.netns.clone(),
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
