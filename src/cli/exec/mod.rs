//! `nm-vpn-netns exec`: a command in an isolated VPN's namespace, as the user who asked.
//!
//! - [`session`]: who asks, with which environment, and the call through pkexec;
//! - [`target`]: which VPN, read from NetworkManager, and who may exec where;
//! - [`mounts`]: the mount namespace, as `ip netns exec` makes it, with resolver sockets hidden;
//! - [`enter`]: the namespaces, the drop to the user and the command itself.

pub mod enter;
pub mod mounts;
pub mod session;
pub mod target;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use nix::unistd::geteuid;

use session::{Caller, Reinvocation, Route, SessionError};
use target::{ReadError, TargetError};

const ABOUT: &str = "Run a command in an isolated VPN's namespace, as yourself";

const LONG_ABOUT: &str = "\
Runs COMMAND in the network namespace of a connected isolated VPN, as the user who asked, with that
user's desktop session: the command's traffic and DNS lookups go through the VPN, and nothing else
does.

TARGET is the connection's id or uuid, or the namespace's name. It may be left out when exactly one
isolated VPN is connected.

Run as a user, exec asks polkit for root through pkexec(1) (the action io.github.NmVpnNetns.exec;
by default an administrator's password, kept for a while). Run under sudo(8), it needs neither, and
runs COMMAND as the user who called sudo (SUDO_UID). Run as root, it runs COMMAND as root; a root
shell opened with sudo -s or sudo -i still carries SUDO_UID, so there exec runs COMMAND as the user
who opened it (env -u SUDO_UID nm-vpn-netns exec ... runs it as root).

Only these variables of the caller's environment reach COMMAND: DISPLAY, XAUTHORITY,
WAYLAND_DISPLAY, XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS, PULSE_SERVER, LANG, LC_*, TERM and
PATH; HOME, USER, LOGNAME and SHELL are the user's own. sudo removes most variables before exec
sees them (keep the session's with env_keep in sudoers(5)), and sets PATH to its secure_path. exec
itself, as root, keeps none of the caller's environment.

WHO MAY EXEC WHERE: a user may exec into the namespace of a system connection (one without
connection.permissions) and of a connection whose connection.permissions names them. Root may exec
anywhere. A VPN that is not connected has no namespace to enter, and exec says so.

THE NAMESPACE: COMMAND runs in a mount namespace of its own, set up as ip netns exec sets it up:
the files of /etc/netns/NAME (the VPN's resolv.conf and nsswitch.conf) are bound over those of
/etc, and /sys shows the namespace's links. In addition, the host's resolver sockets are hidden
under empty directories: nscd's (/run/nscd), systemd-resolved's (/run/systemd/resolve) and
avahi-daemon's (/run/avahi-daemon). A lookup through them would be answered by the host's DNS,
outside the VPN, and glibc asks nscd before it reads nsswitch.conf; plain ip netns exec leaves them
reachable. The system bus stays reachable, so a program that asks systemd-resolved over D-Bus
itself (resolvectl) still gets the host's answer. COMMAND then runs with the user's uid, gid and
supplementary groups.

EXIT STATUS: COMMAND's exit status. 125: exec itself failed (the target, the permission or the
namespace); 126: COMMAND was found but could not be run; 127: COMMAND was not found; 2: a bad
command line, before anything ran (COMMAND must follow --). Through
pkexec, 126 and 127 also mean that authorization was refused or pkexec failed (pkexec(1)).";

/// `exec`'s failures before the command runs; 126 and 127 as env(1) and the shells use them.
pub const EXIT_FAILED: u8 = 125;
pub const EXIT_CANNOT_RUN: u8 = 126;
pub const EXIT_NOT_FOUND: u8 = 127;

#[derive(Debug, clap::Args)]
#[command(about = ABOUT, long_about = LONG_ABOUT)]
pub struct Args {
    /// The connection's id or uuid, or the namespace's name
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,

    /// The command and its arguments
    #[arg(value_name = "COMMAND", last = true, required = true)]
    pub command: Vec<OsString>,

    /// A session variable of the caller, NAME=VALUE (for exec's own call through pkexec)
    #[arg(long, hide = true, value_name = "NAME=VALUE")]
    pub session_env: Vec<OsString>,

    /// The caller's working directory (for exec's own call through pkexec)
    #[arg(long, hide = true, value_name = "DIR")]
    pub session_cwd: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot use the caller's session")]
    Session(#[source] SessionError),
    #[error("cannot connect to the system bus")]
    Bus(#[source] zbus::Error),
    #[error("cannot start a runtime for D-Bus")]
    Runtime(#[source] io::Error),
    #[error("cannot find the VPN to exec into")]
    Read(#[source] ReadError),
    #[error("cannot exec into {}", .0.as_deref().unwrap_or("the connected VPN"))]
    Target(Option<String>, #[source] TargetError),
    #[error("cannot find the user to run the command as")]
    User(#[source] enter::EnterError),
    #[error("cannot enter the namespace {0}")]
    Enter(String, #[source] enter::EnterError),
    #[error("cannot drop root's privileges")]
    Drop(#[source] enter::EnterError),
    #[error("cannot run {}", .0.to_string_lossy())]
    Command(OsString, #[source] io::Error),
}

impl ExecError {
    fn status(&self) -> u8 {
        match self {
            ExecError::Command(_, e) if e.kind() == io::ErrorKind::NotFound => EXIT_NOT_FOUND,
            ExecError::Command(..) => EXIT_CANNOT_RUN,
            _ => EXIT_FAILED,
        }
    }
}

/// Runs `exec`; returns only when the command could not be started.
pub fn run(args: Args) -> ExitCode {
    let Err(e) = try_run(args);
    super::fail(&e, e.status())
}

fn try_run(args: Args) -> Result<std::convert::Infallible, ExecError> {
    let route = session::route(geteuid().as_raw(), |name| std::env::var_os(name))
        .map_err(ExecError::Session)?;
    let session_args = !args.session_env.is_empty() || args.session_cwd.is_some();
    let caller = match route {
        Route::Privileged(caller @ Caller::Pkexec(_)) => caller,
        _ if session_args => return Err(ExecError::Session(SessionError::SessionArgs)),
        Route::Privileged(caller) => caller,
        Route::Pkexec => {
            let program = session::own_path().map_err(ExecError::Session)?;
            let cwd = std::env::current_dir().ok();
            let env = session::session_env(std::env::vars_os());
            return Err(ExecError::Session(session::reinvoke(&Reinvocation {
                program: &program,
                env: &env,
                cwd: cwd.as_deref(),
                target: args.target.as_deref(),
                command: &args.command,
            })));
        }
    };
    let env = match caller {
        Caller::Pkexec(_) => session::parse_assignments(&args.session_env),
        Caller::Root | Caller::Sudo(_) => Ok(session::session_env(std::env::vars_os())),
    }
    .map_err(ExecError::Session)?;
    clear_environment();
    privileged(caller, &args, &env)
}

/// The privileged part keeps nothing of the caller's environment once the session's allow-listed
/// part is captured: what sudo passed on (a `DBUS_SYSTEM_BUS_ADDRESS` pointing at a fake
/// NetworkManager and agent, `TZ`, `RES_OPTIONS`, `HOSTALIASES`, …) would otherwise steer its own
/// D-Bus calls and lookups as root. The process has one thread here, before any runtime starts,
/// so changing the environment races with nothing.
fn clear_environment() {
    for (name, _) in std::env::vars_os() {
        std::env::remove_var(name);
    }
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
}

/// As root: the target checked, the namespace entered, and the command run as the caller.
fn privileged(
    caller: Caller,
    args: &Args,
    session: &BTreeMap<OsString, OsString>,
) -> Result<std::convert::Infallible, ExecError> {
    let user = enter::user(caller.uid()).map_err(ExecError::User)?;
    // The runtime and the bus connection are gone before the namespaces are entered, so that
    // the process has one thread again.
    let vpns = super::block_on(async {
        let bus = zbus::Connection::system().await.map_err(ExecError::Bus)?;
        target::isolated_vpns(&bus).await.map_err(ExecError::Read)
    })
    .map_err(ExecError::Runtime)??;
    let refused = |e| ExecError::Target(args.target.clone(), e);
    let vpn = target::resolve(args.target.as_deref(), &vpns).map_err(refused)?;
    target::authorize(&user.name, caller.uid(), vpn).map_err(refused)?;
    let netns = vpn.netns.as_str();
    let entering = |e| ExecError::Enter(netns.to_owned(), e);
    enter::enter(netns).map_err(entering)?;
    enter::become_user(&user).map_err(ExecError::Drop)?;
    if let Some(cwd) = &args.session_cwd {
        // As the user, so that a directory they may not enter stays closed; if it is, their own
        // home rather than root's, where pkexec left the process.
        if std::env::set_current_dir(cwd).is_err() {
            let _ = std::env::set_current_dir(&user.dir);
        }
    }
    let program = args.command.first().cloned().unwrap_or_default();
    Err(ExecError::Command(
        program,
        enter::exec(&args.command, &session::command_env(session, &user)),
    ))
}
