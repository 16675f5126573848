//! Carries out an [`IsolationPlan`]: the namespace, the link, its configuration and the DNS files,
//! all or nothing, and takes them down again.
//!
//! Every check that needs no side effect comes first (leases, ownership, the link's kind, what
//! sits at `/run/netns/NAME`). Then each side effect pushes its undo step, and any failure, the
//! deadline included, runs the undo steps in reverse. Teardown goes on past a failed step and
//! reports every error.
//!
//! What the agent owns is kept in one record per namespace under [`Paths::state`], written
//! before the side effects it describes can be lost: right after a namespace is created, and
//! before a file is overwritten (with the old content as backup). A restarted agent reloads them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::errno::Errno;

use crate::agent::sys::{Link, NetnsConfig, Sys, SysError};
use crate::plan::settings::NetnsName;
use crate::plan::IsolationPlan;

const PING_GROUP_RANGE: &str = "net.ipv4.ping_group_range";
const RECORD_HEADER: &str = "nm-vpn-netns record 1";

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

/// A file under `/etc/netns/NAME` that the agent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DnsFile {
    ResolvConf,
    NsswitchConf,
}

impl DnsFile {
    pub const ALL: [DnsFile; 2] = [DnsFile::ResolvConf, DnsFile::NsswitchConf];

    pub fn name(self) -> &'static str {
        match self {
            DnsFile::ResolvConf => "resolv.conf",
            DnsFile::NsswitchConf => "nsswitch.conf",
        }
    }

    fn content(self, plan: &IsolationPlan) -> &str {
        match self {
            DnsFile::ResolvConf => &plan.resolv_conf,
            DnsFile::NsswitchConf => &plan.nsswitch_conf,
        }
    }
}

/// A file the agent wrote, and what was there before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub file: DnsFile,
    /// The content the agent replaced; `None`: the agent created the file.
    pub backup: Option<Vec<u8>>,
}

/// What the agent did to one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub netns: NetnsName,
    pub connection_uuid: String,
    pub connection_id: String,
    pub owner: String,
    /// The agent created the namespace, for `connection_uuid`.
    pub created: bool,
    pub persistent: bool,
    /// An isolation is active in the namespace.
    pub leased: bool,
    /// The link's name inside the namespace while leased.
    pub link: Option<String>,
    /// The agent created `/etc/netns/NAME`.
    pub etc_dir_created: bool,
    pub files: Vec<FileRecord>,
}

impl Record {
    fn file(&self, file: DnsFile) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.file == file)
    }

    fn encode(&self) -> Vec<u8> {
        fn line(out: &mut String, key: &str, value: &str) {
            out.push_str(key);
            out.push(' ');
            out.push_str(value);
            out.push('\n');
        }
        let flag = |b: bool| if b { "yes" } else { "no" };
        let mut out = format!("{RECORD_HEADER}\n");
        line(&mut out, "netns", self.netns.as_str());
        line(&mut out, "uuid", &escape(self.connection_uuid.as_bytes()));
        line(&mut out, "id", &escape(self.connection_id.as_bytes()));
        line(&mut out, "owner", &escape(self.owner.as_bytes()));
        line(&mut out, "created", flag(self.created));
        line(&mut out, "persistent", flag(self.persistent));
        line(&mut out, "leased", flag(self.leased));
        line(&mut out, "etc-dir-created", flag(self.etc_dir_created));
        if let Some(link) = &self.link {
            line(&mut out, "link", &escape(link.as_bytes()));
        }
        for f in &self.files {
            match &f.backup {
                None => line(&mut out, "file-created", f.file.name()),
                Some(backup) => line(
                    &mut out,
                    "file-replaced",
                    &format!("{} {}", f.file.name(), escape(backup)),
                ),
            }
        }
        out.into_bytes()
    }

    fn decode(netns: &NetnsName, text: &[u8]) -> Result<Record, String> {
        let text = std::str::from_utf8(text).map_err(|_| "it is not UTF-8".to_owned())?;
        let mut lines = text.lines();
        if lines.next() != Some(RECORD_HEADER) {
            return Err(format!("the first line is not {RECORD_HEADER:?}"));
        }
        let mut fields: BTreeMap<&str, String> = BTreeMap::new();
        let mut files = Vec::new();
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let text_of = |v: &str| {
                String::from_utf8(unescape(v)?).map_err(|_| format!("{key} is not UTF-8"))
            };
            match key {
                "netns" | "uuid" | "id" | "owner" | "created" | "persistent" | "leased"
                | "etc-dir-created" | "link" => {
                    if fields.insert(key, text_of(value)?).is_some() {
                        return Err(format!("{key} appears twice"));
                    }
                }
                "file-created" => files.push(FileRecord {
                    file: dns_file(value)?,
                    backup: None,
                }),
                "file-replaced" => {
                    let (name, backup) = value.split_once(' ').unwrap_or((value, ""));
                    files.push(FileRecord {
                        file: dns_file(name)?,
                        backup: Some(unescape(backup)?),
                    });
                }
                _ => return Err(format!("unknown line {line:?}")),
            }
        }
        let mut take = |key: &str| {
            fields
                .remove(key)
                .ok_or_else(|| format!("{key} is missing"))
        };
        let flag = |key: &str, v: String| match v.as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(format!("{key} is {v:?}, not yes or no")),
        };
        if take("netns")? != netns.as_str() {
            return Err("it names another namespace".to_owned());
        }
        Ok(Record {
            netns: netns.clone(),
            connection_uuid: take("uuid")?,
            connection_id: take("id")?,
            owner: take("owner")?,
            created: flag("created", take("created")?)?,
            persistent: flag("persistent", take("persistent")?)?,
            leased: flag("leased", take("leased")?)?,
            etc_dir_created: flag("etc-dir-created", take("etc-dir-created")?)?,
            link: take("link").ok(),
            files,
        })
    }
}

