//! The VPN plugin shim, `nm-vpn-netns-service`, in front of a stock VPN service: nm-openvpn's or
//! nm-openconnect's.
//!
//! NetworkManager spawns it as `program --bus-name <service>.Connection_N`, e.g.
//! `org.freedesktop.NetworkManager.openvpn.Connection_N`, and talks
//! `org.freedesktop.NetworkManager.VPN.Plugin` to that name. The shim starts the stock service of
//! that service ([`registration`]) under `<service>.netns.Connection_N`, forwards NM's calls to it with the `netns-*` keys
//! of `vpn.data` removed, and re-emits its signals: NM only takes them from the owner of the name
//! it spawned. For an isolated connection it holds the stock service's Config back, has the agent
//! move the tun into its namespace, and only then tells NM a reduced Config, which reaches
//! ACTIVATED without installing anything in NM's namespace (ARCHITECTURE.md, "One connection,
//! step by step").
//!
//! The modules:
//! - [`session`]: the decisions, as a state machine without I/O;
//! - [`driver`]: the one task that feeds the session what happens on the bus, carries out its
//!   actions, and tears down;
//! - [`plugin`]: the VPN.Plugin interface NM calls, and its signals;
//! - [`registration`]: which stock service: the service from the bus name, its program from the
//!   registration that install moved aside;
//! - [`stock`]: the stock service's process, calls and signals;
//! - [`agent_calls`]: the calls to the privileged agent;
//! - [`restore`]: the profile's `netns-*` keys put back into `vpn.data` from their mirror;
//! - [`error`]: [`ShimError`], and the D-Bus error [`Reply`] NM gets;
//! - [`codec`]: NM's dicts to and from the agent's request; [`keyfile`]: the stock `.name` file.

mod agent_calls;
pub mod codec;
mod driver;
mod error;
pub use crate::keyfile;
mod plugin;
pub mod registration;
mod restore;
pub mod session;
mod stock;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use log::info;

pub use error::{Leaf, Peer, Reply, ShimError};
pub use registration::{read_files, service_of, stock_bus_name, stock_program};

/// Where the stock registrations (`.name` files) are, and where install moves aside each one it
/// takes over.
pub const VPN_DIR: &str = "/usr/lib/NetworkManager/VPN";
/// How a registration moved aside is named: `nm-<plugin>-service.name` becomes
/// `nm-<plugin>-service.name.distrib` (packaging/takeover.sh, `nm_vpn_netns_diverted`).
pub const DIVERTED_SUFFIX: &str = ".name.distrib";

const PLUGIN_PATH: &str = "/org/freedesktop/NetworkManager/VPN/Plugin";
const PLUGIN_INTERFACE: &str = "org.freedesktop.NetworkManager.VPN.Plugin";

/// NM's own bound on each call to a plugin (`DBUS_DEFAULT_TIMEOUT_MSEC`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const LONG_ABOUT: &str = "\
nm-vpn-netns-service is the VPN plugin that NetworkManager runs for the connections of each stock
VPN plugin that installing nm-vpn-netns took over: the installed registration of that plugin
(nm-openvpn-service.name) names it in program=. It takes the VPN service from --bus-name, starts
that service's stock plugin (program= of its registration that installing moved aside, e.g.
nm-openvpn-service.name.distrib) under a bus name of its own, and forwards NetworkManager's calls
to it with the netns-* keys of vpn.data removed. For a connection with netns-isolate=yes it holds
the stock service's configuration back until nm-vpn-netns-agent(8) has moved the tunnel into the
namespace, and then tells NetworkManager a configuration without addresses, routes or DNS
servers. Other connections pass through unchanged. A service whose registration was not moved
aside is refused.

Users do not start it. NetworkManager starts one for each VPN connection, with --bus-name, and
logs what it reports (journalctl -u NetworkManager).";

/// The plugin's command line, as NetworkManager gives it.
#[derive(Debug, Parser)]
#[command(
    name = "nm-vpn-netns-service",
    version,
    about = "NetworkManager VPN plugin that isolates OpenVPN and OpenConnect connections in \
             network namespaces",
    long_about = LONG_ABOUT
)]
pub struct Args {
    /// The D-Bus name to own: NetworkManager passes the VPN service's name with
    /// .Connection_N appended. It always does, as the registrations say
    /// supports-multiple-connections=true.
    #[arg(long)]
    pub bus_name: String,
    /// The stock service to run. By default, program= of the registration of the service of
    /// --bus-name that installing moved aside (/usr/lib/NetworkManager/VPN/*.name.distrib).
    /// --inner-program is its old name.
    #[arg(long, alias = "inner-program")]
    pub stock_program: Option<PathBuf>,
}

impl Args {
    /// What `run` needs; without `--stock-program`, the stock program is looked up.
    pub fn options(self) -> Result<Options, ShimError> {
        let program = match self.stock_program {
            Some(program) => program,
            None => stock_program(Path::new(VPN_DIR), service_of(&self.bus_name))?,
        };
        Ok(Options {
            bus_name: self.bus_name,
            program,
        })
    }
}

/// What `run` needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The name NM passed with `--bus-name`.
    pub bus_name: String,
    /// The stock service's program.
    pub program: PathBuf,
}

/// Runs the plugin until it has stopped: owns NM's name, starts the stock service, serves, and
/// tears down in the order of ARCHITECTURE.md, "Teardown order".
pub async fn run(options: Options) -> Result<(), ShimError> {
    let stock_name = stock_bus_name(&options.bus_name)?;
    stock::refuse_self(&options.program)?;
    // The stock service starts before our own connection to the bus, so that its start-up (a GLib
    // program that loads libnm, the longer of the two) runs while we connect: NM's first call waits
    // for both (BENCHMARKS.md, B2).
    let mut process = stock::StockProcess::spawn(&options.program, &stock_name)?;
    info!(
        "started {} as {stock_name}; owning {}",
        options.program.display(),
        options.bus_name
    );
    let service = service_of(&options.bus_name);
    let driver = match driver::Driver::new(&options.bus_name, service).await {
        Ok(driver) => driver,
        Err(e) => {
            // Not on the bus as far as we know: no Disconnect, only the signals.
            process
                .stop(Duration::ZERO, stock::GROUP_TERM_TIMEOUT)
                .await;
            return Err(e);
        }
    };
    driver.drive(process, &stock_name).await
}
