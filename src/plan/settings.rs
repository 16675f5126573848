//! The `netns-*` keys of `vpn.data` and the connection settings they depend on.
//!
//! Pure: nothing here touches the system.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use zbus::{OwnedVariant, Variant};

use super::nm::{DictLabel, Expected, Reader};

/// Every way the connection's settings can be rejected. Each message names the key and value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("invalid namespace name {value:?}: {reason}")]
    InvalidName { value: String, reason: &'static str },
    #[error("{key}: invalid value {value:?}: {reason}")]
    InvalidValue {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("unknown key {key:?} in vpn.data; the known ones are {}", known_keys())]
    UnknownKey { key: String },
    #[error(
        "unknown key {key:?} in user.data; the known ones are {} after {}",
        known_keys(),
        super::mirror::MIRROR_PREFIX
    )]
    UnknownMirrorKey { key: String },
    /// In the copy of the keys that `nm-vpn-netns enable` keeps in `user.data`.
    #[error("in user.data, the copy of the netns-* keys that nm-vpn-netns enable keeps")]
    Mirror(#[source] Box<SettingsError>),
    #[error(
        "{} set; an isolated VPN cannot use static ipv4/ipv6 settings because NetworkManager \
         would apply them outside the namespace",
        is_or_are(keys)
    )]
    StaticSettings { keys: Vec<String> },
    #[error("{key} is missing from the connection")]
    Missing { key: &'static str },
    #[error("{key}: expected D-Bus type {expected}, got {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
}

/// A value that one of the `FromStr` types below refused, before it is tied to its key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid value {value:?}: {reason}")]
pub struct InvalidValue {
    pub value: String,
    pub reason: &'static str,
}

impl InvalidValue {
    fn new(value: &str, reason: &'static str) -> Self {
        InvalidValue {
            value: value.to_owned(),
            reason,
        }
    }

    /// The same refusal, tied to the key whose value it was.
    fn of(self, key: &'static str) -> SettingsError {
        SettingsError::InvalidValue {
            key,
            value: self.value,
            reason: self.reason,
        }
    }
}

fn known_keys() -> String {
    Key::ALL.map(Key::as_str).join(", ")
}

fn is_or_are(keys: &[String]) -> String {
    match keys {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(", ")),
    }
}

/// Every `vpn.data` key is ours if it starts with this, so a typo is refused rather than
/// forwarded to the stock plugin or silently ignored.
pub const KEY_PREFIX: &str = "netns-";

pub fn is_netns_key(key: &str) -> bool {
    key.starts_with(KEY_PREFIX)
}

/// The `netns-*` keys of `vpn.data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Isolate,
    Persistent,
    Name,
    Timeout,
}

/// One key as users see it. [`Key::spec`] is the one table of them: the parser takes the names
/// from it, and nm-vpn-netns(5) and the README's table are rendered from it (tests hold the
/// defaults to the parser's and the README to the table). Text in backticks is literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub name: &'static str,
    pub values: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

const FLAG_VALUES: &str = "`yes` or `no` (also `true`/`false`/`1`/`0`, in any case)";

impl Key {
    pub const ALL: [Key; 4] = [Key::Isolate, Key::Persistent, Key::Name, Key::Timeout];

    pub const fn spec(self) -> KeySpec {
        match self {
            Key::Isolate => KeySpec {
                name: "netns-isolate",
                values: FLAG_VALUES,
                default: "no",
                meaning: "Isolates this VPN in a network namespace of its own.",
            },
            Key::Persistent => KeySpec {
                name: "netns-persistent",
                values: FLAG_VALUES,
                default: "no",
                meaning: "Keeps the namespace and its DNS files after disconnect and reuses them, \
                          so that programs inside survive reconnects.",
            },
            Key::Name => KeySpec {
                name: "netns-name",
                values: "`uuid`, `name`, or a literal namespace name",
                default: "name",
                meaning: "Names the namespace. `uuid` means connection.uuid. `name` means \
                          connection.id made into a valid name. A literal is used as given.",
            },
            Key::Timeout => KeySpec {
                name: "netns-timeout",
                values: "milliseconds, 1 to 30000",
                default: "2000",
                meaning: "How long the isolation step may take before the VPN fails and \
                          everything is undone.",
            },
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.spec().name
    }
}

impl FromStr for Key {
    type Err = SettingsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Key::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| SettingsError::UnknownKey { key: s.to_owned() })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A yes/no value: `yes`/`no`, `true`/`false`, `1`/`0`, in any case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl FromStr for Flag {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let is = |words: [&str; 3]| words.iter().any(|w| s.eq_ignore_ascii_case(w));
        if is(["yes", "true", "1"]) {
            Ok(Flag(true))
        } else if is(["no", "false", "0"]) {
            Ok(Flag(false))
        } else {
            Err(InvalidValue::new(s, "expected yes/no/true/false/1/0"))
        }
    }
}

