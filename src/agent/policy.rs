//! The administrator's policy, `/etc/nm-vpn-netns/agent.conf`: a GLib key file, read at each
//! `Isolate`, that confines which namespaces connections may take.
//!
//! ```text
//! [agent]
//! # Namespaces the agent did not create that system connections may use (default: none).
//! system-foreign-namespaces=lab;office
//! # How a user connection's name is formed: prefixed (u<UID>-NAME, the default) or as-given.
//! user-namespace-names=prefixed
//! # How many namespaces one user's connections may hold, leased or persistent (default 4).
//! max-namespaces-per-user=4
//! ```
//!
//! A missing file means these defaults. The file must be root's and writable by no one else,
//! since it decides what a user may do; any key or value it does not know is an error, so that a
//! typo never silently loosens or tightens the policy.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::keyfile::{self, KeyFileError};
use crate::plan::settings::{permission_users, NameSource, NetnsName, NETNS_NAME_MAX};

/// Where the agent reads its policy.
pub const POLICY_PATH: &str = "/etc/nm-vpn-netns/agent.conf";

/// The naming and ownership rules as users see them, in nm-vpn-netns(5) and the README (tests
/// hold both to this text).
pub const USER_NAME_RULE: &str = "A user's connection, one with `connection.permissions` \
     (`user:NAME`), gets the namespace `u<UID>-NAME`: UID is the numeric id of the user it \
     names, NAME the name above, and a name made from connection.id or connection.uuid is cut to fit 64 characters. \
     It may use only a namespace and an `/etc/netns/NAME` entry that nm-vpn-netns created for \
     it, and one user's connections hold at most 4 namespaces, connected or kept by \
     `netns-persistent`. A system connection may use a namespace that nm-vpn-netns did not \
     create only if the administrator lists it. `/etc/nm-vpn-netns/agent.conf` changes these \
     rules; see nm-vpn-netns-agent(8).";

const GROUP: &str = "agent";
const FOREIGN: &str = "system-foreign-namespaces";
const USER_NAMES: &str = "user-namespace-names";
const MAX_PER_USER: &str = "max-namespaces-per-user";
/// More than any one user needs, and few enough that a typo of an extra digit is caught.
const MAX_PER_USER_LIMIT: u32 = 1024;

/// How a user connection's namespace name is formed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserNames {
    /// `u<UID>-NAME`: no user can take a name that an administrator's unit or another user
    /// expects. The uid, not the user's name, since a user name may hold `-` and `.` (and `@`
    /// with SSSD): `u-a-b-c` would be both user `a-b`'s `c` and user `a`'s `b-c`, while a
    /// number ends at the first `-`.
    #[default]
    Prefixed,
    /// The name the profile gives, as for a system connection.
    AsGiven,
}

/// What the policy file says, or its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Namespaces that the agent did not create which a system connection may use.
    pub system_foreign: BTreeSet<NetnsName>,
    pub user_names: UserNames,
    /// How many namespaces the connections of one user may hold, leased or persistent.
    pub max_per_user: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            system_foreign: BTreeSet::new(),
            user_names: UserNames::default(),
            max_per_user: 4,
        }
    }
}

/// Why the policy cannot be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the agent's policy {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "refusing the agent's policy {}: {why}; it must be a regular file owned by root and \
         writable by no one else",
        path.display()
    )]
    Untrusted { path: PathBuf, why: String },
    #[error("the agent's policy {} is not a valid key file", path.display())]
    Syntax {
        path: PathBuf,
        #[source]
        source: KeyFileError,
    },
    #[error(
        "the agent's policy {}, line {line}: unknown key {key:?} in [{group}]; the keys are \
         [{GROUP}] {FOREIGN}, {USER_NAMES} and {MAX_PER_USER}",
        path.display()
    )]
    UnknownKey {
        path: PathBuf,
        line: usize,
        group: String,
        key: String,
    },
    #[error("the agent's policy {}, line {line}: {key}={value:?}: {why}", path.display())]
    BadValue {
        path: PathBuf,
        line: usize,
        key: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "connection.permissions has no user:NAME entry ({permissions:?}); only user entries are \
         supported"
    )]
    NoUser { permissions: Vec<String> },
    #[error(
        "connection.permissions names several users ({users:?}); with {USER_NAMES}=prefixed \
         (the agent's policy) a namespace name holds one user, so give the profile one user"
    )]
    SeveralUsers { users: Vec<String> },
    #[error("no user {user:?} exists; connection.permissions must name an existing user")]
    UnknownUser { user: String },
    #[error("cannot look up user {user:?}")]
    UserLookup {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "the namespace name of user {user:?} for netns-name={name} would be {formed:?}, longer \
         than {NETNS_NAME_MAX} characters; give the profile a shorter netns-name"
    )]
    TooLong {
        user: String,
        name: NetnsName,
        formed: String,
    },
}

