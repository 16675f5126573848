//! What `doctor` concludes from what it saw: pure, so that every verdict and every fix is tested
//! without an installation to break.

use std::path::PathBuf;

use serde::Serialize;

use crate::contract;
use crate::plan::plugin::Plugin;

/// The shim's file name, whatever the prefix it was installed under: how a `.name` file is told
/// to be ours (packaging/takeover.sh tells it by the same `program=`).
pub const SHIM: &str = "nm-vpn-netns-service";

/// The oldest release tested (README, "Tested on"); older ones are not known to work. The
/// plugins' are in [`Plugin::min_version`].
pub const MIN_NM: &str = "1.42";

/// One `.name` file that registers a plugin's service, in the order NetworkManager loads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub file: PathBuf,
    pub program: PathBuf,
    pub program_present: bool,
}

/// How this copy of nm-vpn-netns was installed, which decides the fix to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    Deb,
    Rpm,
    Source,
}

impl Installer {
    fn reinstall(self) -> &'static str {
        match self {
            Installer::Deb => "apt install --reinstall nm-vpn-netns",
            Installer::Rpm => "dnf reinstall nm-vpn-netns",
            Installer::Source => "make install (as root, in the nm-vpn-netns source tree)",
        }
    }
}

/// What the agent said when asked for its `Version`, which starts it by D-Bus activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAnswer {
    /// Only root may call the agent (its D-Bus policy).
    NotAsked,
    /// The system bus itself could not be reached.
    NoBus(String),
    Version(u32),
    Failed(String),
}

/// What `doctor` saw of one of the VPN plugins nm-vpn-netns isolates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSeen {
    pub plugin: &'static Plugin,
    /// Every registration of its service, in NetworkManager's order: the first one is used.
    pub registrations: Vec<Registration>,
    /// The stock service the shim starts for it, and whether it is an executable file.
    pub stock_program: Result<(PathBuf, bool), String>,
    /// Its package's version, if a package database knows it.
    pub version: Option<String>,
}

impl PluginSeen {
    /// Nothing of it is on the system: nothing to take over, and nothing to check.
    fn absent(&self) -> bool {
        self.registrations.is_empty() && self.stock_program.is_err() && self.version.is_none()
    }
}

/// Everything `doctor` looks at, gathered before any verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub installer: Installer,
    /// Each plugin of [`crate::plan::plugin::PLUGINS`], in its order.
    pub plugins: Vec<PluginSeen>,
    /// The agent's D-Bus activation file, and whether the program in its `Exec=` exists.
    pub activation_file: Option<(PathBuf, bool)>,
    /// The agent's D-Bus policy file.
    pub bus_policy: Option<PathBuf>,
    pub agent: AgentAnswer,
    /// NetworkManager's `Version` property, or why it could not be read.
    pub nm_version: Result<String, String>,
    /// Loaded kernel modules that give openvpn a data-channel offload device.
    pub dco_modules: Vec<String>,
    /// `hosts:` in /etc/nsswitch.conf names `resolve`.
    pub nss_resolve: bool,
    /// The host resolvers' socket directories that exist, each of which crosses namespaces
    /// ([`crate::cli::exec::mounts::RESOLVER_SOCKET_DIRS`]).
    pub resolver_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Works, with a caveat the user should know.
    Info,
    /// Something isolated VPNs may trip on.
    Warn,
    /// Isolation does not work until it is fixed.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    /// The command that fixes it, for `warn` and `fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn finding(check: &'static str, verdict: Verdict, detail: String, fix: Option<String>) -> Finding {
    Finding {
        check,
        verdict,
        detail,
        fix,
    }
}

/// Every finding, in the order a user would fix them.
pub fn evaluate(o: &Observed) -> Vec<Finding> {
    let present: Vec<&PluginSeen> = o.plugins.iter().filter(|p| !p.absent()).collect();
    let mut findings = Vec::new();
    if present.is_empty() {
        findings.push(no_plugin(o));
    }
    for seen in &o.plugins {
        findings.push(registration(o, seen));
    }
    findings.extend(present.iter().map(|seen| stock(o, seen)));
    findings.extend([activation(o), agent(o), nm_version(o)]);
    findings.extend(present.iter().map(|seen| plugin_version(seen)));
    findings.push(dco(o));
    findings.push(resolvers(o));
    findings
}

