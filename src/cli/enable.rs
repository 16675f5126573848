//! `nm-vpn-netns enable` and `disable`: the `netns-*` keys of a VPN profile, written into
//! `vpn.data` and mirrored into its `user` setting ([`crate::plan::mirror`]), through
//! NetworkManager's `Settings.Connection.Update2`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use zbus::Connection;

use crate::cli::profiles;
use crate::nmbus::{self, ConnectionSettings, SettingsConnectionProxy};
use crate::plan::settings::{self, ConnectionInfo, Key, NameSource, SettingsError, Timeout};
use crate::plan::{mirror, plugin};
use crate::shim::Leaf;

const ENABLE_ABOUT: &str =
    "Isolate an OpenVPN or OpenConnect connection in a network namespace of its own";

const ENABLE_LONG_ABOUT: &str = "\
Isolate an OpenVPN or OpenConnect connection of NetworkManager in a network namespace of its own,
from its next connect on. CONNECTION is the connection's id (connection.id) or its uuid.

enable writes netns-isolate=yes, and the keys its options give, into the connection's vpn.data
(see nm-vpn-netns(5)), in place of any netns-* keys it had. It also keeps a copy of them in the
connection's user setting (user.data, as io.github.nm-vpn-netns.netns-isolate and so on). The
GNOME connection editor drops the netns-* keys from vpn.data when it saves a profile, but keeps
the user setting: while the copy exists, the connection stays isolated, and vpn.data gets the keys
back once it is up. So removing the keys from vpn.data by hand does not turn isolation off; use
nm-vpn-netns disable.

The profile is saved to disk through NetworkManager (Settings.Connection.Update2), which asks
polkit whether the caller may modify it; a VPN that is up stays as it is until its next connect.
Its secrets stay as they were. Connections of other VPN types, and isolated profiles with static
ipv4/ipv6 addresses, routes or DNS servers, are refused.

EXIT STATUS: 0 when the profile was saved; 1 when the connection is not found, not an OpenVPN or
OpenConnect connection, cannot be isolated, or NetworkManager refused the change; 2 for a bad
command line.";

const DISABLE_ABOUT: &str = "Stop isolating a connection: remove its netns-* keys and their copy";

const DISABLE_LONG_ABOUT: &str = "\
Stop isolating a connection of NetworkManager from its next connect on. CONNECTION is the
connection's id (connection.id) or its uuid.

disable removes every netns-* key from the connection's vpn.data and the copy of them that
nm-vpn-netns enable keeps in its user setting; other keys of both stay. The profile is saved to
disk through NetworkManager (Settings.Connection.Update2); a VPN that is up stays isolated until
it goes down. A connection without any of these keys is left as it is.

EXIT STATUS: 0 when the profile was saved or had nothing to remove; 1 when the connection is not
found or NetworkManager refused the change; 2 for a bad command line.";

/// `enable`'s command line.
#[derive(Debug, clap::Args)]
#[command(about = ENABLE_ABOUT, long_about = ENABLE_LONG_ABOUT)]
pub struct EnableArgs {
    /// The connection's id or uuid.
    #[arg(value_name = "CONNECTION")]
    pub connection: String,
    /// Names the namespace (netns-name): uuid for connection.uuid, name for connection.id made
    /// into a valid name (the default), or a literal namespace name.
    #[arg(long, value_name = "uuid|name|LITERAL", value_parser = checked::<NameSource>)]
    pub name: Option<String>,
    /// Keeps the namespace after disconnect, so that programs inside survive reconnects
    /// (netns-persistent=yes).
    #[arg(long)]
    pub persistent: bool,
    /// How long the isolation step may take, in milliseconds from 1 to 30000 (netns-timeout).
    #[arg(long, value_name = "MS", value_parser = checked::<Timeout>)]
    pub timeout: Option<String>,
}

/// `disable`'s command line.
#[derive(Debug, clap::Args)]
#[command(about = DISABLE_ABOUT, long_about = DISABLE_LONG_ABOUT)]
pub struct DisableArgs {
    /// The connection's id or uuid.
    #[arg(value_name = "CONNECTION")]
    pub connection: String,
}

