//! The agent's leases: which caller holds which namespace, and the wait of a quick reconnect for
//! the lease its own connection still holds.
//!
//! NetworkManager does not wait for a plugin to stop. After `down` then `up` of one connection,
//! the new plugin's `Isolate` can arrive while the old plugin still holds the namespace, because
//! it is still stopping openvpn or its `Release` is still running. Such a request waits, until
//! its `netns-timeout` deadline at most, for that lease to go. A request of another connection is
//! refused at once: its namespace really is in use.
//!
//! A lease that `Prepare` took holds the namespace from Connect on with no tun in it yet; the same
//! caller's `Isolate` takes it over ([`Leases::take`]).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use log::info;
use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::agent::executor::{IsolateArgs, PrepareArgs};
use crate::agent::procs::Started;
use crate::agent::record::Record;
use crate::contract::AgentError;
use crate::plan::settings::NetnsName;
use crate::plan::{self, IsolationPlan, PlanError, PlanInput, VarDict};

/// One isolation's holder: the caller's unique bus name (`""` on a peer-to-peer connection), the
/// connection it isolated, what a re-sent config needs to be planned again, and the processes the
/// caller started, to end if it dies without releasing.
pub struct Lease {
    pub owner: String,
    pub uuid: String,
    pub never_default_v4: bool,
    pub never_default_v6: bool,
    pub tunnel_mtu: Option<u32>,
    pub started: Started,
    /// Taken by `Prepare`, and no `Isolate` took it over yet.
    pub prepared: Option<Preparation>,
}

/// One `Prepare`'s hold on a namespace, told apart from any later one of the same caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preparation {
    pub id: u64,
    /// `Prepare` created the namespace: the `Isolate` that takes it over says so.
    pub created: bool,
}

impl Preparation {
    /// A preparation unlike any before it.
    pub fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Preparation {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            created: false,
        }
    }
}

impl Lease {
    /// The plan of the config that the lease's VPN sent again (`Reapply`), which carries none of
    /// the profile's settings: they come from the lease. An empty `ip4` or `ip6` is a family the
    /// config did not announce.
    pub fn replan(
        &self,
        netns: NetnsName,
        config: &VarDict,
        (ip4, ip6): (&VarDict, &VarDict),
        host_nsswitch: &str,
    ) -> Result<IsolationPlan, PlanError> {
        plan::build(&PlanInput {
            netns,
            never_default_v4: self.never_default_v4,
            never_default_v6: self.never_default_v6,
            tunnel_mtu: self.tunnel_mtu,
            config,
            ip4_config: (!ip4.is_empty()).then_some(ip4),
            ip6_config: (!ip6.is_empty()).then_some(ip6),
            host_nsswitch,
        })
    }
}

impl From<&IsolateArgs> for Lease {
    fn from(a: &IsolateArgs) -> Self {
        Lease::new(&a.claim, None)
    }
}

impl Lease {
    /// The lease of `a`'s `Prepare`.
    pub fn prepared(a: &PrepareArgs, preparation: Preparation) -> Self {
        Lease::new(a, Some(preparation))
    }

    fn new(a: &PrepareArgs, prepared: Option<Preparation>) -> Self {
        Lease {
            owner: a.owner.clone(),
            uuid: a.connection_uuid.clone(),
            never_default_v4: a.never_default_v4,
            never_default_v6: a.never_default_v6,
            tunnel_mtu: a.tunnel_mtu,
            started: Started::default(),
            prepared,
        }
    }
}

impl From<&Record> for Lease {
    fn from(r: &Record) -> Self {
        Lease {
            owner: r.owner.clone(),
            uuid: r.connection_uuid.clone(),
            never_default_v4: r.never_default_v4,
            never_default_v6: r.never_default_v6,
            tunnel_mtu: r.tunnel_mtu,
            // The processes are not recorded: an agent that restarted cannot end them.
            started: Started::default(),
            // Leased with no link: prepared, or an isolation cut short, which its holder releases
            // once it hears of the failure; either way its holder's `Isolate` may take it.
            prepared: r.link.is_none().then(Preparation::fresh),
        }
    }
}

/// The leases, and whether the agent is on its way out: both change under one lock, so that no
/// lease is granted once the agent decided to exit.
#[derive(Default)]
pub struct LeaseTable {
    pub held: HashMap<NetnsName, Lease>,
    pub retiring: bool,
    /// Namespaces whose lease is gone but whose release still runs on the executor: an
    /// `Isolate` sent there now would reach the executor before the release is done.
    releasing: HashSet<NetnsName>,
}

impl LeaseTable {
    /// `owner`'s lease on `ns`, or why it has none.
    pub fn lease_of(&self, ns: &NetnsName, owner: &str) -> Result<&Lease, AgentError> {
        match self.held.get(ns) {
            Some(lease) if lease.owner == owner => Ok(lease),
            other => Err(not_holder(ns, other.is_some())),
        }
    }