fn dns_file(name: &str) -> Result<DnsFile, String> {
    DnsFile::ALL
        .into_iter()
        .find(|f| f.name() == name)
        .ok_or_else(|| format!("unknown file {name:?}"))
}

/// Printable ASCII stays, except `\`; everything else becomes `\n`, `\t` or `\xHH`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b' '..=b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let hex = [bytes.next(), bytes.next()];
                let byte = match hex {
                    [Some(h), Some(l)] => std::str::from_utf8(&[h, l])
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 16).ok()),
                    _ => None,
                };
                out.push(byte.ok_or_else(|| format!("bad \\x escape in {text:?}"))?);
            }
            _ => return Err(format!("bad escape in {text:?}")),
        }
    }
    Ok(out)
}

/// Every way an isolation can fail. Each message names the namespace, link or path involved.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(
        "link {name} (ifindex {ifindex}) does not exist in the agent's namespace; openvpn may \
         have exited"
    )]
    LinkMissing { ifindex: u32, name: String },
    #[error(
        "ifindex {ifindex} is named {found}, not {expected} as NetworkManager reported; refusing \
         to move another link"
    )]
    LinkRenamed {
        ifindex: u32,
        expected: String,
        found: String,
    },
    #[error(
        "link {link} is an OpenVPN data channel offload device (kind {kind}), not a tun: openvpn \
         drives it through the kernel from its own namespace, so moving it would break the VPN. \
         Make openvpn use a tun for this connection: run it with --disable-dco, or keep the DCO \
         kernel module from loading (blacklist ovpn-dco-v2 and ovpn in /etc/modprobe.d, then \
         unload them)"
    )]
    Dco { link: String, kind: String },
    #[error("link {link} is {kind}, not a tun; only an OpenVPN tun can be isolated")]
    NotTun { link: String, kind: String },
    #[error(
        "namespace {netns} exists but nm-vpn-netns did not create it; only a system connection \
         (one without connection.permissions) may use such a namespace, and {connection_id} has \
         permissions"
    )]
    ForeignNetns {
        netns: NetnsName,
        connection_id: String,
    },
    #[error(
        "namespace {netns} belongs to connection {owner_id} ({owner_uuid}), for which \
         nm-vpn-netns created it; {connection_id} ({connection_uuid}) maps to the same name. Two \
         connection ids can map to one namespace name: give one of them netns-name=uuid or a \
         netns-name of its own"
    )]
    OwnedByOther {
        netns: NetnsName,
        owner_id: String,
        owner_uuid: String,
        connection_id: String,
        connection_uuid: String,
    },
    #[error(
        "namespace {netns} already has an active VPN ({connection_id}, {connection_uuid}); one \
         VPN per namespace"
    )]
    InUse {
        netns: NetnsName,
        connection_id: String,
        connection_uuid: String,
    },
    #[error(
        "isolating in namespace {netns} ran past netns-timeout: {} ms had passed before {step}; \
         it was rolled back",
        elapsed.as_millis()
    )]
    Timeout {
        netns: NetnsName,
        elapsed: Duration,
        step: &'static str,
    },
    #[error("no VPN is isolated in namespace {netns}")]
    NotIsolated { netns: NetnsName },
    #[error("namespace {netns} has disappeared from {}", path.display())]
    NetnsGone { netns: NetnsName, path: PathBuf },
    #[error("a plan for namespace {plan} cannot be applied to namespace {netns}")]
    PlanMismatch { netns: NetnsName, plan: NetnsName },
    #[error("{error}; rolling back also failed, so something is left: {rollback}")]
    Incomplete {
        error: Box<ExecError>,
        rollback: TeardownError,
    },
}

/// What a teardown or rollback could not undo: every error, not only the first.
#[derive(Debug, thiserror::Error)]
pub struct TeardownError {
    pub netns: NetnsName,
    pub errors: Vec<SysError>,
}

