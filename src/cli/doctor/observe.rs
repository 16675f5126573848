//! What `doctor` looks at on this system. Nothing here judges: a failure to look is an
//! observation too, for [`super::checks`] to weigh.

use std::path::{Path, PathBuf};
use std::process::Command;

use zbus::Connection;

use super::checks::{AgentAnswer, Installer, Observed, PluginSeen, Registration};
use crate::cli::exec::mounts;
use crate::plan::plugin::{Plugin, PLUGINS};
use crate::{contract, keyfile, nmbus, shim};

/// Where NetworkManager loads `.name` files from, in its order: lib before etc
/// (libnm-core-impl/nm-vpn-plugin-info.c, `nm_vpn_plugin_info_list_load`).
const VPN_DIRS: [&str; 2] = [shim::VPN_DIR, "/etc/NetworkManager/VPN"];

/// Where the system bus looks for activation files and policies (dbus-daemon(1), "system.conf").
const ACTIVATION_DIRS: [&str; 3] = [
    "/usr/local/share/dbus-1/system-services",
    "/usr/share/dbus-1/system-services",
    "/lib/dbus-1/system-services",
];
const POLICY_DIRS: [&str; 2] = ["/usr/share/dbus-1/system.d", "/etc/dbus-1/system.d"];

/// Loaded modules that give openvpn 2.6 a data-channel offload device: the out-of-tree
/// ovpn-dco-v2 and Linux 6.16's ovpn.
const DCO_MODULES: [&str; 2] = ["ovpn_dco_v2", "ovpn"];

pub async fn observe() -> Observed {
    let bus = Connection::system().await.map_err(|e| e.to_string());
    let (agent, nm_version) = match &bus {
        Ok(bus) => (ask_agent(bus).await, nm_version(bus).await),
        Err(why) => (AgentAnswer::NoBus(why.clone()), Err(why.clone())),
    };
    Observed {
        installer: installer(),
        plugins: {
            let names = name_files(&VPN_DIRS);
            PLUGINS.map(|plugin| plugin_seen(plugin, &names)).into()
        },
        activation_file: activation_file(),
        bus_policy: first_existing(&POLICY_DIRS, &format!("{}.conf", contract::BUS_NAME)),
        agent,
        nm_version,
        dco_modules: DCO_MODULES
            .iter()
            .filter(|m| Path::new("/sys/module").join(m).exists())
            .map(|m| (*m).to_owned())
            .collect(),
        nss_resolve: nss_resolve(),
        // The directories `exec` hides; one it cannot read counts as none here, and fails `exec`.
        resolver_dirs: mounts::resolver_dirs().unwrap_or_default(),
    }
}

fn installer() -> Installer {
    if package_version("nm-vpn-netns", "nm-vpn-netns").is_none() {
        Installer::Source
    } else if succeeds(Command::new("dpkg-query").args(["-W", "nm-vpn-netns"])) {
        Installer::Deb
    } else {
        Installer::Rpm
    }
}