/// Where the namespace name comes from (`netns-name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NameSource {
    /// connection.uuid
    Uuid,
    /// connection.id made valid
    #[default]
    Name,
    Literal(NetnsName),
}

impl FromStr for NameSource {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uuid" => Ok(NameSource::Uuid),
            "name" => Ok(NameSource::Name),
            // `UUID` as a literal would be a surprise to whoever meant the keyword.
            _ if s.eq_ignore_ascii_case("uuid") || s.eq_ignore_ascii_case("name") => {
                Err(InvalidValue::new(
                    s,
                    "the keywords uuid and name are lower case and cannot be names",
                ))
            }
            _ => NetnsName::check(s)
                .map(|()| NameSource::Literal(NetnsName(s.to_owned())))
                .map_err(|reason| InvalidValue::new(s, reason)),
        }
    }
}

impl NameSource {
    pub fn resolve(&self, id: &str, uuid: &str) -> Result<NetnsName, SettingsError> {
        let from_uuid = || {
            NetnsName::check(uuid)
                .map(|()| NetnsName(uuid.to_owned()))
                .map_err(|reason| InvalidValue::new(uuid, reason).of("connection.uuid"))
        };
        match self {
            NameSource::Uuid => from_uuid(),
            NameSource::Name => name_from_id(id).map_or_else(from_uuid, Ok),
            NameSource::Literal(name) => Ok(name.clone()),
        }
    }
}

/// Makes a namespace name from connection.id, or `None` if nothing usable is left.
pub fn name_from_id(id: &str) -> Option<NetnsName> {
    let mut name = String::with_capacity(id.len());
    for c in id.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_start_matches(['.', '-']).trim_end_matches('-');
    // Only ASCII is left, so any byte index is a char boundary.
    let name = name[..name.len().min(NETNS_NAME_MAX)].trim_end_matches('-');
    name.parse().ok()
}

/// Bound on the isolation step (`netns-timeout`), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(Duration);

impl Timeout {
    /// NM fails a VPN whose `Config` is 60 s late, and the step must finish well before that.
    pub const MAX_MS: u64 = 30_000;
    pub const DEFAULT_MS: u64 = 2_000;

    pub fn duration(self) -> Duration {
        self.0
    }
}

impl Default for Timeout {
    fn default() -> Self {
        Timeout(Duration::from_millis(Self::DEFAULT_MS))
    }
}

impl FromStr for Timeout {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Digits only: u64's own parser would also take `+5`.
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u64>().ok())
            .flatten()
            .filter(|ms| (1..=Self::MAX_MS).contains(ms))
            .map(|ms| Timeout(Duration::from_millis(ms)))
            .ok_or_else(|| InvalidValue::new(s, "expected milliseconds from 1 to 30000"))
    }
}

/// The `ipv4`/`ipv6` keys that NM would apply on the uplink, outside the namespace.
/// `dns-data` is newer NM's string form of `dns`.
pub const STATIC_IP_KEYS: &[&str] = &[
    "addresses",
    "address-data",
    "routes",
    "route-data",
    "gateway",
    "dns",
    "dns-data",
    "dns-search",
];

/// What this module needs from one of a connection's `ipv4`/`ipv6` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSettings {
    pub method: Option<String>,
    pub never_default: bool,
    /// The members of [`STATIC_IP_KEYS`] that are present and non-empty.
    pub static_keys: Vec<&'static str>,
}