/// A value that parses as `T`, the key's own type, kept as it was written.
fn checked<T: std::str::FromStr>(s: &str) -> Result<String, T::Err> {
    s.parse::<T>().map(|_| s.to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum EnableError {
    #[error("cannot start a runtime for D-Bus")]
    Runtime(#[source] std::io::Error),
    #[error("cannot connect to the system bus")]
    Bus(#[source] Leaf<zbus::Error>),
    #[error("{method} of NetworkManager failed")]
    Call {
        method: &'static str,
        #[source]
        error: Leaf<zbus::Error>,
    },
    #[error("no connection has the id or uuid {0:?} (nmcli connection show lists them)")]
    NotFound(String),
    #[error("{count} connections have the id {id:?}; give the uuid of one")]
    Ambiguous { id: String, count: usize },
    #[error(
        "connection {id:?} is not an OpenVPN or OpenConnect connection ({found}); nm-vpn-netns \
         isolates only connections of vpn.service-type {}",
        plugin::services()
    )]
    NotIsolatable { id: String, found: String },
    #[error("connection {id:?} cannot be isolated")]
    Settings {
        id: String,
        #[source]
        error: SettingsError,
    },
}

pub fn run_enable(args: EnableArgs) -> Result<ExitCode, EnableError> {
    crate::cli::block_on(enable(args)).map_err(EnableError::Runtime)?
}

pub fn run_disable(args: DisableArgs) -> Result<ExitCode, EnableError> {
    crate::cli::block_on(disable(args)).map_err(EnableError::Runtime)?
}

/// The keys `args` ask for, in `vpn.data`'s terms.
fn keys(args: &EnableArgs) -> BTreeMap<String, String> {
    let yes = args.persistent.then(|| "yes".to_owned());
    [
        (Key::Isolate, Some("yes".to_owned())),
        (Key::Persistent, yes),
        (Key::Name, args.name.clone()),
        (Key::Timeout, args.timeout.clone()),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.as_str().to_owned(), value?)))
    .collect()
}

async fn enable(args: EnableArgs) -> Result<ExitCode, EnableError> {
    let bus = system_bus().await?;
    let (profile, current) = find(&bus, &args.connection).await?;
    let info = ConnectionInfo::from_nm(&current).map_err(settings_error(&args.connection))?;
    isolatable_vpn(&current, &info.id)?;
    let keys = keys(&args);
    let netns = settings::parse(&keys, &info).map_err(settings_error(&args.connection))?;
    let enabled = mirror::enable(current, &keys).map_err(settings_error(&args.connection))?;
    save(&profile, &enabled).await?;
    let pairs: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "connection {:?} ({}) is isolated in namespace {} from its next connect ({})",
        info.id,
        info.uuid,
        netns.name,
        pairs.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn settings_error(id: &str) -> impl FnOnce(SettingsError) -> EnableError + '_ {
    move |error| EnableError::Settings {
        id: id.to_owned(),
        error,
    }
}

async fn disable(args: DisableArgs) -> Result<ExitCode, EnableError> {
    let bus = system_bus().await?;
    let (profile, current) = find(&bus, &args.connection).await?;
    if !mirror::has_keys(&current).map_err(settings_error(&args.connection))? {
        println!(
            "connection {:?} has no netns-* keys; nothing to do",
            args.connection
        );
        return Ok(ExitCode::SUCCESS);
    }
    let disabled = mirror::disable(current).map_err(settings_error(&args.connection))?;
    save(&profile, &disabled).await?;
    println!(
        "connection {:?} is no longer isolated from its next connect",
        args.connection
    );
    Ok(ExitCode::SUCCESS)
}

async fn system_bus() -> Result<Connection, EnableError> {
    Connection::system()
        .await
        .map_err(|e| EnableError::Bus(Leaf(e)))
}

fn call(method: &'static str) -> impl FnOnce(zbus::Error) -> EnableError {
    move |error| EnableError::Call {
        method,
        error: Leaf(error),
    }
}