    /// Takes the lease on `ns` out of the table for a release to run if it is still the
    /// `preparation` that no `Isolate` took over, as when the connect timeout passed.
    pub fn start_unprepare(&mut self, ns: &NetnsName, preparation: Preparation) -> Option<Lease> {
        let held = self.held.get(ns)?;
        if held.prepared.map(|p| p.id) != Some(preparation.id) {
            return None;
        }
        self.releasing.insert(ns.clone());
        self.held.remove(ns)
    }

    /// Takes `owner`'s lease on `ns` out of the table for a release to run, or says why it has
    /// none, and then takes nothing. The caller ends it with [`Leases::released`].
    pub fn start_release(&mut self, ns: &NetnsName, owner: &str) -> Result<Lease, AgentError> {
        match self.held.entry(ns.clone()) {
            Entry::Occupied(held) if held.get().owner == owner => {
                self.releasing.insert(ns.clone());
                Ok(held.remove())
            }
            held => Err(not_holder(ns, matches!(held, Entry::Occupied(_)))),
        }
    }
}

/// Why a caller has no lease on `ns`, which is `leased` by another caller or by none.
fn not_holder(ns: &NetnsName, leased: bool) -> AgentError {
    if leased {
        AgentError::AccessDenied(format!("namespace {ns} is leased by another caller"))
    } else {
        AgentError::InvalidArgs(format!("namespace {ns} is not leased"))
    }
}

/// The lease table, and a signal each time a lease goes.
#[derive(Default)]
pub struct Leases {
    table: Mutex<LeaseTable>,
    gone: Notify,
}

/// What an `Isolate` meets in the table.
enum Meets {
    Free,
    /// The caller's own `Prepare` holds it: the isolation takes it over.
    Prepared(Preparation),
    /// The connection's own previous lease, or a release still running: wait for it.
    Wait,
    InUse,
}

impl Leases {
    pub async fn lock(&self) -> MutexGuard<'_, LeaseTable> {
        self.table.lock().await
    }

    /// Ends a release begun by [`LeaseTable::start_release`], or drops a lease whose isolation
    /// failed, and wakes the requests that wait for it.
    pub async fn released(&self, ns: &NetnsName) {
        let mut table = self.table.lock().await;
        table.releasing.remove(ns);
        drop(table);
        self.gone.notify_waiters();
    }

    /// Drops `owner`'s lease on `ns`, as after a failed isolation, and wakes those who wait.
    pub async fn drop_lease(&self, ns: &NetnsName, owner: &str) {
        let mut table = self.table.lock().await;
        if table.held.get(ns).is_some_and(|l| l.owner == owner) {
            table.held.remove(ns);
        }
        drop(table);
        self.gone.notify_waiters();
    }

    /// Sets what `preparation`'s `Prepare` made of the namespace, and keeps `preparation` as the
    /// lease's, for a failed `Isolate` to give back ([`Leases::give_back`]).
    pub async fn prepared(&self, ns: &NetnsName, preparation: Preparation) -> Option<()> {
        let mut table = self.table.lock().await;
        let held = table.held.get_mut(ns)?;
        let p = held.prepared.as_mut().filter(|p| p.id == preparation.id)?;
        *p = preparation;
        Some(())
    }

    /// Gives `owner`'s lease on `ns` back to the `preparation` that an `Isolate` took over and
    /// failed: what `Prepare` made stays, for the holder's `Release` or the connect timeout.
    pub async fn give_back(&self, ns: &NetnsName, owner: &str, preparation: Preparation) {
        let mut table = self.table.lock().await;
        if let Some(held) = table.held.get_mut(ns).filter(|l| l.owner == owner) {
            held.prepared = Some(preparation);
            held.started = Started::default();
        }
    }

    /// Drops `owner`'s lease on `ns` if it is still `preparation`'s, as after a failed
    /// `Prepare`, and wakes those who wait.
    pub async fn drop_prepared(&self, ns: &NetnsName, preparation: Preparation) {
        let mut table = self.table.lock().await;
        let held = table.held.get(ns).and_then(|l| l.prepared);
        if held.is_some_and(|p| p.id == preparation.id) {
            table.held.remove(ns);
        }
        drop(table);
        self.gone.notify_waiters();
    }

    /// Grants `lease` on `ns`, and returns the caller's own preparation that it took over, if
    /// any. A lease of the same connection held by another caller, or a release still running,
    /// is waited for until `deadline`; any other lease refuses at once.
    pub async fn take(
        &self,
        ns: &NetnsName,
        lease: Lease,
        deadline: Instant,
    ) -> Result<Option<Preparation>, AgentError> {
        let waited_since = Instant::now();
        loop {
            // Registered before the table is read, so that a release between the read and the
            // wait still wakes this request.
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            {
                let mut table = self.table.lock().await;
                // Only the calls that reached the agent between its last release and giving up
                // its name meet this: later ones go to the new agent that the bus starts.
                if table.retiring {
                    return Err(AgentError::Failed(
                        "the agent is exiting because its binary was replaced; try again".into(),
                    ));
                }
                match meets(&table, ns, &lease) {
                    Meets::Free => {
                        let waited = waited_since.elapsed().as_millis();
                        if waited > 0 {
                            info!(
                                "namespace {ns} is free after {waited} ms; isolating connection \
                                 {} in it",
                                lease.uuid
                            );
                        }
                        table.held.insert(ns.clone(), lease);
                        return Ok(None);
                    }
                    Meets::Prepared(preparation) => {
                        table.held.insert(ns.clone(), lease);
                        return Ok(Some(preparation));
                    }
                    Meets::InUse => {
                        return Err(AgentError::InUse(format!(
                            "namespace {ns} already holds an active VPN; only one VPN may use \
                             a namespace at a time"
                        )))
                    }
                    Meets::Wait => {}
                }
            }
            let until = tokio::time::Instant::from_std(deadline);
            if tokio::time::timeout_at(until, gone).await.is_err() {
                return Err(AgentError::Timeout(format!(
                    "namespace {ns} was still held by this connection's previous activation \
                     after {} ms, at netns-timeout",
                    waited_since.elapsed().as_millis()
                )));
            }
        }
    }
}

