//! nm-vpn-netns puts a NetworkManager VPN connection into its own network namespace.
//!
//! Two processes, in the order a connection meets them (ARCHITECTURE.md tells the whole story):
//!
//! - **NetworkManager** spawns our plugin, `nm-vpn-netns-service`, in place of the stock
//!   nm-openvpn service, and talks `org.freedesktop.NetworkManager.VPN.Plugin` to it.
//! - [`shim`] is that plugin. It runs the stock service under a name of its own, forwards NM's
//!   calls with the `netns-*` keys removed, and for an isolated connection holds the stock
//!   service's config back until the agent has moved the tun.
//! - [`contract`] is what the shim and the agent say to each other over D-Bus: names, typed
//!   messages, errors and the proxy.
//! - [`agent`] is the root process, `nm-vpn-netns-agent`, activated by the bus outside NM's
//!   sandbox. It validates the request again, plans, and has its executor touch the kernel
//!   through one narrow trait ([`agent::sys::Sys`]).
//! - [`plan`] is the pure core both processes share: the `netns-*` settings, NetworkManager's
//!   dicts, the isolation plan and the DNS files. No I/O.
//! - [`cli`] is the `nm-vpn-netns` command's interface; [`keyfile`] reads GLib key files; [`logging`] follows NM's conventions;
//!   [`report`] renders an error with its causes, once, where it leaves the process.

// Functions outside tests stay short enough to read at once (clippy.toml sets the bound).
#![cfg_attr(not(test), deny(clippy::too_many_lines))]

pub mod agent;
pub mod cli;
pub mod contract;
pub mod keyfile;
pub mod logging;
pub mod nmbus;
pub mod plan;
pub mod report;
pub mod shim;
