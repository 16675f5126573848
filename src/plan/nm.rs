//! NetworkManager's dicts and the one typed [`Reader`] that reads them all: the `Config`,
//! `Ip4Config` and `Ip6Config` dicts of a VPN plugin, and the sections of a connection dict.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use zbus::{OwnedVariant, Variant};

use super::PlanError;

/// A D-Bus `a{sv}` as NetworkManager's VPN plugin interface carries it.
pub type VarDict = HashMap<String, OwnedVariant>;

/// A dict value. Plain values carry no file descriptors, so making one owned cannot fail.
pub fn owned<'a>(v: impl Into<Variant<'a>>) -> OwnedVariant {
    OwnedVariant::try_from(v.into()).expect("plain values never carry file descriptors")
}

/// A dict from its entries.
pub fn var_dict(entries: Vec<(&str, OwnedVariant)>) -> VarDict {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

// Key names from NetworkManager's libnm-core-public/nm-vpn-dbus-interface.h.
pub const TUNDEV: &str = "tundev";
pub const MTU: &str = "mtu";
pub const BANNER: &str = "banner";
pub const GATEWAY: &str = "gateway";
pub const HAS_IP4: &str = "has-ip4";
pub const HAS_IP6: &str = "has-ip6";
pub const CAN_PERSIST: &str = "can-persist";
pub const INTERNAL_GATEWAY: &str = "internal-gateway";
pub const ADDRESS: &str = "address";
pub const PTP: &str = "ptp";
pub const PREFIX: &str = "prefix";
pub const DNS: &str = "dns";
pub const DOMAIN: &str = "domain";
pub const DOMAINS: &str = "domains";
pub const ROUTES: &str = "routes";
pub const PRESERVE_ROUTES: &str = "preserve-routes";
pub const NEVER_DEFAULT: &str = "never-default";

/// Which of NetworkManager's three VPN dicts a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictName {
    Config,
    Ip4Config,
    Ip6Config,
}

impl fmt::Display for DictName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DictName::Config => "Config",
            DictName::Ip4Config => "Ip4Config",
            DictName::Ip6Config => "Ip6Config",
        })
    }
}

/// The D-Bus type a key should have: its signature, and how a message describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub signature: &'static str,
    pub description: &'static str,
}

impl Expected {
    pub const fn new(signature: &'static str, description: &'static str) -> Self {
        Expected {
            signature,
            description,
        }
    }
}

pub const BOOL: Expected = Expected::new("b", "a boolean (b)");
pub const U32: Expected = Expected::new("u", "a uint32 (u)");
pub const STRING: Expected = Expected::new("s", "a string (s)");
pub const STRINGS: Expected = Expected::new("as", "an array of strings (as)");
pub const STRING_MAP: Expected = Expected::new("a{ss}", "a string-to-string dict (a{ss})");

/// Names a dict in the errors of its [`Reader`]: the planner's dicts and the connection's
/// settings each report a value of the wrong type in their own words.
pub trait DictLabel: Copy {
    type Error;

    fn wrong_type(self, key: &'static str, expected: Expected, v: &Variant<'_>) -> Self::Error;
}

impl DictLabel for DictName {
    type Error = PlanError;

    fn wrong_type(self, key: &'static str, expected: Expected, v: &Variant<'_>) -> PlanError {
        PlanError::WrongType {
            dict: self,
            key,
            expected: expected.description,
            found: v.value_signature().to_string(),
            value: v.to_string(),
        }
    }
}

/// Typed, checked access to one of NM's dicts; a dict NM left out reads as empty.
pub struct Reader<'a, L> {
    pub name: L,
    dict: Option<&'a VarDict>,
}

impl<'a, L: DictLabel> Reader<'a, L> {
    pub fn new(name: L, dict: &'a VarDict) -> Self {
        Reader {
            name,
            dict: Some(dict),
        }
    }

    /// A dict that may be absent, as a section NM omits from a connection.
    pub fn optional(name: L, dict: Option<&'a VarDict>) -> Self {
        Reader { name, dict }
    }

    pub fn get(&self, key: &str) -> Option<&'a Variant<'static>> {
        self.dict.and_then(|d| d.get(key)).map(|v| &**v)
    }

    pub fn wrong_type(&self, key: &'static str, expected: Expected, v: &Variant<'_>) -> L::Error {
        self.name.wrong_type(key, expected, v)
    }

    /// `key` through `decode`, which returns `None` for a value not of type `expected`.
    fn typed<T>(
        &self,
        key: &'static str,
        expected: Expected,
        decode: impl FnOnce(&'a Variant<'static>) -> Option<T>,
    ) -> Result<Option<T>, L::Error> {
        self.get(key)
            .map(|v| decode(v).ok_or_else(|| self.wrong_type(key, expected, v)))
            .transpose()
    }

    pub fn bool(&self, key: &'static str) -> Result<Option<bool>, L::Error> {
        self.typed(key, BOOL, |v| match v {
            Variant::Bool(b) => Some(*b),
            _ => None,
        })
    }

    pub fn u32(&self, key: &'static str) -> Result<Option<u32>, L::Error> {
        self.typed(key, U32, |v| match v {
            Variant::U32(n) => Some(*n),
            _ => None,
        })
    }

    pub fn str(&self, key: &'static str) -> Result<Option<&'a str>, L::Error> {
        self.typed(key, STRING, as_str)
    }

    /// An `as`; empty when absent.
    pub fn strs(&self, key: &'static str) -> Result<Vec<&'a str>, L::Error> {
        let strs = self.typed(key, STRINGS, |v| match v {
            Variant::Array(items) => items.iter().map(as_str).collect(),
            _ => None,
        })?;
        Ok(strs.unwrap_or_default())
    }

    /// An `a{ss}`; empty when absent.
    pub fn string_map(&self, key: &'static str) -> Result<BTreeMap<String, String>, L::Error> {
        let map = self.typed(key, STRING_MAP, |v| match v {
            Variant::Dict(d) => d
                .iter()
                .map(|(k, v)| Some((as_str(k)?.to_owned(), as_str(v)?.to_owned())))
                .collect(),
            _ => None,
        })?;
        Ok(map.unwrap_or_default())
    }

    /// Whether `key` is present and not empty. Unknown shapes count as set, so that a check
    /// built on this fails closed.
    pub fn is_set(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| match v {
            Variant::Array(a) => !a.is_empty(),
            Variant::Dict(d) => d.iter().next().is_some(),
            Variant::Str(s) => !s.is_empty(),
            _ => true,
        })
    }

    /// The items of the array `key` (`None` when absent), refused unless the whole value has
    /// D-Bus type `expected.signature`, so that an empty array of the wrong type is refused too.
    pub fn array(
        &self,
        key: &'static str,
        expected: Expected,
    ) -> Result<Option<&'a [Variant<'static>]>, L::Error> {
        self.typed(key, expected, |v| match v {
            Variant::Array(items) if v.value_signature() == expected.signature => {
                Some(items.inner())
            }
            _ => None,
        })
    }
}

impl Reader<'_, DictName> {
    pub fn invalid(
        &self,
        key: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> PlanError {
        PlanError::InvalidValue {
            dict: self.name,
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub fn missing(&self, key: &'static str, reason: impl Into<String>) -> PlanError {
        PlanError::MissingKey {
            dict: self.name,
            key,
            reason: reason.into(),
        }
    }
}

fn as_str<'a>(v: &'a Variant<'_>) -> Option<&'a str> {
    match v {
        Variant::Str(s) => Some(s.as_str()),
        _ => None,
    }
}
