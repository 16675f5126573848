//! Which isolated VPN `exec` enters, and whether the user may: NetworkManager's profiles and
//! active connections, read as root over the system bus, then decided here without I/O.

use std::collections::HashMap;
use std::path::Path;

use crate::agent::policy::{Policy, PolicyError, POLICY_PATH};
use crate::cli::list::{self, ListError};
use crate::cli::profiles;
use crate::contract::NetnsEntry;
use crate::nmbus::active_state;
use crate::plan::settings::{permission_users, NetnsName};

/// Every way the target can be refused. Each message names the connection or the namespace.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("no isolated VPN is connected; name one: nm-vpn-netns exec CONNECTION -- COMMAND")]
    NoneConnected,
    #[error("{} isolated VPNs are connected ({}); name one", names.len(), names.join(", "))]
    SeveralConnected { names: Vec<String> },
    #[error("no isolated VPN has the id, uuid or namespace {target:?}")]
    Unknown { target: String },
    #[error("{target:?} names several isolated VPNs ({}); give the uuid", names.join(", "))]
    Ambiguous { target: String, names: Vec<String> },
    #[error(
        "VPN {id:?} is down, so its namespace {netns} is not in use; bring it up first: nmcli \
         connection up uuid {uuid}"
    )]
    Down {
        id: String,
        uuid: String,
        netns: String,
    },
    #[error(
        "user {user:?} may not exec into {netns}: connection {id:?} belongs to {}",
        owners.join(", ")
    )]
    Denied {
        user: String,
        id: String,
        netns: String,
        owners: Vec<String>,
    },
}

/// One isolated VPN profile as `exec` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vpn {
    pub id: String,
    pub uuid: String,
    /// The namespace the agent gives it: the profile's name, or `u<UID>-NAME` for a user's.
    pub netns: NetnsName,
    /// `connection.permissions`: empty for a system profile.
    pub permissions: Vec<String>,
    /// NM reports it ACTIVATED and the agent holds its namespace for it.
    pub connected: bool,
}

/// The namespace of the VPN with `uuid` and whether it is connected, as the agent knows it
/// (`List`), over the name the profile's settings give: the agent's policy may have changed
/// since the VPN came up. `nm_activated`: NM's view of the same connection.
pub fn agent_view(
    entries: &[NetnsEntry],
    uuid: &str,
    settings_name: NetnsName,
    nm_activated: bool,
) -> (NetnsName, bool) {
    let held = entries
        .iter()
        .filter(|e| e.connected && e.uuid == uuid)
        .find_map(|e| e.netns.parse::<NetnsName>().ok());
    match held {
        Some(netns) => (netns, nm_activated),
        None => (settings_name, false),
    }
}

impl Vpn {
    fn label(&self) -> String {
        format!("{} ({})", self.id, self.netns.as_str())
    }
}

/// The VPN that `target` names, a connection id, uuid or namespace name, or the one connected
/// when there is no target. A name several profiles share is taken by the one connected.
pub fn resolve<'a>(target: Option<&str>, vpns: &'a [Vpn]) -> Result<&'a Vpn, TargetError> {
    let Some(target) = target else {
        return match vpns.iter().filter(|v| v.connected).collect::<Vec<_>>()[..] {
            [] => Err(TargetError::NoneConnected),
            [one] => Ok(one),
            ref many => Err(TargetError::SeveralConnected {
                names: many.iter().map(|v| v.label()).collect(),
            }),
        };
    };
    let mut matches: Vec<&Vpn> = vpns.iter().filter(|v| v.uuid == target).collect();
    if matches.is_empty() {
        matches = vpns
            .iter()
            .filter(|v| v.id == target || v.netns.as_str() == target)
            .collect();
    }
    if matches.len() > 1 && matches.iter().any(|v| v.connected) {
        matches.retain(|v| v.connected);
    }
    let vpn = match matches[..] {
        [] => {
            return Err(TargetError::Unknown {
                target: target.to_owned(),
            })
        }
        [one] => one,
        ref many => {
            return Err(TargetError::Ambiguous {
                target: target.to_owned(),
                names: many
                    .iter()
                    .map(|v| format!("{} {}", v.label(), v.uuid))
                    .collect(),
            })
        }
    };
    if !vpn.connected {
        return Err(TargetError::Down {
            id: vpn.id.clone(),
            uuid: vpn.uuid.clone(),
            netns: vpn.netns.as_str().to_owned(),
        });
    }
    Ok(vpn)
}

/// Who may exec where: root anywhere; a user into a system profile's namespace (one without
/// `connection.permissions`, which NM lets every user activate), or a profile that names them.
pub fn authorize(user: &str, uid: u32, vpn: &Vpn) -> Result<(), TargetError> {
    let owners = permission_users(&vpn.permissions);
    if uid == 0 || vpn.permissions.is_empty() || owners.contains(&user) {
        return Ok(());
    }
    Err(TargetError::Denied {
        user: user.to_owned(),
        id: vpn.id.clone(),
        netns: vpn.netns.as_str().to_owned(),
        owners: owners.into_iter().map(str::to_owned).collect(),
    })
}

/// Every way reading the VPNs from NetworkManager can fail.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the connections from NetworkManager")]
    Bus(#[source] zbus::Error),
    #[error("cannot read the agent's policy")]
    Policy(#[source] PolicyError),
    #[error("cannot list the agent's namespaces")]
    Agent(#[source] ListError),
}

/// The isolated VPN profiles NM holds, each with its namespace and whether it is connected.
/// A profile whose `netns-*` keys are invalid cannot connect, and is left out.
pub async fn isolated_vpns(bus: &zbus::Connection) -> Result<Vec<Vpn>, ReadError> {
    let policy = Policy::load(Path::new(POLICY_PATH), 0).map_err(ReadError::Policy)?;
    let activated = activated_uuids(bus).await.map_err(ReadError::Bus)?;
    let held = list::entries(bus).await.map_err(ReadError::Agent)?;
    let mut vpns = Vec::new();
    for (_, conn) in profiles::all(bus).await.map_err(ReadError::Bus)? {
        let Some((decided, info)) = profiles::isolation(&conn) else {
            continue;
        };
        let Ok(netns) = profiles::agent_netns_name(&policy, &decided.settings, &info.permissions)
        else {
            continue;
        };
        let nm_activated = activated.get(&info.uuid).copied().unwrap_or(false);
        let (netns, connected) = agent_view(&held, &info.uuid, netns, nm_activated);
        vpns.push(Vpn {
            connected,
            id: info.id,
            uuid: info.uuid,
            netns,
            permissions: info.permissions,
        });
    }
    Ok(vpns)
}

/// The uuid of every active VPN, and whether it is ACTIVATED.
async fn activated_uuids(bus: &zbus::Connection) -> zbus::Result<HashMap<String, bool>> {
    let mut uuids = HashMap::new();
    for active in profiles::active_vpns(bus).await? {
        *uuids.entry(active.uuid).or_default() |= active.state == active_state::ACTIVATED;
    }
    Ok(uuids)
}

#[cfg(test)]
mod tests;