/// The profile whose uuid or id is `wanted`, and its settings (without secrets).
async fn find(
    bus: &Connection,
    wanted: &str,
) -> Result<(SettingsConnectionProxy<'static>, ConnectionSettings), EnableError> {
    let mut named = Vec::new();
    for (profile, current) in profiles::all(bus).await.map_err(call("ListConnections"))? {
        let info = ConnectionInfo::from_nm(&current).unwrap_or_default();
        if info.uuid == wanted {
            return Ok((profile, current));
        }
        if info.id == wanted {
            named.push((profile, current));
        }
    }
    match named.len() {
        0 => Err(EnableError::NotFound(wanted.to_owned())),
        1 => Ok(named.remove(0)),
        count => Err(EnableError::Ambiguous {
            id: wanted.to_owned(),
            count,
        }),
    }
}

/// Refuses a profile of any plugin but those the shim serves ([`plugin::PLUGINS`]).
fn isolatable_vpn(current: &ConnectionSettings, id: &str) -> Result<(), EnableError> {
    let service_type = settings::section(current, "vpn")
        .str("service-type")
        .ok()
        .flatten();
    let found = match service_type {
        Some(service) if plugin::by_service(service).is_some() => return Ok(()),
        Some(other) => format!("vpn.service-type {other}"),
        None => "not a VPN".to_owned(),
    };
    Err(EnableError::NotIsolatable {
        id: id.to_owned(),
        found,
    })
}

/// Saves `new` to disk and leaves the active connection alone. `new` comes from `GetSettings`,
/// which holds no secrets, and NM keeps a profile's secrets when an update carries none
/// (nm-settings-connection.c, `update_auth_cb`).
async fn save(
    profile: &SettingsConnectionProxy<'_>,
    new: &ConnectionSettings,
) -> Result<(), EnableError> {
    nmbus::save_to_disk(profile, new)
        .await
        .map_err(call("Update2"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::VarDict;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: EnableArgs,
    }

    fn parse(argv: &[&str]) -> Result<EnableArgs, clap::Error> {
        Cli::try_parse_from([&["enable"], argv].concat()).map(|c| c.args)
    }

    fn pairs(args: &EnableArgs) -> Vec<(String, String)> {
        keys(args).into_iter().collect()
    }

    #[test]
    fn options_become_keys() {
        let args = parse(&["work"]).unwrap();
        assert_eq!(args.connection, "work");
        assert_eq!(pairs(&args), [("netns-isolate".into(), "yes".into())]);
        let args = parse(&[
            "work",
            "--persistent",
            "--name",
            "uuid",
            "--timeout",
            "5000",
        ])
        .unwrap();
        assert_eq!(
            pairs(&args),
            [
                ("netns-isolate".into(), "yes".into()),
                ("netns-name".into(), "uuid".into()),
                ("netns-persistent".into(), "yes".into()),
                ("netns-timeout".into(), "5000".into()),
            ]
        );
    }

    /// Bad values fail on the command line (exit status 2), with the key's own reason.
    #[test]
    fn bad_values_are_refused_by_the_parser() {
        for (argv, reason) in [
            (
                &["work", "--name", "../x"][..],
                "it must start with a letter",
            ),
            (&["work", "--name", "UUID"], "lower case"),
            (
                &["work", "--timeout", "0"],
                "expected milliseconds from 1 to 30000",
            ),
            (&["work", "--timeout", "+5"], "expected milliseconds"),
        ] {
            let e = parse(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
            assert!(e.to_string().contains(reason), "{argv:?}: {e}");
        }
    }

    #[test]
    fn only_profiles_of_the_plugins_the_shim_serves() {
        let vpn = |service: &str| {
            ConnectionSettings::from([(
                "vpn".to_owned(),
                VarDict::from([("service-type".to_owned(), crate::plan::owned(service))]),
            )])
        };
        for p in plugin::PLUGINS {
            assert!(
                isolatable_vpn(&vpn(p.service), "work").is_ok(),
                "{}",
                p.name
            );
        }
        let e = isolatable_vpn(&vpn("org.freedesktop.NetworkManager.wireguard"), "wg")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "connection \"wg\" is not an OpenVPN or OpenConnect connection (vpn.service-type \
             org.freedesktop.NetworkManager.wireguard); nm-vpn-netns isolates only connections of \
             vpn.service-type org.freedesktop.NetworkManager.openvpn or \
             org.freedesktop.NetworkManager.openconnect"
        );
        let e = isolatable_vpn(&ConnectionSettings::new(), "eth").unwrap_err();
        assert!(e.to_string().contains("(not a VPN)"), "{e}");
    }
}