/// What this module needs from the connection NM hands to `Connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub id: String,
    pub uuid: String,
    pub permissions: Vec<String>,
    pub ipv4: IpSettings,
    pub ipv6: IpSettings,
}

/// The `a{sa{sv}}` connection dict of `Connect`, `NeedSecrets` and friends.
pub type NmConnection = HashMap<String, HashMap<String, OwnedVariant>>;

/// A section of the connection dict (`connection`, `ipv4`, ...); errors name a key of it as
/// `section.key`, with the D-Bus type it should have.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Section(&'static str);

impl DictLabel for Section {
    type Error = SettingsError;

    fn wrong_type(self, key: &'static str, expected: Expected, v: &Variant<'_>) -> SettingsError {
        SettingsError::WrongType {
            key: format!("{}.{key}", self.0),
            expected: expected.signature,
            found: v.value_signature().to_string(),
        }
    }
}

/// One section of `conn`; a section NM left out (it omits defaults) reads as empty.
pub(crate) fn section<'a>(conn: &'a NmConnection, name: &'static str) -> Reader<'a, Section> {
    Reader::optional(Section(name), conn.get(name))
}

impl IpSettings {
    fn from_nm(conn: &NmConnection, family: &'static str) -> Result<Self, SettingsError> {
        let ip = section(conn, family);
        Ok(IpSettings {
            method: ip.str("method")?.map(str::to_owned),
            never_default: ip.bool("never-default")?.unwrap_or(false),
            static_keys: STATIC_IP_KEYS
                .iter()
                .copied()
                .filter(|k| ip.is_set(k))
                .collect(),
        })
    }
}

impl ConnectionInfo {
    pub fn from_nm(conn: &NmConnection) -> Result<Self, SettingsError> {
        let connection = section(conn, "connection");
        let id = connection.str("id")?;
        let uuid = connection.str("uuid")?;
        Ok(ConnectionInfo {
            id: id
                .ok_or(SettingsError::Missing {
                    key: "connection.id",
                })?
                .to_owned(),
            uuid: uuid
                .ok_or(SettingsError::Missing {
                    key: "connection.uuid",
                })?
                .to_owned(),
            permissions: connection
                .strs("permissions")?
                .into_iter()
                .map(str::to_owned)
                .collect(),
            ipv4: IpSettings::from_nm(conn, "ipv4")?,
            ipv6: IpSettings::from_nm(conn, "ipv6")?,
        })
    }
}

/// The users `connection.permissions` names, in order. NM writes `user:NAME:`, the last field
/// reserved (nm-setting-connection.c); `user:NAME` is read the same.
pub fn permission_users(permissions: &[String]) -> Vec<&str> {
    permissions
        .iter()
        .filter_map(|p| p.strip_prefix("user:"))
        .map(|rest| rest.split(':').next().unwrap_or_default())
        .filter(|user| !user.is_empty())
        .collect()
}

/// `vpn.data` of the connection dict. Only `vpn.data` is read: `vpn.secrets` never leaves NM's
/// dict through this module, not even in an error.
pub fn vpn_data_from_nm(conn: &NmConnection) -> Result<BTreeMap<String, String>, SettingsError> {
    section(conn, "vpn").string_map("data")
}

/// `vpn.timeout` in seconds: NetworkManager's bound on the connect; absent or 0 for its default.
pub fn vpn_timeout_from_nm(conn: &NmConnection) -> Result<Option<u32>, SettingsError> {
    Ok(section(conn, "vpn").u32("timeout")?.filter(|&s| s > 0))
}