impl fmt::Display for TeardownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tearing down namespace {}: ", self.netns)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
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
            let Some(text) = sys.file_read(&path)? else {
                continue;
            };
            // A record that cannot be read makes its namespace look foreign, which only makes
            // the agent more careful with it: it never deletes a foreign namespace.
            match Record::decode(&netns, &text) {
                Ok(record) => {
                    info!(
                        "loaded record of namespace {netns}: connection {} ({}), created {}, \
                         leased {}",
                        record.connection_id, record.connection_uuid, record.created, record.leased
                    );
                    records.insert(netns, record);
                }
                Err(reason) => error!("ignoring record {}: {reason}", path.display()),
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
        let plan = &req.plan;
        let netns = &plan.netns;
        let previous = attempt.previous.as_ref();
        let mut record = Record {
            netns: netns.clone(),
            connection_uuid: req.connection_uuid.clone(),
            connection_id: req.connection_id.clone(),
            owner: req.owner.clone(),
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

        check_deadline(&self.sys, req, start, "moving the link")?;
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
            "moved link {} (ifindex {}) into namespace {netns} as {inside}",
            link.name, link.ifindex
        );
        attempt.undo.push(Undo::LinkBack {
            link: inside.clone(),
            original: link.clone(),
        });

        check_deadline(&self.sys, req, start, "configuring the namespace")?;
        let config = NetnsConfig {
            link: &inside,
            mtu: plan.link.mtu,
            ipv4: plan.ipv4.as_ref(),
            ipv6: plan.ipv6.as_ref(),
            ping_group_range,
            reapply: false,
        };
        self.sys.netns_configure(&attempt.netns, &config)?;
        log_configured(netns, &config);

        check_deadline(&self.sys, req, start, "writing the DNS files")?;
        self.write_dns_files(&mut record, plan, &mut attempt.undo)?;

        check_deadline(&self.sys, req, start, "recording the isolation")?;
        record.link = Some(inside.clone());
        self.save(&record)?;
        Ok(Isolated {
            netns: netns.clone(),
            created: attempt.created,
            link: inside,
            elapsed: self.sys.now().saturating_duration_since(start),
        })
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

    fn roll_back(&mut self, attempt: Attempt<S::Netns>, error: ExecError) -> ExecError {
        let netns = attempt.name.clone();
        warn!("isolating in namespace {netns} failed: {error}; rolling back");
        let mut errors = Vec::new();
        for step in attempt.undo.iter().rev() {
            match self.undo(step, &attempt) {
                Ok(done) => info!("rolled back: {done}"),
                Err(e) => {
                    error!("rolling back: {e}");
                    errors.push(e);
                }
            }
        }
        let current = self.records.get(&netns).cloned();
        if current != attempt.previous {
            let restored = match (&attempt.previous, current) {
                (Some(previous), _) if errors.is_empty() => self.save(previous),
                (None, _) if errors.is_empty() => self.forget(&netns),
                // What was not undone stays on record as the agent's, with no lease.
                (_, Some(mut current)) => {
                    current.leased = false;
                    current.link = None;
                    self.save(&current)
                }
                (_, None) => Ok(()),
            };
            if let Err(e) = restored {
                error!("rolling back: {e}");
                errors.push(e);
            }
        }
        if errors.is_empty() {
            error
        } else {
            ExecError::Incomplete {
                error: Box::new(error),
                rollback: TeardownError { netns, errors },
            }
        }
    }

    fn undo(&mut self, step: &Undo, attempt: &Attempt<S::Netns>) -> Result<String, SysError> {
        match step {
            Undo::NetnsDel => {
                self.sys.netns_del(&attempt.path)?;
                Ok(format!("deleted namespace {}", attempt.path.display()))
            }
            Undo::LinkBack { link, original } => {
                self.sys
                    .link_set_netns_back(&attempt.netns, link, original)?;
                Ok(format!(
                    "moved link {link} back out of {} as {}",
                    attempt.path.display(),
                    original.name
                ))
            }
            Undo::DirRemove(path) => {
                self.sys.dir_remove(path)?;
                Ok(format!("removed {}", path.display()))
            }
            Undo::FileRemove(path) => {
                self.sys.file_remove(path)?;
                Ok(format!("removed {}", path.display()))
            }
            Undo::FileRestore(path, content) => {
                self.sys.file_rewrite(path, content)?;
                Ok(format!("restored {}", path.display()))
            }
        }
    }

    /// Ends the isolation in `netns`, going on past every failed step.
    ///
    /// A persistent namespace stays, with its DNS files. Otherwise a namespace the agent created
    /// is deleted; in one it did not create, the files it wrote are removed and the ones it
    /// replaced restored. A namespace with no record has nothing to release.
    pub fn release(&mut self, netns: &NetnsName) -> Result<(), TeardownError> {
        let Some(mut record) = self.records.get(netns).cloned() else {
            info!("namespace {netns} has no isolation to release");
            return Ok(());
        };
        let mut errors = Vec::new();
        if record.persistent {
            record.leased = false;
            record.link = None;
            if let Err(e) = self.save(&record) {
                errors.push(e);
            }
            info!("released namespace {netns}; kept it and its DNS files (netns-persistent)");
        } else {
            if record.created {
                let path = self.paths.run_netns.join(netns.as_str());
                match self.sys.netns_del(&path) {
                    Ok(()) => info!("deleted namespace {netns} at {}", path.display()),
                    Err(e) => errors.push(e),
                }
            }
            let dir = self.paths.etc_netns.join(netns.as_str());
            for f in &record.files {
                let path = dir.join(f.file.name());
                let done = match &f.backup {
                    None => self.sys.file_remove(&path).map(|()| "removed"),
                    Some(backup) => self.restore(&path, backup).map(|()| "restored"),
                };
                match done {
                    Ok(done) => info!("{done} {}", path.display()),
                    Err(e) => errors.push(e),
                }
            }
            if record.etc_dir_created {
                match self.sys.dir_remove(&dir) {
                    Ok(()) => info!("removed {}", dir.display()),
                    Err(e) if e.raw_os_error() == Some(Errno::ENOTEMPTY as i32) => {
                        warn!(
                            "kept {}: it holds files nm-vpn-netns did not write",
                            dir.display()
                        )
                    }
                    Err(e) => errors.push(e),
                }
            }
            // A record that outlives a failed teardown keeps what is left known as the agent's.
            let recorded = if errors.is_empty() {
                self.forget(netns)
            } else {
                record.leased = false;
                record.link = None;
                self.save(&record)
            };
            if let Err(e) = recorded {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            for e in &errors {
                error!("releasing namespace {netns}: {e}");
            }
            Err(TeardownError {
                netns: netns.clone(),
                errors,
            })
        }
    }

    /// Puts back a file's old content, in place if it is still there.
    fn restore(&mut self, path: &Path, content: &[u8]) -> Result<(), SysError> {
        match self.sys.file_rewrite(path, content) {
            Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => {
                self.sys.file_create(path, content, 0o644)
            }
            other => other,
        }
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
        let config = NetnsConfig {
            link: &link,
            mtu: plan.link.mtu,
            ipv4: plan.ipv4.as_ref(),
            ipv6: plan.ipv6.as_ref(),
            ping_group_range: None,
            reapply: true,
        };
        self.sys.netns_configure(&handle, &config)?;
        log_configured(netns, &config);
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

    fn forget(&mut self, netns: &NetnsName) -> Result<(), SysError> {
        let path = self.paths.state.join(netns.as_str());
        self.sys.file_remove(&path)?;
        info!("removed record {}", path.display());
        self.records.remove(netns);
        Ok(())
    }
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
    Err(ExecError::Timeout {
        netns: req.plan.netns.clone(),
        elapsed: now.saturating_duration_since(start),
        step,
    })
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

fn log_configured(netns: &NetnsName, config: &NetnsConfig<'_>) {
    let family = |plan: Option<(String, u8, usize, bool)>| match plan {
        None => "none".to_owned(),
        Some((address, prefix, routes, default)) => format!(
            "{address}/{prefix}, {routes} routes{}",
            if default { " and a default route" } else { "" }
        ),
    };
    info!(
        "configured namespace {netns}: lo up, {} up with mtu {:?}; IPv4 {}; IPv6 {}{}",
        config.link,
        config.mtu,
        family(config.ipv4.map(|p| (
            p.address.to_string(),
            p.prefix,
            p.routes.len(),
            p.default_route.is_some()
        ))),
        family(config.ipv6.map(|p| (
            p.address.to_string(),
            p.prefix,
            p.routes.len(),
            p.default_route.is_some()
        ))),
        config
            .ping_group_range
            .map_or(String::new(), |r| format!("; {PING_GROUP_RANGE} {r}"))
    );
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::agent::sys::{Call, FakeNetnsEntry, RecordingSys, World};
    use crate::plan::{DefaultRoute, FamilyPlan, LinkPlan, Route};

    const UUID: &str = "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b";
    const OTHER_UUID: &str = "1b2c3d4e-0000-4000-8000-000000000001";
    const NS: &str = "/run/netns/work";
    const DIR: &str = "/etc/netns/work";
    const RESOLV: &str = "/etc/netns/work/resolv.conf";
    const NSSWITCH: &str = "/etc/netns/work/nsswitch.conf";
    const RECORD: &str = "/run/nm-vpn-netns/work";

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn work() -> NetnsName {
        "work".parse().unwrap()
    }

    fn plan() -> IsolationPlan {
        IsolationPlan {
            netns: work(),
            link: LinkPlan {
                name: "tun0".parse().unwrap(),
                mtu: Some(1500),
            },
            ipv4: Some(FamilyPlan {
                address: Ipv4Addr::new(198, 19, 0, 2),
                prefix: 24,
                peer: None,
                routes: vec![Route {
                    dest: Ipv4Addr::new(198, 18, 64, 0),
                    prefix: 18,
                    via: Some(Ipv4Addr::new(198, 19, 0, 1)),
                    metric: 0,
                }],
                default_route: Some(DefaultRoute {
                    via: Some(Ipv4Addr::new(198, 19, 0, 1)),
                }),
                preserve_routes: false,
            }),
            ipv6: None,
            resolv_conf: "nameserver 198.19.0.1\nsearch vpn.test\n".to_owned(),
            nsswitch_conf: "hosts: files dns\n".to_owned(),
        }
    }

    fn request() -> IsolateArgs {
        IsolateArgs {
            plan: plan(),
            connection_uuid: UUID.to_owned(),
            connection_id: "work".to_owned(),
            persistent: false,
            system_connection: true,
            tun_ifindex: 7,
            owner: ":1.42".to_owned(),
            deadline: Instant::now() + Duration::from_secs(3600),
        }
    }

    fn other_request() -> IsolateArgs {
        IsolateArgs {
            connection_uuid: OTHER_UUID.to_owned(),
            connection_id: "work!".to_owned(),
            tun_ifindex: 8,
            owner: ":1.43".to_owned(),
            plan: IsolationPlan {
                link: LinkPlan {
                    name: "tun1".parse().unwrap(),
                    mtu: None,
                },
                ..plan()
            },
            ..request()
        }
    }

    fn sys_with(kind: &str) -> RecordingSys {
        let mut sys = RecordingSys::default();
        sys.add_link(7, "tun0", Some(kind), None);
        sys.add_link(8, "tun1", Some("tun"), None);
        sys
    }

    fn executor_with(sys: RecordingSys) -> Executor<RecordingSys> {
        let mut executor = Executor::new(sys, Paths::default()).unwrap();
        executor.sys.calls.clear();
        executor
    }

    fn executor() -> Executor<RecordingSys> {
        executor_with(sys_with("tun"))
    }

    fn world(executor: &Executor<RecordingSys>) -> World {
        executor.sys.world.clone()
    }

    fn calls(executor: &mut Executor<RecordingSys>) -> Vec<Call> {
        std::mem::take(&mut executor.sys.calls)
    }

    fn content(executor: &Executor<RecordingSys>, path: &str) -> Option<String> {
        executor
            .sys
            .world
            .files
            .get(&p(path))
            .map(|f| String::from_utf8(f.content.clone()).unwrap())
    }

    fn inode(executor: &Executor<RecordingSys>, path: &str) -> u64 {
        executor.sys.world.files[&p(path)].inode
    }

    /// A namespace that `ip netns add` made, with a resolv.conf of its own.
    fn foreign(executor: &mut Executor<RecordingSys>) {
        executor.sys.add_netns(NS);
        executor.sys.world.dirs.insert(p("/etc/netns"));
        executor.sys.world.dirs.insert(p(DIR));
        executor.sys.add_file(RESOLV, "nameserver 192.0.2.53\n");
    }

    fn record(executor: &Executor<RecordingSys>) -> Option<&Record> {
        executor.records.get(&work())
    }

    #[test]
    fn happy_path_calls_in_order() {
        let mut ex = executor();
        let isolation = ex.isolate(&request()).unwrap();
        assert_eq!(
            (isolation.netns, isolation.created, isolation.link.as_str()),
            (work(), true, "tun0")
        );
        assert_eq!(
            calls(&mut ex),
            [
                Call::LinkGet(7),
                Call::NetnsOpen(p(NS)),
                Call::SysctlRead(PING_GROUP_RANGE.to_owned()),
                Call::NetnsAdd(p(NS)),
                Call::FileReplace(p(RECORD)),
                Call::LinkSetNetns {
                    ifindex: 7,
                    netns: p(NS),
                    name: None
                },
                Call::NetnsConfigure {
                    netns: p(NS),
                    link: "tun0".to_owned(),
                    reapply: false
                },
                Call::DirCreate(p("/etc/netns")),
                Call::DirCreate(p(DIR)),
                Call::FileRead(p(RESOLV)),
                Call::FileRead(p(NSSWITCH)),
                Call::FileReplace(p(RECORD)),
                Call::FileCreate(p(RESOLV)),
                Call::FileCreate(p(NSSWITCH)),
                Call::FileReplace(p(RECORD)),
            ]
        );
        let tun = &ex.sys.world.links[&7];
        assert_eq!(tun.netns, Some(p(NS)));
        let configured = tun.configured.as_deref().unwrap();
        assert!(
            configured.contains("mtu Some(1500)")
                && configured.contains("198.19.0.2")
                && configured.contains("ping_group_range Some(\"0 2147483647\")"),
            "{configured}"
        );
        assert_eq!(
            content(&ex, RESOLV).unwrap(),
            "nameserver 198.19.0.1\nsearch vpn.test\n"
        );
        assert_eq!(content(&ex, NSSWITCH).unwrap(), "hosts: files dns\n");
        let r = record(&ex).unwrap();
        assert!(r.created && r.leased && r.etc_dir_created && !r.persistent);
        assert_eq!(r.link.as_deref(), Some("tun0"));
        assert_eq!(
            r.files,
            [
                FileRecord {
                    file: DnsFile::ResolvConf,
                    backup: None
                },
                FileRecord {
                    file: DnsFile::NsswitchConf,
                    backup: None
                }
            ]
        );
        assert_eq!(content(&ex, RECORD).unwrap().as_bytes(), r.encode());
    }

    /// Nothing of the attempt may remain: the world is as before, apart from the directories
    /// that hold every namespace's files, and there is no record.
    fn assert_nothing_left(ex: &Executor<RecordingSys>, before: &World, context: &str) {
        let mut after = world(ex);
        for shared in ["/run/netns", "/etc/netns"] {
            if !before.dirs.contains(&p(shared)) {
                after.dirs.remove(&p(shared));
            }
        }
        assert_eq!(&after, before, "{context}");
        assert!(record(ex).is_none(), "{context}");
    }

    #[test]
    fn rollback_after_a_failure_at_each_step() {
        let mut ex = executor();
        ex.isolate(&request()).unwrap();
        let steps = calls(&mut ex).len();
        for step in 0..steps {
            let mut ex = executor();
            let before = world(&ex);
            ex.sys.fail_at(step);
            let err = ex.isolate(&request()).unwrap_err();
            let context = format!("failure at call {step}: {err}");
            assert!(matches!(err, ExecError::Sys(_)), "{context}");
            // After the failure only undo steps run.
            let undo_only = ex.sys.calls[step + 1..].iter().all(|c| {
                matches!(
                    c,
                    Call::NetnsDel(_)
                        | Call::LinkSetNetnsBack { .. }
                        | Call::DirRemove(_)
                        | Call::FileRemove(_)
                )
            });
            assert!(undo_only, "{context}: {:?}", &ex.sys.calls[step + 1..]);
            assert_nothing_left(&ex, &before, &context);
            assert!(ex.sys.world.links[&7].netns.is_none(), "{context}");
        }
    }

    #[test]
    fn rollback_undoes_in_reverse_order() {
        let mut ex = executor();
        ex.sys
            .fail_when(|c| matches!(c, Call::FileCreate(f) if f.ends_with("nsswitch.conf")));
        ex.isolate(&request()).unwrap_err();
        let calls = calls(&mut ex);
        let failed = calls
            .iter()
            .position(|c| *c == Call::FileCreate(p(NSSWITCH)))
            .unwrap();
        assert_eq!(
            calls[failed + 1..],
            [
                Call::FileRemove(p(RESOLV)),
                Call::DirRemove(p(DIR)),
                Call::LinkSetNetnsBack {
                    netns: p(NS),
                    link: "tun0".to_owned(),
                    name: "tun0".to_owned()
                },
                Call::NetnsDel(p(NS)),
                Call::FileRemove(p(RECORD)),
            ]
        );
    }

    #[test]
    fn link_comes_back_with_its_name_mtu_and_state() {
        let mut ex = executor();
        foreign(&mut ex);
        ex.sys.add_link(3, "tun0", Some("tun"), Some(NS));
        {
            let tun = &mut ex.sys.world.links.get_mut(&7).unwrap().link;
            tun.up = true;
            tun.mtu = 1400;
        }
        let before = world(&ex);
        ex.sys
            .fail_when(|c| matches!(c, Call::NetnsConfigure { .. }));
        ex.isolate(&request()).unwrap_err();
        assert!(calls(&mut ex).contains(&Call::LinkSetNetnsBack {
            netns: p(NS),
            link: "vpn0".to_owned(),
            name: "tun0".to_owned()
        }));
        assert_nothing_left(&ex, &before, "configure failed");
    }

    #[test]
    fn deadline_expiry_rolls_back() {
        let mut ex = executor();
        let before = world(&ex);
        let mut req = request();
        req.deadline = ex.sys.now() + Duration::from_millis(2000);
        ex.sys.slow_when(
            |c| matches!(c, Call::LinkSetNetns { .. }),
            Duration::from_millis(2500),
        );
        let err = ex.isolate(&req).unwrap_err();
        let ExecError::Timeout { elapsed, step, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            (*elapsed, *step),
            (Duration::from_millis(2500), "configuring the namespace")
        );
        assert!(
            err.to_string().contains("ran past netns-timeout: 2500 ms"),
            "{err}"
        );
        let calls = calls(&mut ex);
        assert!(!calls
            .iter()
            .any(|c| matches!(c, Call::NetnsConfigure { .. })));
        assert!(calls.contains(&Call::LinkSetNetnsBack {
            netns: p(NS),
            link: "tun0".to_owned(),
            name: "tun0".to_owned()
        }));
        assert_nothing_left(&ex, &before, "deadline");
    }

    #[test]
    fn deadline_already_past_touches_nothing() {
        let mut ex = executor();
        let mut req = request();
        req.deadline = ex.sys.now();
        let err = ex.isolate(&req).unwrap_err();
        assert!(
            matches!(
                err,
                ExecError::Timeout {
                    step: "creating the namespace",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!calls(&mut ex)
            .iter()
            .any(|c| matches!(c, Call::NetnsAdd(_))));
    }

    fn refused_before_side_effects(
        ex: &mut Executor<RecordingSys>,
        req: &IsolateArgs,
    ) -> ExecError {
        calls(ex);
        let before = world(ex);
        let err = ex.isolate(req).unwrap_err();
        assert_eq!(world(ex), before, "{err}");
        assert!(
            calls(ex).iter().all(|c| matches!(
                c,
                Call::LinkGet(_) | Call::NetnsOpen(_) | Call::SysctlRead(_)
            )),
            "{err}"
        );
        err
    }

    #[test]
    fn dco_is_refused_before_any_side_effect() {
        for kind in ["ovpn-dco", "ovpn"] {
            let mut ex = executor_with(sys_with(kind));
            let err = refused_before_side_effects(&mut ex, &request());
            assert!(
                matches!(&err, ExecError::Dco { kind: k, .. } if k == kind),
                "{err}"
            );
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "link tun0 is an OpenVPN data channel offload device (kind {kind})"
                )) && msg.contains("--disable-dco"),
                "{msg}"
            );
        }
    }

    #[test]
    fn other_link_kinds_are_refused() {
        let mut ex = executor_with(sys_with("veth"));
        let err = refused_before_side_effects(&mut ex, &request());
        assert_eq!(
            err.to_string(),
            "link tun0 is a veth device, not a tun; only an OpenVPN tun can be isolated"
        );
        let mut sys = RecordingSys::default();
        sys.add_link(7, "tun0", None, None);
        let mut ex = executor_with(sys);
        let err = refused_before_side_effects(&mut ex, &request());
        assert!(matches!(err, ExecError::NotTun { .. }), "{err}");
    }

    #[test]
    fn missing_or_renamed_link_is_refused() {
        let mut ex = executor();
        let mut req = request();
        req.tun_ifindex = 99;
        let err = refused_before_side_effects(&mut ex, &req);
        assert!(
            matches!(err, ExecError::LinkMissing { ifindex: 99, .. }),
            "{err}"
        );
        req.tun_ifindex = 8;
        let err = refused_before_side_effects(&mut ex, &req);
        assert_eq!(
            err.to_string(),
            "ifindex 8 is named tun1, not tun0 as NetworkManager reported; refusing to move \
             another link"
        );
    }

    #[test]
    fn foreign_namespace_is_refused_to_a_user_connection() {
        let mut ex = executor();
        foreign(&mut ex);
        let mut req = request();
        req.system_connection = false;
        let err = refused_before_side_effects(&mut ex, &req);
        assert!(matches!(err, ExecError::ForeignNetns { .. }), "{err}");
        assert!(
            err.to_string().contains("only a system connection"),
            "{err}"
        );
    }

    #[test]
    fn something_else_at_the_namespace_path_is_refused() {
        let mut ex = executor();
        ex.sys.world.dirs.insert(p("/run/netns"));
        ex.sys
            .world
            .netns
            .insert(p(NS), FakeNetnsEntry::RegularFile);
        let err = refused_before_side_effects(&mut ex, &request());
        assert_eq!(
            err.to_string(),
            "/run/netns/work: is a regular file, not a network namespace; refusing to use it (if \
             it is a leftover, remove it)"
        );
    }

    #[test]
    fn a_namespace_created_for_one_uuid_is_refused_to_another() {
        let mut ex = executor();
        let mut req = request();
        req.persistent = true;
        ex.isolate(&req).unwrap();
        ex.release(&work()).unwrap();
        let err = refused_before_side_effects(&mut ex, &other_request());
        assert!(matches!(err, ExecError::OwnedByOther { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(UUID) && msg.contains(OTHER_UUID) && msg.contains("Two connection ids"),
            "{msg}"
        );
    }

    #[test]
    fn one_vpn_per_namespace() {
        let mut ex = executor();
        ex.isolate(&request()).unwrap();
        for req in [other_request(), request()] {
            let err = refused_before_side_effects(&mut ex, &req);
            assert_eq!(
                err.to_string(),
                format!(
                    "namespace work already has an active VPN (work, {UUID}); one VPN per \
                     namespace"
                )
            );
        }
    }

    #[test]
    fn release_deletes_what_it_created() {
        let mut ex = executor();
        let before = world(&ex);
        ex.isolate(&request()).unwrap();
        calls(&mut ex);
        ex.release(&work()).unwrap();
        assert_eq!(
            calls(&mut ex),
            [
                Call::NetnsDel(p(NS)),
                Call::FileRemove(p(RESOLV)),
                Call::FileRemove(p(NSSWITCH)),
                Call::DirRemove(p(DIR)),
                Call::FileRemove(p(RECORD)),
            ]
        );
        // The kernel destroyed the tun with its namespace.
        let mut expected = before;
        expected.links.remove(&7);
        assert_nothing_left(&ex, &expected, "release");
        // Releasing again has nothing to do.
        ex.release(&work()).unwrap();
        assert!(calls(&mut ex).is_empty());
    }

    #[test]
    fn release_keeps_a_persistent_namespace_for_the_next_connect() {
        let mut ex = executor();
        let mut req = request();
        req.persistent = true;
        ex.isolate(&req).unwrap();
        let resolv_inode = inode(&ex, RESOLV);
        calls(&mut ex);
        ex.release(&work()).unwrap();
        assert_eq!(calls(&mut ex), [Call::FileReplace(p(RECORD))]);
        assert!(ex.sys.world.netns.contains_key(&p(NS)));
        assert!(content(&ex, RESOLV).is_some() && content(&ex, NSSWITCH).is_some());
        let r = record(&ex).unwrap();
        assert!(r.created && r.persistent && !r.leased && r.link.is_none());

        // The next connect reuses it: no new namespace, the files rewritten in place, and the
        // files still recorded as the agent's own rather than as backups.
        ex.sys.world.links.remove(&7);
        ex.sys.add_link(7, "tun0", Some("tun"), None);
        req.plan.resolv_conf = "nameserver 198.19.0.53\n".to_owned();
        let isolation = ex.isolate(&req).unwrap();
        assert!(!isolation.created);
        let calls = calls(&mut ex);
        assert!(!calls.iter().any(|c| matches!(c, Call::NetnsAdd(_))));
        assert!(calls.contains(&Call::FileRewrite(p(RESOLV))));
        assert!(calls.contains(&Call::SysctlRead(PING_GROUP_RANGE.to_owned())));
        assert_eq!(inode(&ex, RESOLV), resolv_inode);
        assert_eq!(content(&ex, RESOLV).unwrap(), "nameserver 198.19.0.53\n");
        assert!(record(&ex)
            .unwrap()
            .files
            .iter()
            .all(|f| f.backup.is_none()));

        // Turning persistence off lets the next release delete it all.
        ex.release(&work()).unwrap();
        ex.sys.world.links.remove(&7);
        ex.sys.add_link(7, "tun0", Some("tun"), None);
        ex.isolate(&request()).unwrap();
        ex.release(&work()).unwrap();
        assert!(!ex.sys.world.netns.contains_key(&p(NS)));
        assert!(!ex.sys.world.dirs.contains(&p(DIR)));
        assert!(record(&ex).is_none());
    }

    #[test]
    fn foreign_namespace_keeps_everything_but_the_files_it_was_given() {
        let mut ex = executor();
        foreign(&mut ex);
        ex.sys.add_link(3, "tun0", Some("tun"), Some(NS));
        let before = world(&ex);
        let resolv_inode = inode(&ex, RESOLV);
        let isolation = ex.isolate(&request()).unwrap();
        assert_eq!(
            (isolation.created, isolation.link.as_str()),
            (false, "vpn0")
        );
        let calls_made = calls(&mut ex);
        assert!(calls_made.contains(&Call::LinkSetNetns {
            ifindex: 7,
            netns: p(NS),
            name: Some("vpn0".to_owned())
        }));
        assert!(!calls_made.contains(&Call::SysctlRead(PING_GROUP_RANGE.to_owned())));
        assert!(calls_made.contains(&Call::FileRewrite(p(RESOLV))));
        assert!(calls_made.contains(&Call::FileCreate(p(NSSWITCH))));
        assert_eq!(inode(&ex, RESOLV), resolv_inode);
        assert_eq!(
            record(&ex)
                .unwrap()
                .file(DnsFile::ResolvConf)
                .unwrap()
                .backup,
            Some(b"nameserver 192.0.2.53\n".to_vec())
        );

        ex.release(&work()).unwrap();
        let calls_made = calls(&mut ex);
        assert!(!calls_made
            .iter()
            .any(|c| matches!(c, Call::NetnsDel(_) | Call::DirRemove(_))));
        assert_eq!(content(&ex, RESOLV).unwrap(), "nameserver 192.0.2.53\n");
        assert_eq!(inode(&ex, RESOLV), resolv_inode);
        // The tun stays behind in the namespace until openvpn exits; everything else is as it
        // was.
        let mut after = world(&ex);
        after.links.remove(&7);
        let mut expected = before;
        expected.links.remove(&7);
        assert_eq!(after, expected);
        assert!(record(&ex).is_none());
    }

    #[test]
    fn teardown_collects_every_error() {
        let mut ex = executor();
        ex.isolate(&request()).unwrap();
        ex.sys.fail_when(|c| {
            matches!(c, Call::NetnsDel(_))
                || matches!(c, Call::FileRemove(f) if f.starts_with("/etc"))
        });
        let err = ex.release(&work()).unwrap_err();
        assert_eq!(err.netns, work());
        assert_eq!(err.errors.len(), 3, "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("tearing down namespace work: injected failure of NetnsDel"),
            "{msg}"
        );
        assert!(
            msg.contains("resolv.conf") && msg.contains("nsswitch.conf"),
            "{msg}"
        );
        // What is left stays the agent's, unleased, so that a later release can finish.
        let r = record(&ex).unwrap();
        assert!(r.created && !r.leased);
        ex.sys.heal();
        ex.release(&work()).unwrap();
        assert!(record(&ex).is_none() && !ex.sys.world.netns.contains_key(&p(NS)));
    }

    #[test]
    fn a_failed_rollback_says_what_is_left() {
        let mut ex = executor();
        ex.sys.fail_when(|c| {
            matches!(
                c,
                Call::NetnsConfigure { .. } | Call::LinkSetNetnsBack { .. }
            )
        });
        let err = ex.isolate(&request()).unwrap_err();
        let ExecError::Incomplete { error, rollback } = &err else {
            panic!("{err}");
        };
        assert!(matches!(**error, ExecError::Sys(_)));
        assert_eq!(rollback.errors.len(), 1);
        assert!(
            err.to_string().contains("rolling back also failed"),
            "{err}"
        );
        let r = record(&ex).unwrap();
        assert!(r.created && !r.leased);
    }

    #[test]
    fn records_survive_a_restart() {
        let mut ex = executor();
        let mut req = request();
        req.connection_id = "Work VPN\n\\ \u{e9}".to_owned();
        ex.isolate(&req).unwrap();
        let world = world(&ex);
        let r = record(&ex).unwrap().clone();

        let mut ex = Executor::new(RecordingSys::new(world), Paths::default()).unwrap();
        assert_eq!(ex.records().collect::<Vec<_>>(), [&r]);
        ex.sys.add_link(9, "tun9", Some("tun"), None);
        let mut again = other_request();
        again.tun_ifindex = 9;
        again.plan.link.name = "tun9".parse().unwrap();
        assert!(matches!(ex.isolate(&again), Err(ExecError::InUse { .. })));
        ex.release(&work()).unwrap();
        assert!(!ex.sys.world.netns.contains_key(&p(NS)));
        assert!(ex.records().next().is_none());
    }

    #[test]
    fn unreadable_records_are_skipped() {
        let mut sys = sys_with("tun");
        sys.world.dirs.insert(p("/run/nm-vpn-netns"));
        sys.add_file("/run/nm-vpn-netns/work", "garbage\n");
        sys.add_file("/run/nm-vpn-netns/.work.nm-vpn-netns.tmp", "half");
        sys.add_file("/run/nm-vpn-netns/not a name", "x");
        let ex = Executor::new(sys, Paths::default()).unwrap();
        assert!(ex.records().next().is_none());
    }

    #[test]
    fn reapply_rewrites_in_place() {
        let mut ex = executor();
        let mut req = request();
        req.plan.link.name = "tun0".parse().unwrap();
        ex.isolate(&req).unwrap();
        let resolv_inode = inode(&ex, RESOLV);
        calls(&mut ex);
        let mut new_plan = plan();
        new_plan.resolv_conf = "nameserver 198.19.0.99\n".to_owned();
        ex.reapply(&work(), &new_plan).unwrap();
        assert_eq!(
            calls(&mut ex),
            [
                Call::NetnsOpen(p(NS)),
                Call::NetnsConfigure {
                    netns: p(NS),
                    link: "tun0".to_owned(),
                    reapply: true
                },
                Call::DirCreate(p("/etc/netns")),
                Call::DirCreate(p(DIR)),
                Call::FileRead(p(RESOLV)),
                Call::FileRead(p(NSSWITCH)),
                Call::FileRewrite(p(RESOLV)),
                Call::FileRewrite(p(NSSWITCH)),
            ]
        );
        assert_eq!(content(&ex, RESOLV).unwrap(), "nameserver 198.19.0.99\n");
        assert_eq!(inode(&ex, RESOLV), resolv_inode);

        ex.release(&work()).unwrap();
        assert!(matches!(
            ex.reapply(&work(), &plan()),
            Err(ExecError::NotIsolated { .. })
        ));
        let other: NetnsName = "other".parse().unwrap();
        assert!(matches!(
            ex.reapply(&other, &plan()),
            Err(ExecError::PlanMismatch { .. })
        ));
    }

    #[test]
    fn symlinked_netns_dir_is_refused_and_rolled_back() {
        let mut ex = executor();
        ex.sys.world.dirs.insert(p("/etc/netns"));
        ex.sys.world.symlinks.insert(p(DIR));
        let before = world(&ex);
        let err = ex.isolate(&request()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/netns/work: is a symbolic link, and nm-vpn-netns never follows one here"
        );
        assert_nothing_left(&ex, &before, "symlink");
    }

    #[test]
    fn record_round_trip() {
        let r = Record {
            netns: work(),
            connection_uuid: UUID.to_owned(),
            connection_id: "a b\\c\nd\t\u{1b}é".to_owned(),
            owner: ":1.7".to_owned(),
            created: false,
            persistent: true,
            leased: true,
            link: Some("vpn0".to_owned()),
            etc_dir_created: false,
            files: vec![
                FileRecord {
                    file: DnsFile::NsswitchConf,
                    backup: None,
                },
                FileRecord {
                    file: DnsFile::ResolvConf,
                    backup: Some(b"nameserver 192.0.2.1\n\xff\x00 x".to_vec()),
                },
            ],
        };
        let text = r.encode();
        assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 12);
        assert_eq!(Record::decode(&work(), &text), Ok(r.clone()));
        let empty = Record {
            link: None,
            files: vec![FileRecord {
                file: DnsFile::ResolvConf,
                backup: Some(Vec::new()),
            }],
            ..r
        };
        assert_eq!(Record::decode(&work(), &empty.encode()), Ok(empty));
        for bad in [
            "",
            "nm-vpn-netns record 2\n",
            "nm-vpn-netns record 1\nnetns work\n",
            "nm-vpn-netns record 1\nbogus 1\n",
            "nm-vpn-netns record 1\nfile-created hosts\n",
            "nm-vpn-netns record 1\nid \\q\n",
        ] {
            assert!(Record::decode(&work(), bad.as_bytes()).is_err(), "{bad:?}");
        }
        let other: NetnsName = "other".parse().unwrap();
        assert!(Record::decode(&other, &empty_record_text()).is_err());
    }

    fn empty_record_text() -> Vec<u8> {
        Record {
            netns: work(),
            connection_uuid: UUID.to_owned(),
            connection_id: "work".to_owned(),
            owner: String::new(),
            created: true,
            persistent: false,
            leased: false,
            link: None,
            etc_dir_created: true,
            files: Vec::new(),
        }
        .encode()
    }

    #[test]
    fn free_names() {
        let taken = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(free_name("tun0", &taken(&["lo"])), None);
        assert_eq!(
            free_name("tun0", &taken(&["lo", "tun0"])),
            Some("vpn0".to_owned())
        );
        assert_eq!(
            free_name("tun0", &taken(&["lo", "tun0", "vpn0", "vpn1"])),
            Some("vpn2".to_owned())
        );
    }
}