/// The installed version of a package, from dpkg (Debian's name) or rpm (Fedora's).
fn package_version(deb: &str, rpm: &str) -> Option<String> {
    let status = output(Command::new("dpkg-query").args(["-W", "-f=${Status} ${Version}", deb]));
    if let Some(version) = status
        .as_deref()
        .and_then(|s| s.strip_prefix("install ok installed "))
    {
        return Some(version.to_owned());
    }
    output(Command::new("rpm").args(["-q", "--qf", "%{VERSION}", rpm]))
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.stderr(std::process::Stdio::null()).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn succeeds(command: &mut Command) -> bool {
    output(command).is_some()
}

fn plugin_seen(plugin: &'static Plugin, names: &[(PathBuf, String)]) -> PluginSeen {
    PluginSeen {
        plugin,
        registrations: registrations(names, plugin.service),
        stock_program: stock_program(plugin.service),
        version: package_version(plugin.deb, plugin.rpm),
    }
}

/// Every `.name` file in `dirs`, in NetworkManager's order (within a directory, by file name),
/// read once for all the plugins; a directory that cannot be read counts as empty.
fn name_files(dirs: &[&str]) -> Vec<(PathBuf, String)> {
    dirs.iter()
        .flat_map(|dir| shim::read_files(Path::new(dir), ".name").unwrap_or_default())
        .collect()
}

/// The files among `names` that register `service`.
fn registrations(names: &[(PathBuf, String)], service: &str) -> Vec<Registration> {
    names
        .iter()
        .filter_map(|(file, text)| {
            let key = |k| {
                keyfile::get_string(text, "VPN Connection", k)
                    .ok()
                    .flatten()
            };
            (key("service")? == service).then(|| {
                let program = PathBuf::from(key("program").unwrap_or_default());
                Registration {
                    program_present: program.is_file(),
                    file: file.clone(),
                    program,
                }
            })
        })
        .collect()
}

/// The stock OpenVPN service as the shim finds it.
fn stock_program(service: &str) -> Result<(PathBuf, bool), String> {
    shim::stock_program(Path::new(shim::VPN_DIR), service)
        .map(|program| {
            let present = executable(&program);
            (program, present)
        })
        .map_err(|e| crate::report::chain(&e))
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn first_existing(dirs: &[&str], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The agent's activation file, and whether its `Exec=` program is there to run.
fn activation_file() -> Option<(PathBuf, bool)> {
    let file = first_existing(&ACTIVATION_DIRS, &format!("{}.service", contract::BUS_NAME))?;
    let exec = std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| {
            keyfile::get_string(&text, "D-BUS Service", "Exec")
                .ok()
                .flatten()
        })
        .and_then(|exec| exec.split_whitespace().next().map(PathBuf::from));
    let present = exec.is_some_and(|program| executable(&program));
    Some((file, present))
}

/// Asks the agent its `Version`, which starts it by D-Bus activation. Only root may.
async fn ask_agent(bus: &Connection) -> AgentAnswer {
    if !nix::unistd::geteuid().is_root() {
        return AgentAnswer::NotAsked;
    }
    let version = async {
        contract::Agent1Proxy::builder(bus)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?
            .version()
            .await
    };
    match version.await {
        Ok(v) => AgentAnswer::Version(v),
        Err(e) => AgentAnswer::Failed(crate::report::chain(&e)),
    }
}

async fn nm_version(bus: &Connection) -> Result<String, String> {
    let version = async { nmbus::NetworkManagerProxy::new(bus).await?.version().await };
    version.await.map_err(|e| crate::report::chain(&e))
}

/// Whether the `hosts:` line of /etc/nsswitch.conf names the `resolve` module.
fn nss_resolve() -> bool {
    std::fs::read_to_string("/etc/nsswitch.conf").is_ok_and(|text| hosts_use_resolve(&text))
}

/// `hosts: files resolve [!UNAVAIL=return] dns` names it; a comment does not.
pub fn hosts_use_resolve(nsswitch: &str) -> bool {
    nsswitch.lines().any(|line| {
        let line = line.split('#').next().unwrap_or("");
        line.trim_start()
            .strip_prefix("hosts:")
            .is_some_and(|modules| modules.split_whitespace().any(|m| m == "resolve"))
    })
}

#[cfg(test)]
mod tests {
    use super::hosts_use_resolve;

    #[test]
    fn the_hosts_line_names_resolve() {
        assert!(hosts_use_resolve(
            "passwd: files\nhosts:  files resolve [!UNAVAIL=return] dns\n"
        ));
        assert!(!hosts_use_resolve("hosts: files dns # resolve\n"));
        assert!(!hosts_use_resolve(
            "#hosts: files resolve\nhosts: files dns\n"
        ));
        assert!(!hosts_use_resolve("networks: files resolve\n"));
    }
}