/// `vpn.data` as the stock plugin must see it: nm-openvpn refuses keys it does not know, and
/// nm-openconnect, which only warns of them, has no business with ours either.
pub fn strip_netns_keys(vpn_data: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    vpn_data
        .iter()
        .filter(|(k, _)| !is_netns_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The validated `netns-*` settings of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsSettings {
    pub isolate: bool,
    pub persistent: bool,
    pub name: NetnsName,
    pub name_source: NameSource,
    pub timeout: Duration,
    /// No `connection.permissions`: only such a connection may reuse a namespace we did not make.
    pub system_connection: bool,
    pub never_default_v4: bool,
    pub never_default_v6: bool,
    pub connection_id: String,
    pub connection_uuid: String,
}

/// NetworkManager-openvpn's service: `service=` of its `.name` file.
pub const OPENVPN_SERVICE: &str = "org.freedesktop.NetworkManager.openvpn";

/// NetworkManager-openvpn's key for openvpn's `--tun-mtu`.
pub const TUNNEL_MTU: &str = "tunnel-mtu";

/// `tunnel-mtu` of `vpn_data` for a connection of the VPN `service`: `None` when unset or empty,
/// as nm-openvpn takes it, which also refuses a value that is not an integer. Its range depends on
/// the tun's address families, which only the plan knows. The key is nm-openvpn's alone, so for
/// any other service it means nothing: nm-openconnect's MTU key is `mtu`, which openconnect sets on
/// the tun itself (`--mtu`).
pub fn tunnel_mtu(
    service: &str,
    vpn_data: &BTreeMap<String, String>,
) -> Result<Option<u32>, SettingsError> {
    if service != OPENVPN_SERVICE {
        return Ok(None);
    }
    match vpn_data.get(TUNNEL_MTU).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| InvalidValue::new(s, "expected an integer").of(TUNNEL_MTU)),
    }
}

fn parse_value<T: FromStr<Err = InvalidValue>>(key: Key, value: &str) -> Result<T, SettingsError> {
    value.parse().map_err(|e: InvalidValue| e.of(key.as_str()))
}

/// Validates every `netns-*` key of `vpn_data`, even without `netns-isolate=yes`, so that a
/// typo is found before the user relies on it. Other keys belong to the stock plugin.
pub fn parse(
    vpn_data: &BTreeMap<String, String>,
    conn: &ConnectionInfo,
) -> Result<NetnsSettings, SettingsError> {
    let (mut isolate, mut persistent) = (Flag::default(), Flag::default());
    let (mut name_source, mut timeout) = (NameSource::default(), Timeout::default());
    for (key, v) in vpn_data.iter().filter(|(k, _)| is_netns_key(k)) {
        match key.parse()? {
            k @ Key::Isolate => isolate = parse_value(k, v)?,
            k @ Key::Persistent => persistent = parse_value(k, v)?,
            k @ Key::Name => name_source = parse_value(k, v)?,
            k @ Key::Timeout => timeout = parse_value(k, v)?,
        }
    }
    if isolate.0 {
        let keys: Vec<String> = [("ipv4", &conn.ipv4), ("ipv6", &conn.ipv6)]
            .iter()
            .flat_map(|(family, ip)| ip.static_keys.iter().map(move |k| format!("{family}.{k}")))
            .collect();
        if !keys.is_empty() {
            return Err(SettingsError::StaticSettings { keys });
        }
    }
    Ok(NetnsSettings {
        isolate: isolate.0,
        persistent: persistent.0,
        name: name_source.resolve(&conn.id, &conn.uuid)?,
        name_source,
        timeout: timeout.duration(),
        system_connection: conn.permissions.is_empty(),
        never_default_v4: conn.ipv4.never_default,
        never_default_v6: conn.ipv6.never_default,
        connection_id: conn.id.clone(),
        connection_uuid: conn.uuid.clone(),
    })
}

/// Longest namespace name we accept; iproute2 itself allows any file name, but a short bound
/// keeps `/run/netns/NAME` and `/etc/netns/NAME` readable and safe.
pub const NETNS_NAME_MAX: usize = 64;

/// What a namespace name may be, as nm-vpn-netns(5) and the README say it.
pub const NAME_RULE: &str = "A namespace name has 1 to 64 characters from `A-Z a-z 0-9 _ . -` \
                             and does not start with `.` or `-`.";

/// A validated namespace name: `^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`.
///
/// Holding one proves the name cannot escape `/run/netns` or `/etc/netns`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsName(String);

