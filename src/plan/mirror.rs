//! The mirror of the `netns-*` keys in the connection's `user` setting, which `nm-vpn-netns
//! enable` writes beside `vpn.data`, and the profile edits of `enable`, `disable` and the shim.
//!
//! Why a mirror: GNOME's connection editor rebuilds `vpn.data` from the fields the plugin's editor
//! (nm-openvpn's, nm-openconnect's) knows when it saves a profile, which drops our keys, but it leaves the profile's other settings,
//! `user` among them, as they were. The shim reads the mirror when `vpn.data` has no `netns-*` key
//! at all, and once the VPN is up it puts the keys back into `vpn.data`.
//!
//! `user.data` keys must look like a dotted name (NetworkManager's nm-setting-user.c,
//! `nm_setting_user_check_key`: at least one `.`, words of `A-Za-z0-9-_+/=`, at most 255 bytes), so
//! each key is mirrored as [`MIRROR_PREFIX`] followed by its name in `vpn.data`.
//!
//! Pure: the edits take a connection's settings and return new ones.

use std::collections::{BTreeMap, HashMap};

use zbus::OwnedVariant;

use super::settings::{
    self, is_netns_key, strip_netns_keys, ConnectionInfo, IpSettings, Key, NetnsSettings,
    NmConnection, SettingsError,
};

/// What each mirrored key's name starts with in `user.data`.
pub const MIRROR_PREFIX: &str = "io.github.nm-vpn-netns.";

const VPN: &str = "vpn";
const USER: &str = "user";
const DATA: &str = "data";

/// The name in `user.data` of the copy of `name`, a key of `vpn.data`.
pub fn mirror_key(name: &str) -> String {
    format!("{MIRROR_PREFIX}{name}")
}

/// Where the keys that decide a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `vpn.data` had at least one `netns-*` key: those decide, the mirror is only validated.
    VpnData,
    /// `vpn.data` had none, and the mirror's keys decide.
    Mirror,
}

/// The `netns-*` keys that decide a connection, validated, in `vpn.data`'s terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub origin: Origin,
    pub keys: BTreeMap<String, String>,
    pub settings: NetnsSettings,
}

/// The mirror in `user.data`, under `vpn.data`'s key names; other `user.data` keys are someone
/// else's. A key under our prefix that is not one of ours is refused, as in `vpn.data`.
pub fn mirror_from_nm(conn: &NmConnection) -> Result<BTreeMap<String, String>, SettingsError> {
    let user_data = settings::section(conn, USER).string_map(DATA)?;
    let mut keys = BTreeMap::new();
    for (key, value) in user_data {
        if let Some(name) = key.strip_prefix(MIRROR_PREFIX) {
            if name.parse::<Key>().is_err() {
                return Err(SettingsError::UnknownMirrorKey { key });
            }
            keys.insert(name.to_owned(), value);
        }
    }
    Ok(keys)
}

/// The keys that decide `conn`: `vpn.data`'s when it has any `netns-*` key, so that an explicit
/// `netns-isolate=no` there wins, otherwise the mirror's. Both are validated, so that a typo in
/// either is found; the rule against static ipv4/ipv6 settings applies to the deciding keys only.
pub fn decide(conn: &NmConnection, info: &ConnectionInfo) -> Result<Decided, SettingsError> {
    let vpn_data = settings::vpn_data_from_nm(conn)?;
    let mirror = mirror_from_nm(conn)?;
    let in_vpn_data = netns_keys(&vpn_data);
    let mirror_error = |e| SettingsError::Mirror(Box::new(e));
    if in_vpn_data.is_empty() && !mirror.is_empty() {
        let settings = settings::parse(&mirror, info).map_err(mirror_error)?;
        return Ok(Decided {
            origin: Origin::Mirror,
            keys: mirror,
            settings,
        });
    }
    let shape_only = ConnectionInfo {
        ipv4: IpSettings::default(),
        ipv6: IpSettings::default(),
        ..info.clone()
    };
    settings::parse(&mirror, &shape_only).map_err(mirror_error)?;
    Ok(Decided {
        origin: Origin::VpnData,
        settings: settings::parse(&vpn_data, info)?,
        keys: in_vpn_data,
    })
}

/// The `netns-*` keys of `data`.
fn netns_keys(data: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    data.iter()
        .filter(|(k, _)| is_netns_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `conn` with `keys` (in `vpn.data`'s terms) as its only `netns-*` keys, in `vpn.data` and in
/// the mirror. Other keys of both settings stay.
pub fn enable(
    conn: NmConnection,
    keys: &BTreeMap<String, String>,
) -> Result<NmConnection, SettingsError> {
    let conn = disable(conn)?;
    let mut vpn_data = settings::vpn_data_from_nm(&conn)?;
    vpn_data.extend(keys.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut user_data = settings::section(&conn, USER).string_map(DATA)?;
    user_data.extend(keys.iter().map(|(k, v)| (mirror_key(k), v.clone())));
    Ok(with_data(with_data(conn, VPN, vpn_data), USER, user_data))
}

/// `conn` without any `netns-*` key in `vpn.data` and without the mirror. A `user` setting left
/// empty is removed, as it was before `enable`.
pub fn disable(conn: NmConnection) -> Result<NmConnection, SettingsError> {
    let vpn_data = strip_netns_keys(&settings::vpn_data_from_nm(&conn)?);
    let mut user_data = settings::section(&conn, USER).string_map(DATA)?;
    user_data.retain(|k, _| !k.starts_with(MIRROR_PREFIX));
    let mut conn = with_data(conn, VPN, vpn_data);
    if user_data.is_empty() {
        if let Some(user) = conn.get_mut(USER) {
            user.remove(DATA);
            if user.is_empty() {
                conn.remove(USER);
            }
        }
        Ok(conn)
    } else {
        Ok(with_data(conn, USER, user_data))
    }
}

/// `conn` with the mirror's keys put back into `vpn.data`, or `None` when there is nothing to put
/// back: `vpn.data` has `netns-*` keys of its own (they may have been set since), or there is no
/// mirror.
pub fn restore(conn: NmConnection) -> Result<Option<NmConnection>, SettingsError> {
    let mut vpn_data = settings::vpn_data_from_nm(&conn)?;
    let mirror = mirror_from_nm(&conn)?;
    if mirror.is_empty() || has_netns_key(&vpn_data) {
        return Ok(None);
    }
    vpn_data.extend(mirror);
    Ok(Some(with_data(conn, VPN, vpn_data)))
}

/// Whether `conn` has a mirror or `netns-*` keys in `vpn.data`.
pub fn has_keys(conn: &NmConnection) -> Result<bool, SettingsError> {
    let vpn_data = settings::vpn_data_from_nm(conn)?;
    Ok(!mirror_from_nm(conn)?.is_empty() || has_netns_key(&vpn_data))
}

fn has_netns_key(data: &BTreeMap<String, String>) -> bool {
    data.keys().any(|k| is_netns_key(k))
}

fn with_data(
    mut conn: NmConnection,
    setting: &str,
    data: BTreeMap<String, String>,
) -> NmConnection {
    let data: HashMap<String, String> = data.into_iter().collect();
    conn.entry(setting.to_owned())
        .or_default()
        .insert(DATA.to_owned(), OwnedVariant::from(data));
    conn
}
