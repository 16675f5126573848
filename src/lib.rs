//! nm-vpn-netns: isolate a NetworkManager OpenVPN connection in its own network namespace.
//!
//! Data flows `config` (keys of `vpn.data`) -> `plan` -> agent (kernel) ; the shim proxies
//! NetworkManager's VPN plugin interface to the stock nm-openvpn service.

pub mod agent;
pub mod config;
pub mod executor;
pub mod logging;
pub mod plan;
pub mod shim;
pub mod sys;