impl NetnsName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check(s: &str) -> Result<(), &'static str> {
        let first = s.bytes().next().ok_or("it is empty")?;
        if s.len() > NETNS_NAME_MAX {
            return Err("it is longer than 64 characters");
        }
        if !(first.is_ascii_alphanumeric() || first == b'_') {
            return Err("it must start with a letter, a digit or '_'");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err("only A-Z, a-z, 0-9, '_', '.' and '-' are allowed");
        }
        Ok(())
    }
}

impl FromStr for NetnsName {
    type Err = SettingsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::check(s)
            .map(|()| NetnsName(s.to_owned()))
            .map_err(|reason| SettingsError::InvalidName {
                value: s.to_owned(),
                reason,
            })
    }
}

impl fmt::Display for NetnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b";

    fn conn(id: &str) -> ConnectionInfo {
        ConnectionInfo {
            id: id.to_owned(),
            uuid: UUID.to_owned(),
            ..ConnectionInfo::default()
        }
    }

    #[test]
    fn permission_users_as_nm_writes_them() {
        let permissions = ["user:alice:", "user:bob", "group:x:", "user::"].map(String::from);
        assert_eq!(permission_users(&permissions), ["alice", "bob"]);
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse_with(pairs: &[(&str, &str)]) -> Result<NetnsSettings, SettingsError> {
        parse(&data(pairs), &conn("work"))
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        parse_with(pairs).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let s = parse_with(&[("remote", "vpn.example.com")]).unwrap();
        assert!(!s.isolate && !s.persistent);
        assert_eq!(s.name.as_str(), "work");
        assert_eq!(s.name_source, NameSource::Name);
        assert_eq!(s.timeout, Duration::from_millis(2000));
        assert!(s.system_connection);
        assert!(!s.never_default_v4 && !s.never_default_v6);
        assert_eq!(
            (s.connection_id.as_str(), s.connection_uuid.as_str()),
            ("work", UUID)
        );
    }

    /// The table's defaults are the parser's, and its bounds are the values' own.
    #[test]
    fn key_table_holds_the_parsers_defaults() {
        let defaults = parse_with(&[]).unwrap();
        for key in Key::ALL {
            let spec = key.spec();
            let explicit = parse_with(&[(spec.name, spec.default)]).unwrap();
            assert_eq!(explicit, defaults, "{}={}", spec.name, spec.default);
        }
        let timeout = Key::Timeout.spec().values;
        assert!(
            timeout.ends_with(&format!(" {}", Timeout::MAX_MS)),
            "{timeout}"
        );
        assert!(
            NAME_RULE.contains(&format!(" {NETNS_NAME_MAX} ")),
            "{NAME_RULE}"
        );
    }

    #[test]
    fn keys_round_trip() {
        for key in Key::ALL {
            assert_eq!(key.as_str().parse::<Key>().unwrap(), key);
            assert!(is_netns_key(key.as_str()));
        }
    }

    #[test]
    fn bool_spellings() {
        for (word, want) in [
            ("yes", true),
            ("YES", true),
            ("True", true),
            ("1", true),
            ("no", false),
            ("No", false),
            ("FALSE", false),
            ("0", false),
        ] {
            let s = parse_with(&[("netns-isolate", word), ("netns-persistent", word)]).unwrap();
            assert_eq!((s.isolate, s.persistent), (want, want), "{word}");
        }
        for bad in ["maybe", "", " yes", "2", "y"] {
            assert!(bad.parse::<Flag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_bool_names_key_and_value() {
        assert_eq!(
            err(&[("netns-isolate", "maybe")]),
            "netns-isolate: invalid value \"maybe\": expected yes/no/true/false/1/0"
        );
        assert!(err(&[("netns-persistent", "on")]).starts_with("netns-persistent: "));
    }

    #[test]
    fn unknown_netns_key() {
        let e = err(&[("netns-foo", "1")]);
        assert!(e.contains("\"netns-foo\""), "{e}");
        assert!(e.contains("netns-isolate, netns-persistent"), "{e}");
    }

    #[test]
    fn other_keys_ignored() {
        assert!(parse_with(&[("Netns-isolate", "maybe"), ("cipher", "AES-256-GCM")]).is_ok());
    }

    #[test]
    fn validated_even_without_isolation() {
        for pairs in [
            [("netns-isolate", "no"), ("netns-timeout", "0")],
            [("netns-isolate", "no"), ("netns-name", "../x")],
            [("netns-isolate", "0"), ("netns-bogus", "x")],
            [("netns-persistent", "maybe"), ("remote", "x")],
        ] {
            assert!(parse_with(&pairs).is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn timeouts() {
        for bad in [
            "0",
            "-1",
            "abc",
            "30001",
            "",
            "+5",
            " 5",
            "99999999999999999999999",
        ] {
            assert_eq!(
                err(&[("netns-timeout", bad)]),
                format!(
                    "netns-timeout: invalid value {bad:?}: expected milliseconds from 1 to 30000"
                )
            );
        }
        for (ok, ms) in [("1", 1), ("30000", 30000), ("2500", 2500)] {
            let s = parse_with(&[("netns-timeout", ok)]).unwrap();
            assert_eq!(s.timeout, Duration::from_millis(ms));
        }
    }

    #[test]
    fn bad_literal_names() {
        let long = "a".repeat(65);
        for bad in [
            "../x", "a/b", ".", "", &long, "wörk", "-x", ".x", "a b", "UUID", "Name",
        ] {
            let e = err(&[("netns-name", bad)]);
            assert!(
                e.starts_with(&format!("netns-name: invalid value {bad:?}: ")),
                "{e}"
            );
        }
    }

    /// The messages NM logs, whole in `Display` and the same through the chain renderer.
    #[test]
    fn messages_are_whole_and_rendered_once() {
        let mut with_dns = conn("work");
        with_dns.ipv4.static_keys = vec!["dns", "dns-data"];
        for (pairs, info, text) in [
            (
                &[("netns-name", "../etc")][..],
                &conn("work"),
                "netns-name: invalid value \"../etc\": it must start with a letter, a digit or '_'",
            ),
            (
                &[("netns-isolate", "maybe")],
                &conn("work"),
                "netns-isolate: invalid value \"maybe\": expected yes/no/true/false/1/0",
            ),
            (
                &[("netns-foo", "1")],
                &conn("work"),
                "unknown key \"netns-foo\" in vpn.data; the known ones are netns-isolate, \
                 netns-persistent, netns-name, netns-timeout",
            ),
            (
                &[("netns-isolate", "yes")],
                &with_dns,
                "ipv4.dns, ipv4.dns-data are set; an isolated VPN cannot use static ipv4/ipv6 \
                 settings because NetworkManager would apply them outside the namespace",
            ),
        ] {
            let e = parse(&data(pairs), info).unwrap_err();
            assert_eq!(e.to_string(), text);
            assert_eq!(crate::report::chain(&e), text);
        }
    }

    #[test]
    fn literal_names_kept_verbatim() {
        let max = "b".repeat(64);
        for ok in ["_x", "Work.VPN-1", "0", &max, "x-", "x."] {
            let s = parse_with(&[("netns-name", ok)]).unwrap();
            assert_eq!(s.name.as_str(), ok);
            assert_eq!(s.name_source, NameSource::Literal(ok.parse().unwrap()));
        }
    }

    #[test]
    fn name_keywords() {
        let s = parse(&data(&[("netns-name", "uuid")]), &conn("My Work VPN")).unwrap();
        assert_eq!((s.name.as_str(), &s.name_source), (UUID, &NameSource::Uuid));
        let s = parse(&data(&[("netns-name", "name")]), &conn("My Work VPN")).unwrap();
        assert_eq!(
            (s.name.as_str(), &s.name_source),
            ("My-Work-VPN", &NameSource::Name)
        );
    }

    #[test]
    fn names_from_id() {
        let long = "x".repeat(100);
        let x63 = "x".repeat(63);
        for (id, want) in [
            ("My Work VPN", "My-Work-VPN"),
            ("a/b c", "a-b-c"),
            ("..hidden", "hidden"),
            ("ünïcode", "n-code"),
            ("wörk", "w-rk"),
            ("_under", "_under"),
            ("a  \t\n b", "a-b"),
            ("trail. ", "trail."),
            (long.as_str(), &long[..64]),
            (&format!("{x63} y"), &x63),
        ] {
            assert_eq!(name_from_id(id).unwrap().as_str(), want, "{id:?}");
        }
        for empty in ["---", "", "...", "ü ö", "/", ".-."] {
            assert_eq!(name_from_id(empty), None, "{empty:?}");
            let s = parse(&BTreeMap::new(), &conn(empty)).unwrap();
            assert_eq!(s.name.as_str(), UUID);
        }
    }

    #[test]
    fn bad_uuid_names_its_key() {
        let mut c = conn("---");
        c.uuid = "../evil".into();
        let e = parse(&BTreeMap::new(), &c).unwrap_err().to_string();
        assert!(
            e.starts_with("connection.uuid: invalid value \"../evil\""),
            "{e}"
        );
    }

    #[test]
    fn hostile_values_are_escaped() {
        let e = err(&[("netns-name", "x\n\u{1b}[31mred")]);
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn static_settings_refused_only_when_isolated() {
        let mut c = conn("work");
        c.ipv4.static_keys = vec!["dns"];
        let isolated = data(&[("netns-isolate", "yes")]);
        assert_eq!(
            parse(&isolated, &c).unwrap_err().to_string(),
            "ipv4.dns is set; an isolated VPN cannot use static ipv4/ipv6 settings because \
             NetworkManager would apply them outside the namespace"
        );
        c.ipv6.static_keys = vec!["addresses"];
        let e = parse(&isolated, &c).unwrap_err().to_string();
        assert!(e.starts_with("ipv4.dns, ipv6.addresses are set;"), "{e}");
        assert!(parse(&data(&[("netns-isolate", "no")]), &c).is_ok());
    }

    #[test]
    fn permissions_make_a_user_connection() {
        let mut c = conn("work");
        c.permissions = vec!["user:alice:".into()];
        c.ipv4.never_default = true;
        let s = parse(&BTreeMap::new(), &c).unwrap();
        assert!(!s.system_connection);
        assert!(s.never_default_v4 && !s.never_default_v6);
    }

    #[test]
    fn strips_only_netns_keys() {
        let d = data(&[
            ("netns-isolate", "yes"),
            ("netns-whatever", "x"),
            ("remote", "vpn.example.com"),
            ("connection-type", "tls"),
        ]);
        assert_eq!(
            strip_netns_keys(&d),
            data(&[("remote", "vpn.example.com"), ("connection-type", "tls")])
        );
    }

    use crate::plan::owned as ov;

    fn section(pairs: Vec<(&str, OwnedVariant)>) -> HashMap<String, OwnedVariant> {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// Shaped like what NM 1.42 passes to nm-openvpn's `Connect`.
    fn nm_dict() -> NmConnection {
        let vpn_data: HashMap<String, String> = data(&[
            ("connection-type", "password-tls"),
            ("remote", "vpn.example.com:1194"),
            ("netns-isolate", "yes"),
            ("netns-name", "uuid"),
        ])
        .into_iter()
        .collect();
        let secrets: HashMap<String, String> =
            [("password".to_owned(), "hunter2".to_owned())].into();
        NmConnection::from([
            (
                "connection".to_owned(),
                section(vec![
                    ("id", ov("Work VPN")),
                    ("uuid", ov(UUID)),
                    ("type", ov("vpn")),
                    ("permissions", ov(vec!["user:alice:"])),
                    ("autoconnect", ov(false)),
                ]),
            ),
            (
                "vpn".to_owned(),
                section(vec![
                    ("service-type", ov("org.freedesktop.NetworkManager.openvpn")),
                    ("data", OwnedVariant::from(vpn_data)),
                    ("secrets", OwnedVariant::from(secrets)),
                ]),
            ),
            (
                "ipv4".to_owned(),
                section(vec![
                    ("method", ov("auto")),
                    ("never-default", ov(true)),
                    ("addresses", ov(Vec::<Vec<u32>>::new())),
                    ("dns", ov(Vec::<u32>::new())),
                    ("dns-search", ov(Vec::<&str>::new())),
                    (
                        "route-data",
                        ov(Vec::<HashMap<String, OwnedVariant>>::new()),
                    ),
                ]),
            ),
            (
                "ipv6".to_owned(),
                section(vec![("method", ov("auto")), ("addr-gen-mode", ov(1i32))]),
            ),
        ])
    }

    #[test]
    fn decodes_nm_dict() {
        let d = nm_dict();
        let c = ConnectionInfo::from_nm(&d).unwrap();
        assert_eq!(
            c,
            ConnectionInfo {
                id: "Work VPN".into(),
                uuid: UUID.into(),
                permissions: vec!["user:alice:".into()],
                ipv4: IpSettings {
                    method: Some("auto".into()),
                    never_default: true,
                    static_keys: vec![],
                },
                ipv6: IpSettings {
                    method: Some("auto".into()),
                    ..IpSettings::default()
                },
            }
        );
        let vpn_data = vpn_data_from_nm(&d).unwrap();
        assert!(!format!("{vpn_data:?}{c:?}").contains("hunter2"));
        let s = parse(&vpn_data, &c).unwrap();
        assert!(s.isolate && !s.system_connection && s.never_default_v4);
        assert_eq!(s.name.as_str(), UUID);
        assert_eq!(
            strip_netns_keys(&vpn_data).keys().collect::<Vec<_>>(),
            ["connection-type", "remote"]
        );
    }

    #[test]
    fn decodes_static_settings() {
        let fd00_198_19 = "fd00:198:19::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let mut d = nm_dict();
        let ipv4 = d.get_mut("ipv4").unwrap();
        ipv4.insert("dns".into(), ov(vec![u32::from_ne_bytes([192, 0, 2, 53])]));
        ipv4.insert("gateway".into(), ov(""));
        d.get_mut("ipv6").unwrap().insert(
            "addresses".into(),
            ov(vec![(fd00_198_19.to_vec(), 64u32, vec![0u8; 16])]),
        );
        let c = ConnectionInfo::from_nm(&d).unwrap();
        assert_eq!(c.ipv4.static_keys, ["dns"]);
        assert_eq!(c.ipv6.static_keys, ["addresses"]);
        let e = parse(&vpn_data_from_nm(&d).unwrap(), &c).unwrap_err();
        assert_eq!(
            e,
            SettingsError::StaticSettings {
                keys: vec!["ipv4.dns".into(), "ipv6.addresses".into()]
            }
        );
    }

    #[test]
    fn minimal_nm_dict_uses_defaults() {
        let d = NmConnection::from([(
            "connection".to_owned(),
            section(vec![("id", ov("w")), ("uuid", ov(UUID))]),
        )]);
        let c = ConnectionInfo::from_nm(&d).unwrap();
        assert_eq!(c, conn("w"));
        assert!(vpn_data_from_nm(&d).unwrap().is_empty());
    }

    #[test]
    fn nm_type_mismatches() {
        let mut d = nm_dict();
        d.get_mut("ipv4")
            .unwrap()
            .insert("never-default".into(), ov("yes"));
        assert_eq!(
            ConnectionInfo::from_nm(&d).unwrap_err().to_string(),
            "ipv4.never-default: expected D-Bus type b, got s"
        );

        let mut d = nm_dict();
        d.get_mut("connection").unwrap().remove("uuid");
        assert_eq!(
            ConnectionInfo::from_nm(&d).unwrap_err(),
            SettingsError::Missing {
                key: "connection.uuid"
            }
        );

        let mut d = nm_dict();
        d.get_mut("connection")
            .unwrap()
            .insert("permissions".into(), ov(vec![1u32]));
        assert!(ConnectionInfo::from_nm(&d)
            .unwrap_err()
            .to_string()
            .starts_with("connection.permissions: expected D-Bus type as, got au"));

        let mut d = nm_dict();
        let bad: HashMap<String, u32> = [("netns-isolate".to_owned(), 1)].into();
        d.get_mut("vpn")
            .unwrap()
            .insert("data".into(), OwnedVariant::from(bad));
        assert_eq!(
            vpn_data_from_nm(&d).unwrap_err().to_string(),
            "vpn.data: expected D-Bus type a{ss}, got a{su}"
        );
    }
}