fn no_plugin(o: &Observed) -> Finding {
    let names: Vec<&str> = o.plugins.iter().map(|p| p.plugin.rpm).collect();
    let debs: Vec<&str> = o.plugins.iter().map(|p| p.plugin.deb).collect();
    let detail = format!(
        "neither {} is installed: nm-vpn-netns has no VPN to isolate",
        names.join(" nor ")
    );
    let fix = format!("apt install {}", debs.join(" or apt install "));
    finding("stock plugin", Verdict::Fail, detail, Some(fix))
}

/// Whether NetworkManager runs the shim for `seen`'s service: the registration it loads first.
fn registration(o: &Observed, seen: &PluginSeen) -> Finding {
    const CHECK: &str = "registration";
    let fix = Some(o.installer.reinstall().to_owned());
    let plugin = seen.plugin;
    let Some(active) = seen.registrations.first() else {
        let detail = format!("no .name file registers {}", plugin.service);
        if seen.absent() {
            let detail = format!("{detail}: {} is not installed", plugin.rpm);
            return finding(CHECK, Verdict::Info, detail, None);
        }
        return finding(CHECK, Verdict::Fail, detail, fix);
    };
    let (file, program) = (active.file.display(), active.program.display());
    if active.program.file_name() != Some(SHIM.as_ref()) {
        let outcome = if plugin.refuses_unknown_keys {
            "fails to connect"
        } else {
            "connects without isolation"
        };
        let detail = format!(
            "NetworkManager runs the stock plugin: {file} names {program}, so an {} profile with \
             netns-isolate=yes {outcome}",
            plugin.name
        );
        return finding(CHECK, Verdict::Fail, detail, fix);
    }
    if !active.program_present {
        let detail = format!("{file} names {program}, which is missing");
        return finding(CHECK, Verdict::Fail, detail, fix);
    }
    if let Some(other) = seen.registrations.get(1) {
        let detail = format!(
            "{file} is used; {} registers the same service and is ignored",
            other.file.display()
        );
        let fix = Some(format!("rm {}", other.file.display()));
        return finding(CHECK, Verdict::Warn, detail, fix);
    }
    let detail = format!("{file} runs {program}");
    finding(CHECK, Verdict::Ok, detail, None)
}

fn stock(o: &Observed, seen: &PluginSeen) -> Finding {
    const CHECK: &str = "stock plugin";
    let plugin = seen.plugin;
    match &seen.stock_program {
        Ok((program, true)) => {
            let detail = format!("{} is installed", program.display());
            finding(CHECK, Verdict::Ok, detail, None)
        }
        Ok((program, false)) => {
            let detail = format!(
                "{} is missing: no {} connection can start",
                program.display(),
                plugin.name
            );
            let fix = format!("apt install {} (dnf install {})", plugin.deb, plugin.rpm);
            finding(CHECK, Verdict::Fail, detail, Some(fix))
        }
        Err(why) => {
            let fix = Some(o.installer.reinstall().to_owned());
            finding(CHECK, Verdict::Fail, why.clone(), fix)
        }
    }
}

fn activation(o: &Observed) -> Finding {
    const CHECK: &str = "agent activation";
    let fix = Some(o.installer.reinstall().to_owned());
    match (&o.activation_file, &o.bus_policy) {
        (None, _) => {
            let detail = format!(
                "no D-Bus activation file for {}: the agent cannot be started, and every isolated VPN fails",
                contract::BUS_NAME
            );
            finding(CHECK, Verdict::Fail, detail, fix)
        }
        (Some((file, false)), _) => {
            let detail = format!("{} names a program that is missing", file.display());
            finding(CHECK, Verdict::Fail, detail, fix)
        }
        (Some(_), None) => {
            let detail = format!(
                "no D-Bus policy for {}: the bus lets no one own or call it",
                contract::BUS_NAME
            );
            finding(CHECK, Verdict::Fail, detail, fix)
        }
        (Some((file, true)), Some(_)) => {
            let detail = format!("{} starts the agent", file.display());
            finding(CHECK, Verdict::Ok, detail, None)
        }
    }
}

