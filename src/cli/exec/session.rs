//! Who `exec` runs the command as, with which environment, and how an unprivileged caller gets
//! the privileges to enter a namespace. Pure but for [`reinvoke`].

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::User;

/// The session variables an app needs to show a window, play sound and talk to the session bus
/// in the user's desktop, plus the locale, the terminal and `PATH`. Nothing else of the caller's
/// environment reaches the privileged part: `LD_PRELOAD`, `GCONV_PATH` and their kind would run
/// the caller's code as root before the command drops its privileges.
pub const SESSION_VARS: [&str; 9] = [
    "DISPLAY",
    "XAUTHORITY",
    "WAYLAND_DISPLAY",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
    "PULSE_SERVER",
    "LANG",
    "TERM",
    "PATH",
];

/// `LC_*` as locale(7) names them: `LC_` and upper-case letters or `_`.
fn is_locale_var(name: &str) -> bool {
    name.strip_prefix("LC_").is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    })
}

/// Whether `name` is one of [`SESSION_VARS`] or an `LC_*` variable.
pub fn is_session_var(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| SESSION_VARS.contains(&n) || is_locale_var(n))
}

/// The allow-listed part of an environment, in a stable order.
pub fn session_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> BTreeMap<OsString, OsString> {
    vars.into_iter()
        .filter(|(name, _)| is_session_var(name))
        .collect()
}

/// Every way the caller's session can be refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{var}={value:?} is not a user id")]
    BadUid { var: &'static str, value: String },
    #[error("--session-env {0:?} is not NAME=VALUE")]
    BadAssignment(OsString),
    #[error("--session-env {0:?}: only session variables pass (DISPLAY, WAYLAND_DISPLAY, LANG, LC_*, …)")]
    NotSessionVar(OsString),
    #[error("--session-env and --session-cwd are only for the command's own call through pkexec")]
    SessionArgs,
    #[error("cannot run pkexec to get the privileges to enter a namespace; install polkit's pkexec, or use sudo")]
    Pkexec(#[source] std::io::Error),
    #[error("cannot find this program's own path for pkexec")]
    OwnPath(#[source] std::io::Error),
}

/// Whose command runs, as the privileged part learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Run by root itself: the command runs as root.
    Root,
    /// Run by sudo(8), which set `SUDO_UID` to the invoking user's uid.
    Sudo(u32),
    /// Re-invoked through pkexec(1), which set `PKEXEC_UID` to the invoking user's uid.
    Pkexec(u32),
}

impl Caller {
    /// The uid the command runs as.
    pub fn uid(self) -> u32 {
        match self {
            Caller::Root => 0,
            Caller::Sudo(uid) | Caller::Pkexec(uid) => uid,
        }
    }
}

/// What `exec` does, from its effective uid and environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Not root: call itself again through pkexec with the session's environment.
    Pkexec,
    /// Root: enter the namespace and run the command as the caller.
    Privileged(Caller),
}

/// Decides the [`Route`]: pkexec and sudo set their `*_UID` variable themselves (pkexec(1),
/// sudo(8) "ENVIRONMENT"), so as root these name the user who asked. `SUDO_UID` is asked first:
/// sudo always sets it, while a sudoers rule that keeps the caller's environment (`!env_reset`,
/// `SETENV`, `env_keep`) would let the caller pass a `PKEXEC_UID` of their choice, such as 0;
/// pkexec starts from an empty environment, so under pkexec there is no `SUDO_UID`.
pub fn route(euid: u32, var: impl Fn(&str) -> Option<OsString>) -> Result<Route, SessionError> {
    if euid != 0 {
        return Ok(Route::Pkexec);
    }
    let uid = |name: &'static str| {
        var(name)
            .map(|v| {
                v.to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or_else(|| SessionError::BadUid {
                        var: name,
                        value: v.to_string_lossy().into_owned(),
                    })
            })
            .transpose()
    };
    Ok(Route::Privileged(
        match (uid("SUDO_UID")?, uid("PKEXEC_UID")?) {
            (Some(uid), _) => Caller::Sudo(uid),
            (None, Some(uid)) => Caller::Pkexec(uid),
            (None, None) => Caller::Root,
        },
    ))
}

/// `--session-env NAME=VALUE` as the privileged part reads it: allow-listed names only, the
/// same filter as the caller's side, since anyone may call pkexec with any arguments.
pub fn parse_assignments(args: &[OsString]) -> Result<BTreeMap<OsString, OsString>, SessionError> {
    args.iter()
        .map(|arg| {
            let bytes = arg.as_bytes();
            let eq = bytes
                .iter()
                .position(|&b| b == b'=')
                .filter(|&i| i > 0)
                .ok_or_else(|| SessionError::BadAssignment(arg.clone()))?;
            let name = OsStr::from_bytes(&bytes[..eq]);
            if !is_session_var(name) {
                return Err(SessionError::NotSessionVar(name.to_owned()));
            }
            Ok((
                name.to_owned(),
                OsStr::from_bytes(&bytes[eq + 1..]).to_owned(),
            ))
        })
        .collect()
}

/// What the privileged call through pkexec needs to hear of the caller's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reinvocation<'a> {
    pub program: &'a Path,
    pub env: &'a BTreeMap<OsString, OsString>,
    pub cwd: Option<&'a Path>,
    pub target: Option<&'a str>,
    pub command: &'a [OsString],
}

/// pkexec's arguments: the program, then `exec` with the session passed explicitly, since
/// pkexec gives the program a fresh environment and the root's home as its directory.
pub fn pkexec_args(r: &Reinvocation<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![r.program.into(), "exec".into()];
    for (name, value) in r.env {
        let mut assignment = name.clone();
        assignment.push("=");
        assignment.push(value);
        args.extend(["--session-env".into(), assignment]);
    }
    if let Some(cwd) = r.cwd {
        args.extend(["--session-cwd".into(), cwd.into()]);
    }
    args.extend(r.target.map(OsString::from));
    args.push("--".into());
    args.extend(r.command.iter().cloned());
    args
}

/// The installed program, as pkexec must be given it: an absolute path, which the polkit
/// action `io.github.NmVpnNetns.exec` names.
pub fn own_path() -> Result<PathBuf, SessionError> {
    std::env::current_exe().map_err(SessionError::OwnPath)
}

/// Replaces this process with pkexec; returns only on failure. pkexec, set-uid root, clears
/// the environment itself (pkexec(1)), so ours is left to it.
pub fn reinvoke(r: &Reinvocation<'_>) -> SessionError {
    SessionError::Pkexec(Command::new("pkexec").args(pkexec_args(r)).exec())
}

/// The command's environment: the session's variables, and the user's own `HOME`, `USER`,
/// `LOGNAME` and `SHELL` from the user database, as sudo(8) and login(1) set them.
pub fn command_env(
    session: &BTreeMap<OsString, OsString>,
    user: &User,
) -> BTreeMap<OsString, OsString> {
    let mut env = session.clone();
    for (name, value) in [
        ("HOME", user.dir.clone().into_os_string()),
        ("USER", user.name.clone().into()),
        ("LOGNAME", user.name.clone().into()),
        ("SHELL", user.shell.clone().into_os_string()),
    ] {
        env.insert(name.into(), value);
    }
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
    env
}

#[cfg(test)]
mod tests;
