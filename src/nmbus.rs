//! NetworkManager's own D-Bus API, as the `nm-vpn-netns` command and the shim call it: one proxy
//! per interface, one line of IDL per member used, and nothing NM does not document.
//!
//! The names and flags are NetworkManager's, from its `introspection/*.xml` and
//! `libnm-core-public/nm-dbus-interface.h`.

use std::collections::HashMap;

use zbus::OwnedObjectPath;

use crate::plan::VarDict;

/// A connection's settings as `GetSettings` returns them and `Update2` takes them: `a{sa{sv}}`,
/// one dict per setting (`connection`, `vpn`, `user`, …).
pub type ConnectionSettings = HashMap<String, VarDict>;

/// `NMActiveConnectionState`.
pub mod active_state {
    pub const ACTIVATING: u32 = 1;
    pub const ACTIVATED: u32 = 2;
    pub const DEACTIVATING: u32 = 3;
    pub const DEACTIVATED: u32 = 4;
}

/// `NMSettingsUpdate2Flags`: write the profile to disk and leave the active connection as it is.
pub mod update2 {
    pub const TO_DISK: u32 = 0x1;
    pub const NO_REAPPLY: u32 = 0x40;
}

/// `org.freedesktop.NetworkManager` at `/org/freedesktop/NetworkManager`.
#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager",
    default_service = "org.freedesktop.NetworkManager",
    default_path = "/org/freedesktop/NetworkManager"
)]
pub trait NetworkManager {
    /// `property ao ActiveConnections`.
    #[zbus(property)]
    fn active_connections(&self) -> zbus::Result<Vec<OwnedObjectPath>>;

    /// `property s Version`.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

/// `org.freedesktop.NetworkManager.Settings` at `/org/freedesktop/NetworkManager/Settings`.
#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.Settings",
    default_service = "org.freedesktop.NetworkManager",
    default_path = "/org/freedesktop/NetworkManager/Settings"
)]
pub trait Settings {
    /// `ListConnections(out ao connections)`: every profile the caller may see.
    fn list_connections(&self) -> zbus::Result<Vec<OwnedObjectPath>>;

    /// `GetConnectionByUuid(in s uuid, out o connection)`.
    fn get_connection_by_uuid(&self, uuid: &str) -> zbus::Result<OwnedObjectPath>;
}

/// `org.freedesktop.NetworkManager.Settings.Connection`, one object per profile.
#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.Settings.Connection",
    default_service = "org.freedesktop.NetworkManager"
)]
pub trait SettingsConnection {
    /// `GetSettings(out a{sa{sv}} settings)`: the profile without its secrets.
    fn get_settings(&self) -> zbus::Result<ConnectionSettings>;

    /// `Update2(in a{sa{sv}} settings, in u flags, in a{sv} args, out a{sv} result)`: replaces
    /// the whole profile (secrets not given are kept by NM); `flags` from [`update2`].
    fn update2(
        &self,
        settings: &ConnectionSettings,
        flags: u32,
        args: &VarDict,
    ) -> zbus::Result<VarDict>;

    /// `property s Filename`: the keyfile or ifcfg file behind the profile, if any.
    #[zbus(property)]
    fn filename(&self) -> zbus::Result<String>;
}

/// Writes `settings` as the whole profile, on disk, and leaves its active connection as it is
/// (`TO_DISK | NO_REAPPLY`): how `enable`, `disable` and the shim's restore of the keys save.
pub async fn save_to_disk(
    profile: &SettingsConnectionProxy<'_>,
    settings: &ConnectionSettings,
) -> zbus::Result<()> {
    let flags = update2::TO_DISK | update2::NO_REAPPLY;
    profile.update2(settings, flags, &VarDict::new()).await?;
    Ok(())
}

/// `org.freedesktop.NetworkManager.Connection.Active`, one object per active connection.
#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.Connection.Active",
    default_service = "org.freedesktop.NetworkManager"
)]
pub trait ActiveConnection {
    /// `property s Id`.
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;

    /// `property s Uuid`.
    #[zbus(property)]
    fn uuid(&self) -> zbus::Result<String>;

    /// `property s Type`: `vpn` for a VPN.
    #[zbus(property, name = "Type")]
    fn type_(&self) -> zbus::Result<String>;

    /// `property u State`: [`active_state`].
    #[zbus(property)]
    fn state(&self) -> zbus::Result<u32>;

    /// `property b Vpn`.
    #[zbus(property)]
    fn vpn(&self) -> zbus::Result<bool>;

    /// `property o Connection`: the profile, a [`SettingsConnectionProxy`] path.
    #[zbus(property)]
    fn connection(&self) -> zbus::Result<OwnedObjectPath>;
}

/// `org.freedesktop.NetworkManager.VPN.Connection`, on a VPN's active connection object.
#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.VPN.Connection",
    default_service = "org.freedesktop.NetworkManager"
)]
pub trait VpnConnection {
    /// `property u VpnState`: `NMVpnConnectionState` (5 is ACTIVATED).
    #[zbus(property)]
    fn vpn_state(&self) -> zbus::Result<u32>;

    /// `property s Banner`: the login banner the plugin reported in its `Config`.
    #[zbus(property)]
    fn banner(&self) -> zbus::Result<String>;
}
