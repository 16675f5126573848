//! The isolated VPNs NetworkManager has active, as any user may see them: the active connections
//! that are VPNs whose profile asks for isolation (`netns-isolate=yes` in `vpn.data`, or in the
//! mirror `enable` keeps in `user.data`, decided by [`mirror::decide`] as the plugin decides it),
//! and the namespace the agent gives them.

use std::path::Path;

use zbus::Connection;

use crate::agent::policy::{self, Policy, POLICY_PATH};
use crate::nmbus::{
    active_state, ActiveConnectionProxy, NetworkManagerProxy, SettingsConnectionProxy,
};
use crate::plan::mirror::{self, Origin};
use crate::plan::settings::{self, ConnectionInfo, NetnsSettings};

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
    let nm = NetworkManagerProxy::new(conn).await?;
    let mut found = Vec::new();
    for path in nm.active_connections().await? {
        let active = ActiveConnectionProxy::builder(conn)
            .path(path)
            .build()
            .await?;
        // Gone meanwhile, or not a VPN: nothing to show.
        if !active.vpn().await.unwrap_or(false) {
            continue;
        }
        let Ok(profile) = active.connection().await else {
            continue;
        };
        let profile = SettingsConnectionProxy::builder(conn)
            .path(profile)
            .build()
            .await?;
        let Ok(dict) = profile.get_settings().await else {
            continue;
        };
        let Some((decided, info)) = isolation_of(&dict) else {
            continue;
        };
        found.push(Active {
            id: info.id.clone(),
            uuid: info.uuid.clone(),
            state: active.state().await.unwrap_or(0),
            persistent: decided.settings.persistent,
            keys_from: decided.origin,
            mirror: mirror::mirror_from_nm(&dict).is_ok_and(|m| !m.is_empty()),
            netns: netns_name(&decided.settings, &info.permissions),
        });
    }
    Ok(found)
}

/// The deciding keys of a profile that asks for isolation; `None` for one that does not, or
/// whose keys the plugin would refuse (such a VPN never came up isolated).
fn isolation_of(dict: &settings::NmConnection) -> Option<(mirror::Decided, ConnectionInfo)> {
    let info = ConnectionInfo::from_nm(dict).ok()?;
    let decided = mirror::decide(dict, &info).ok()?;
    decided.settings.isolate.then_some((decided, info))
}

/// The namespace the agent gives a connection with these settings and `permissions`: the
/// settings' name, or for a user's connection the name the policy forms (ARCHITECTURE.md,
/// "Ownership").
fn netns_name(netns: &NetnsSettings, permissions: &[String]) -> Option<String> {
    let policy = Policy::load(Path::new(POLICY_PATH), 0).ok()?;
    match policy.connection_user(permissions).ok()? {
        None => Some(netns.name.to_string()),
        Some(user) => policy
            .user_netns_name(&user, &netns.name, &netns.name_source, policy::system_uid)
            .ok()
            .map(|n| n.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::plan::{owned, var_dict};

    fn strings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn profile(vpn_data: &[(&str, &str)]) -> settings::NmConnection {
        let data = strings(vpn_data);
        HashMap::from([
            (
                "connection".to_owned(),
                var_dict(vec![
                    ("id", owned("Work VPN")),
                    ("uuid", owned("8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b")),
                ]),
            ),
            ("vpn".to_owned(), var_dict(vec![("data", owned(data))])),
        ])
    }

    #[test]
    fn only_a_profile_that_asks_for_isolation_is_isolated() {
        let (decided, info) = isolation_of(&profile(&[
            ("remote", "vpn.example"),
            ("netns-isolate", "yes"),
            ("netns-persistent", "yes"),
        ]))
        .expect("isolated");
        let netns = &decided.settings;
        assert_eq!(
            (netns.name.as_str(), netns.persistent, info.id.as_str()),
            ("Work-VPN", true, "Work VPN")
        );
        assert_eq!(decided.origin, Origin::VpnData);
        assert_eq!(netns_name(netns, &[]).as_deref(), Some("Work-VPN"));
        assert_eq!(isolation_of(&profile(&[("remote", "vpn.example")])), None);
        assert_eq!(
            isolation_of(&profile(&[("netns-isolate", "maybe")])),
            None,
            "a profile the plugin refuses never came up isolated"
        );
        assert_eq!(state_word(active_state::ACTIVATED), "activated");
    }

    /// After GNOME's editor dropped the keys from `vpn.data`, the mirror decides, as in the plugin.
    #[test]
    fn the_mirror_decides_when_vpn_data_has_no_key() {
        let mut dict = profile(&[("remote", "vpn.example")]);
        let mirror = strings(&[(&mirror::mirror_key("netns-isolate"), "yes")]);
        dict.insert("user".to_owned(), var_dict(vec![("data", owned(mirror))]));
        let (decided, _) = isolation_of(&dict).expect("isolated by the mirror");
        assert_eq!(decided.origin, Origin::Mirror);
        let mut off = dict.clone();
        let data = strings(&[("netns-isolate", "no")]);
        off.insert("vpn".to_owned(), var_dict(vec![("data", owned(data))]));
        assert_eq!(isolation_of(&off), None, "vpn.data's explicit no wins");
    }
}
