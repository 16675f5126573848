//! The VPN plugins of NetworkManager whose connections nm-vpn-netns isolates, and what sets them
//! apart. One table, read by `enable` (which profiles it accepts) and `doctor` (what it checks).

use super::settings::OPENVPN_SERVICE;

/// NetworkManager-openconnect's service: `service=` of its `.name` file.
pub const OPENCONNECT_SERVICE: &str = "org.freedesktop.NetworkManager.openconnect";

/// One stock VPN plugin of NetworkManager.
#[derive(Debug, PartialEq, Eq)]
pub struct Plugin {
    /// Its `name=` in the `.name` file, and `nmcli`'s word for the VPN type.
    pub name: &'static str,
    /// `service=` in the `.name` file, and a profile's `vpn.service-type`.
    pub service: &'static str,
    /// The package, by Debian's name and by Fedora's.
    pub deb: &'static str,
    pub rpm: &'static str,
    /// The oldest release tested (README, "Tested on").
    pub min_version: &'static str,
    /// Whether the stock plugin refuses a profile with keys it does not know, as nm-openvpn does
    /// (`nm_openvpn_properties_validate`); nm-openconnect only logs them
    /// (nm-openconnect-service.c, `validate_one_property`), so without our registration a profile
    /// with `netns-isolate=yes` connects, unisolated.
    pub refuses_unknown_keys: bool,
}

pub const OPENVPN: Plugin = Plugin {
    name: "openvpn",
    service: OPENVPN_SERVICE,
    deb: "network-manager-openvpn",
    rpm: "NetworkManager-openvpn",
    min_version: "1.10",
    refuses_unknown_keys: true,
};

pub const OPENCONNECT: Plugin = Plugin {
    name: "openconnect",
    service: OPENCONNECT_SERVICE,
    deb: "network-manager-openconnect",
    rpm: "NetworkManager-openconnect",
    min_version: "1.2.8",
    refuses_unknown_keys: false,
};

pub const PLUGINS: [&Plugin; 2] = [&OPENVPN, &OPENCONNECT];

/// The plugin of `vpn.service-type` `service`, if nm-vpn-netns isolates its connections.
pub fn by_service(service: &str) -> Option<&'static Plugin> {
    PLUGINS.into_iter().find(|p| p.service == service)
}

/// The plugins' services, for messages: "org.freedesktop.NetworkManager.openvpn or …".
pub fn services() -> String {
    PLUGINS.map(|p| p.service).join(" or ")
}