fn meets(table: &LeaseTable, ns: &NetnsName, lease: &Lease) -> Meets {
    if table.releasing.contains(ns) {
        return Meets::Wait;
    }
    match table.held.get(ns) {
        None => Meets::Free,
        // The same caller twice is no reconnect: its lease will not go while it waits. But its
        // `Isolate` takes over what its `Prepare` holds.
        Some(held) if held.uuid == lease.uuid && held.owner != lease.owner => Meets::Wait,
        Some(held) if held.uuid == lease.uuid && lease.prepared.is_none() => match held.prepared {
            Some(preparation) => Meets::Prepared(preparation),
            None => Meets::InUse,
        },
        Some(_) => Meets::InUse,
    }
}

#[cfg(test)]
mod tests {
    use zbus::OwnedVariant;

    use super::{Lease, LeaseTable, Started};
    use crate::agent::record::Record;
    use crate::plan::VarDict;

    fn dict(entries: &[(&str, OwnedVariant)]) -> VarDict {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.try_clone().unwrap()))
            .collect()
    }

    /// A config that openvpn sends again keeps the profile's `tunnel-mtu`, not the 1500 that
    /// nm-openvpn's helper reports, also once a restarted agent adopted the lease from its record.
    #[test]
    fn a_reapply_keeps_the_tunnel_mtu() {
        let config = dict(&[
            ("tundev", OwnedVariant::from(zbus::Str::from("tun0"))),
            ("gateway", OwnedVariant::from(0x0100_12c6u32)),
            ("mtu", OwnedVariant::from(1500u32)),
            ("has-ip4", OwnedVariant::from(true)),
        ]);
        let ip4 = dict(&[
            ("address", OwnedVariant::from(0x0200_13c6u32)),
            ("prefix", OwnedVariant::from(24u32)),
        ]);
        let record = Record {
            netns: "work".parse().unwrap(),
            connection_uuid: "u".into(),
            connection_id: "work".into(),
            owner: ":1.8".into(),
            never_default_v4: false,
            never_default_v6: false,
            tunnel_mtu: Some(1400),
            created: true,
            netns_id: None,
            identity_first: false,
            netns_pending: false,
            netns_file: None,
            user: None,
            persistent: false,
            leased: true,
            link: Some("tun0".into()),
            link_ifindex: None,
            etc_dir_created: false,
            files: Vec::new(),
        };
        let lease = Lease::from(&record);
        let ns = "work".parse().unwrap();
        let plan = lease
            .replan(ns, &config, (&ip4, &VarDict::new()), "")
            .unwrap();
        assert_eq!(plan.link.mtu, Some(1400), "expected the lease's tunnel-mtu");
        let unset = Lease {
            tunnel_mtu: None,
            ..lease
        };
        let ns = "work".parse().unwrap();
        let plan = unset
            .replan(ns, &config, (&ip4, &VarDict::new()), "")
            .unwrap();
        assert_eq!(
            plan.link.mtu,
            Some(1500),
            "expected Config's mtu without tunnel-mtu"
        );
    }

    /// A caller that left the bus loses only its own leases: the name may have been released
    /// and leased again to another caller since its leases were listed.
    #[test]
    fn only_the_owners_lease_is_taken() {
        let ns = "work".parse().unwrap();
        let lease = |owner: &str| Lease {
            owner: owner.to_owned(),
            uuid: "u".to_owned(),
            never_default_v4: false,
            never_default_v6: false,
            tunnel_mtu: None,
            started: Started::default(),
            prepared: None,
        };
        let mut table = LeaseTable::default();
        table.held.insert("work".parse().unwrap(), lease(":1.8"));
        assert!(table.start_release(&ns, ":1.7").is_err());
        assert_eq!(table.held[&ns].owner, ":1.8");
        assert!(table.start_release(&ns, ":1.8").is_ok());
        assert!(table.held.is_empty());
        assert!(table.start_release(&ns, ":1.8").is_err());
    }
}
