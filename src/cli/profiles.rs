//! What the subcommands read of NetworkManager's profiles and active VPNs, and what they decide
//! of a profile as the plugin and the agent decide it: whether it asks for isolation (its keys in
//! `vpn.data`, or their mirror in `user.data`), and the namespace the agent gives it under the
//! administrator's policy.

use zbus::{Connection, OwnedObjectPath};

use crate::agent::policy::{system_uid, Policy, PolicyError};
use crate::nmbus::{
    ActiveConnectionProxy, ConnectionSettings, NetworkManagerProxy, SettingsConnectionProxy,
    SettingsProxy,
};
use crate::plan::mirror::{self, Decided};
use crate::plan::settings::{ConnectionInfo, NetnsName, NetnsSettings, NmConnection};

/// Every profile the caller may see, with its settings (no secrets). One deleted between the list
/// and its read is not there.
pub async fn all(
    bus: &Connection,
) -> zbus::Result<Vec<(SettingsConnectionProxy<'static>, ConnectionSettings)>> {
    let mut found = Vec::new();
    for path in SettingsProxy::new(bus).await?.list_connections().await? {
        let profile = SettingsConnectionProxy::builder(bus)
            .path(path)
            .build()
            .await?;
        if let Ok(settings) = profile.get_settings().await {
            found.push((profile, settings));
        }
    }
    Ok(found)
}

/// An active VPN as NetworkManager lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveVpn {
    pub uuid: String,
    /// `NMActiveConnectionState`.
    pub state: u32,
    /// Its profile, a [`SettingsConnectionProxy`] path.
    pub profile: OwnedObjectPath,
}

/// Every active VPN. One that goes away while it is read is not there.
pub async fn active_vpns(bus: &Connection) -> zbus::Result<Vec<ActiveVpn>> {
    let mut found = Vec::new();
    for path in NetworkManagerProxy::new(bus)
        .await?
        .active_connections()
        .await?
    {
        let active = ActiveConnectionProxy::builder(bus)
            .path(path)
            .build()
            .await?;
        let read = async {
            if !active.vpn().await? {
                return Ok(None);
            }
            Ok::<_, zbus::Error>(Some(ActiveVpn {
                uuid: active.uuid().await?,
                state: active.state().await?,
                profile: active.connection().await?,
            }))
        };
        if let Ok(Some(vpn)) = read.await {
            found.push(vpn);
        }
    }
    Ok(found)
}

/// The deciding keys of a profile that asks for isolation, with its identity; `None` for one
/// that does not, or whose keys the plugin would refuse (such a VPN never comes up isolated).
pub fn isolation(dict: &NmConnection) -> Option<(Decided, ConnectionInfo)> {
    let info = ConnectionInfo::from_nm(dict).ok()?;
    let decided = mirror::decide(dict, &info).ok()?;
    decided.settings.isolate.then_some((decided, info))
}

/// The namespace the agent gives a connection with these settings and `permissions`: the
/// settings' name, or for a user's connection the name the policy forms (ARCHITECTURE.md,
/// "Ownership").
pub fn agent_netns_name(
    policy: &Policy,
    netns: &NetnsSettings,
    permissions: &[String],
) -> Result<NetnsName, PolicyError> {
    match policy.connection_user(permissions)? {
        None => Ok(netns.name.clone()),
        Some(user) => policy.user_netns_name(&user, &netns.name, &netns.name_source, system_uid),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::plan::mirror::Origin;
    use crate::plan::{owned, var_dict};

    fn strings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn profile(vpn_data: &[(&str, &str)]) -> NmConnection {
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
        let (decided, info) = isolation(&profile(&[
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
        let policy = Policy::default();
        assert_eq!(
            agent_netns_name(&policy, netns, &[]).unwrap().as_str(),
            "Work-VPN"
        );
        assert_eq!(isolation(&profile(&[("remote", "vpn.example")])), None);
        assert_eq!(
            isolation(&profile(&[("netns-isolate", "maybe")])),
            None,
            "a profile the plugin refuses never came up isolated"
        );
    }

    /// After GNOME's editor dropped the keys from `vpn.data`, the mirror decides, as in the plugin.
    #[test]
    fn the_mirror_decides_when_vpn_data_has_no_key() {
        let mut dict = profile(&[("remote", "vpn.example")]);
        let mirror = strings(&[(&mirror::mirror_key("netns-isolate"), "yes")]);
        dict.insert("user".to_owned(), var_dict(vec![("data", owned(mirror))]));
        let (decided, _) = isolation(&dict).expect("isolated by the mirror");
        assert_eq!(decided.origin, Origin::Mirror);
        let mut off = dict.clone();
        let data = strings(&[("netns-isolate", "no")]);
        off.insert("vpn".to_owned(), var_dict(vec![("data", owned(data))]));
        assert_eq!(isolation(&off), None, "vpn.data's explicit no wins");
    }
}
