//! The `netns-*` keys of `vpn.data` and the connection settings they depend on.
//!
//! Pure: nothing here touches the system.

use std::fmt;
use std::str::FromStr;

/// Every way the connection's settings can be rejected. Each message names the key and value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid namespace name {value:?}: {reason}")]
    InvalidName { value: String, reason: &'static str },
}

/// Longest namespace name we accept; iproute2 itself allows any file name, but a short bound
/// keeps `/run/netns/NAME` and `/etc/netns/NAME` readable and safe.
pub const NETNS_NAME_MAX: usize = 64;

/// A validated namespace name: `^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`.
///
/// Holding one proves the name cannot escape `/run/netns` or `/etc/netns`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsName(String);

impl NetnsName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NetnsName {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| ConfigError::InvalidName {
            value: s.to_owned(),
            reason,
        };
        let first = s.bytes().next().ok_or_else(|| invalid("it is empty"))?;
        if s.len() > NETNS_NAME_MAX {
            return Err(invalid("it is longer than 64 characters"));
        }
        if !(first.is_ascii_alphanumeric() || first == b'_') {
            return Err(invalid("it must start with a letter, a digit or '_'"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(invalid("only A-Z, a-z, 0-9, '_', '.' and '-' are allowed"));
        }
        Ok(NetnsName(s.to_owned()))
    }
}

impl fmt::Display for NetnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
