//! The isolated VPNs NetworkManager has active, as any user may see them: the active connections
//! that are VPNs whose profile asks for isolation (`netns-isolate=yes` in `vpn.data`, or in the
//! mirror `enable` keeps in `user.data`, decided by [`mirror::decide`] as the plugin decides it),
//! and the namespace the agent gives them.

use std::path::Path;

use zbus::Connection;

use crate::agent::policy::{Policy, POLICY_PATH};
use crate::cli::profiles;
use crate::nmbus::{active_state, SettingsConnectionProxy};
use crate::plan::mirror::{self, Origin};
use crate::plan::settings::NetnsSettings;

/// An isolated VPN that NetworkManager has active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub id: String,
    pub uuid: String,
    /// `NMActiveConnectionState`.
    pub state: u32,
    pub persistent: bool,
    /// Where the keys that decide it are: `vpn.data`, or the mirror when `vpn.data` has none.
    pub keys_from: Origin,
    /// The profile has the mirror in `user.data`: removing the keys from `vpn.data` alone does not
    /// turn isolation off.
    pub mirror: bool,
    /// The namespace its settings and the administrator's policy name; `None` if that cannot be
    /// told (a user the system does not know, a policy this user may not read).
    pub netns: Option<String>,
}

/// NetworkManager's word for an active connection's state (`nmcli`'s).
pub fn state_word(state: u32) -> &'static str {
    match state {
        active_state::ACTIVATING => "activating",
        active_state::ACTIVATED => "activated",
        active_state::DEACTIVATING => "deactivating",
        active_state::DEACTIVATED => "deactivated",
        _ => "unknown",
    }
}

/// Every active VPN whose profile asks for isolation. A profile this user may not read is left
/// out, as `nmcli` leaves it out.
pub async fn isolated_vpns(conn: &Connection) -> zbus::Result<Vec<Active>> {
    let mut found = Vec::new();
    for active in profiles::active_vpns(conn).await? {
        let profile = SettingsConnectionProxy::builder(conn)
            .path(active.profile)
            .build()
            .await?;
        let Ok(dict) = profile.get_settings().await else {
            continue;
        };
        let Some((decided, info)) = profiles::isolation(&dict) else {
            continue;
        };
        found.push(Active {
            id: info.id.clone(),
            uuid: info.uuid.clone(),
            state: active.state,
            persistent: decided.settings.persistent,
            keys_from: decided.origin,
            mirror: mirror::mirror_from_nm(&dict).is_ok_and(|m| !m.is_empty()),
            netns: netns_name(&decided.settings, &info.permissions),
        });
    }
    Ok(found)
}

/// The namespace the agent gives this connection; `None` if that cannot be told (a user the
/// system does not know, a policy this user may not read).
fn netns_name(netns: &NetnsSettings, permissions: &[String]) -> Option<String> {
    let policy = Policy::load(Path::new(POLICY_PATH), 0).ok()?;
    profiles::agent_netns_name(&policy, netns, permissions)
        .ok()
        .map(|n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_as_nmcli_says_them() {
        assert_eq!(state_word(active_state::ACTIVATED), "activated");
        assert_eq!(state_word(99), "unknown");
    }
}