impl Policy {
    /// Reads the policy at `path`, which `owner` (root, for the agent) must own; a missing file
    /// gives the defaults.
    pub fn load(path: &Path, owner: u32) -> Result<Policy, PolicyError> {
        let read = |source| PolicyError::Read {
            path: path.to_owned(),
            source,
        };
        // Not following a symbolic link, and not blocking on a FIFO planted there.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags())
            .open(path);
        let mut file: File = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Policy::default()),
            Err(e) => return Err(read(e)),
        };
        let meta = file.metadata().map_err(read)?;
        let untrusted = |why: String| PolicyError::Untrusted {
            path: path.to_owned(),
            why,
        };
        if !meta.is_file() {
            return Err(untrusted("it is not a regular file".into()));
        }
        if meta.uid() != owner {
            return Err(untrusted(format!("it is owned by uid {}", meta.uid())));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(untrusted(format!(
                "it is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            )));
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read)?;
        Policy::parse(path, &text)
    }

    /// The policy in `text`, read from `path` (for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let entries = keyfile::entries(text).map_err(|source| PolicyError::Syntax {
            path: path.to_owned(),
            source,
        })?;
        let mut policy = Policy::default();
        for e in entries {
            let value = e.value().map_err(|source| PolicyError::Syntax {
                path: path.to_owned(),
                source,
            })?;
            let bad = |key: &'static str, why: String| PolicyError::BadValue {
                path: path.to_owned(),
                line: e.line,
                key,
                value: value.clone(),
                why,
            };
            match (e.group, e.key) {
                (GROUP, FOREIGN) => {
                    policy.system_foreign = value
                        .split(';')
                        .filter(|name| !name.is_empty())
                        .map(|name| name.parse().map_err(|err| bad(FOREIGN, format!("{err}"))))
                        .collect::<Result<_, _>>()?;
                }
                (GROUP, USER_NAMES) => {
                    policy.user_names = match value.as_str() {
                        "prefixed" => UserNames::Prefixed,
                        "as-given" => UserNames::AsGiven,
                        _ => return Err(bad(USER_NAMES, "not prefixed or as-given".into())),
                    };
                }
                (GROUP, MAX_PER_USER) => {
                    policy.max_per_user = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= MAX_PER_USER_LIMIT)
                        .ok_or_else(|| {
                        bad(
                            MAX_PER_USER,
                            format!("not a number from 0 to {MAX_PER_USER_LIMIT}"),
                        )
                    })?;
                }
                (group, key) => {
                    return Err(PolicyError::UnknownKey {
                        path: path.to_owned(),
                        line: e.line,
                        group: group.to_owned(),
                        key: key.to_owned(),
                    })
                }
            }
        }
        Ok(policy)
    }

    /// The user of a connection with these `permissions`, `None` for a system connection (no
    /// permissions at all). With several users, the namespaces count against the first.
    pub fn connection_user(&self, permissions: &[String]) -> Result<Option<String>, PolicyError> {
        if permissions.is_empty() {
            return Ok(None);
        }
        let users: Vec<String> = permission_users(permissions)
            .into_iter()
            .map(str::to_owned)
            .collect();
        match users.as_slice() {
            [] => Err(PolicyError::NoUser {
                permissions: permissions.to_vec(),
            }),
            [_, _, ..] if self.user_names == UserNames::Prefixed => {
                Err(PolicyError::SeveralUsers { users })
            }
            [first, ..] => Ok(Some(first.clone())),
        }
    }

    /// The namespace name of `user`'s connection whose settings give `name` from `source`, with
    /// `uid_of` to find the user's uid ([`system_uid`] but in tests). Prefixed, a name derived
    /// from the connection's id or uuid is shortened to fit; a name the profile chose is never
    /// changed but by its prefix.
    pub fn user_netns_name(
        &self,
        user: &str,
        name: &NetnsName,
        source: &NameSource,
        uid_of: UidOf,
    ) -> Result<NetnsName, PolicyError> {
        if self.user_names == UserNames::AsGiven {
            return Ok(name.clone());
        }
        let uid = uid_of(user)
            .map_err(|source| PolicyError::UserLookup {
                user: user.to_owned(),
                source,
            })?
            .ok_or_else(|| PolicyError::UnknownUser {
                user: user.to_owned(),
            })?;
        let formed = format!("u{uid}-{name}");
        let fitted = match source {
            NameSource::Literal(_) => formed.as_str(),
            NameSource::Uuid | NameSource::Name => {
                formed[..formed.len().min(NETNS_NAME_MAX)].trim_end_matches(['-', '.'])
            }
        };
        fitted.parse().map_err(|_| PolicyError::TooLong {
            user: user.to_owned(),
            name: name.clone(),
            formed: formed.clone(),
        })
    }
}

/// How a user's uid is found by name; `None`: no such user.
pub type UidOf = fn(&str) -> nix::Result<Option<u32>>;

/// The uid of the system's user `user`, by the name service (NSS: files, SSSD, LDAP,
/// systemd-userdb). It may wait on a remote server, so the agent calls it off its event loop.
pub fn system_uid(user: &str) -> nix::Result<Option<u32>> {
    Ok(nix::unistd::User::from_name(user)?.map(|u| u.uid.as_raw()))
}

fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits()
}

#[cfg(test)]
mod tests;