fn agent(o: &Observed) -> Finding {
    const CHECK: &str = "agent";
    match &o.agent {
        AgentAnswer::NotAsked => finding(
            CHECK,
            Verdict::Info,
            "not asked: only root may call the agent; run doctor as root to start it".to_owned(),
            None,
        ),
        AgentAnswer::NoBus(why) => finding(
            CHECK,
            Verdict::Fail,
            format!("cannot be reached: no system bus: {why}"),
            Some("systemctl start dbus".to_owned()),
        ),
        AgentAnswer::Version(v) if *v == contract::VERSION => {
            let detail = format!("answered, contract version {v}");
            finding(CHECK, Verdict::Ok, detail, None)
        }
        AgentAnswer::Version(v) => {
            let detail = format!(
                "answered with contract version {v}; this nm-vpn-netns speaks {}",
                contract::VERSION
            );
            let fix = Some(o.installer.reinstall().to_owned());
            finding(CHECK, Verdict::Fail, detail, fix)
        }
        AgentAnswer::Failed(why) => {
            let detail = format!("does not answer: {why}");
            let fix = Some("journalctl -u nm-vpn-netns-agent".to_owned());
            finding(CHECK, Verdict::Fail, detail, fix)
        }
    }
}

fn nm_version(o: &Observed) -> Finding {
    match &o.nm_version {
        Ok(v) => version("NetworkManager", v, MIN_NM, "apt install network-manager"),
        Err(why) => finding(
            "NetworkManager",
            Verdict::Fail,
            format!("not running on the system bus: {why}"),
            Some("systemctl start NetworkManager".to_owned()),
        ),
    }
}

fn plugin_version(seen: &PluginSeen) -> Finding {
    let plugin = seen.plugin;
    match &seen.version {
        Some(v) => {
            let fix = format!("apt install {}", plugin.deb);
            version(plugin.rpm, v, plugin.min_version, &fix)
        }
        None => finding(
            plugin.rpm,
            Verdict::Info,
            "version unknown: no package database knows it".to_owned(),
            None,
        ),
    }
}

fn version(check: &'static str, found: &str, min: &str, fix: &str) -> Finding {
    if at_least(found, min) {
        finding(check, Verdict::Ok, found.to_owned(), None)
    } else {
        let detail = format!("{found} is older than {min}, the oldest supported");
        finding(check, Verdict::Warn, detail, Some(fix.to_owned()))
    }
}

/// Whether the dotted version `found` (a package version such as `1.10.2-2` or `1:1.42.4-1`) is
/// at least `min`, comparing the leading numbers only.
pub fn at_least(found: &str, min: &str) -> bool {
    let numbers = |v: &str| -> Vec<u64> {
        let upstream = v.split_once(':').map_or(v, |(_, rest)| rest);
        upstream
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()
            .unwrap_or("")
            .split('.')
            .map_while(|n| n.parse().ok())
            .collect()
    };
    numbers(found) >= numbers(min)
}

fn dco(o: &Observed) -> Finding {
    const CHECK: &str = "openvpn DCO";
    if o.dco_modules.is_empty() {
        return finding(
            CHECK,
            Verdict::Ok,
            "no offload module loaded".to_owned(),
            None,
        );
    }
    let modules = o.dco_modules.join(", ");
    let detail = format!(
        "{modules} loaded: openvpn may make an offload device instead of a tun, and the agent refuses to move one"
    );
    // The same way out as the agent's refusal of a DCO device gives (executor/error.rs).
    let fix =
        format!("modprobe -r {modules}, and blacklist ovpn-dco-v2 and ovpn in /etc/modprobe.d");
    finding(CHECK, Verdict::Warn, detail, Some(fix))
}

fn resolvers(o: &Observed) -> Finding {
    const CHECK: &str = "host resolvers";
    let mut crossing: Vec<String> = o
        .resolver_dirs
        .iter()
        .map(|p| format!("the sockets in {}", p.display()))
        .collect();
    if o.nss_resolve {
        crossing.insert(0, "nss-resolve (hosts: resolve)".to_owned());
    }
    if crossing.is_empty() {
        let detail = "no nscd, systemd-resolved or avahi-daemon socket on the host".to_owned();
        return finding(CHECK, Verdict::Ok, detail, None);
    }
    let detail = format!(
        "{} answer lookups across namespaces: `ip netns exec` would resolve through the host; \
         nm-vpn-netns exec hides their sockets, so start apps with it",
        crossing.join(", ")
    );
    finding(CHECK, Verdict::Info, detail, None)
}

#[cfg(test)]
mod tests;
