//! The privileged agent, `nm-vpn-netns-agent`: root, activated by the bus, outside
//! NetworkManager's sandbox, which can neither create a namespace nor enter one.
//!
//! - [`service`]: the D-Bus facade of [`crate::contract`]: checks the caller, decodes and plans,
//!   keeps the leases, and maps errors to the contract's names.
//! - [`lifecycle`]: the agent on the bus: the leases it takes back when it starts, the callers
//!   that leave, and its exit after the last release once its binary was replaced.
//! - [`executor`]: carries a plan out all or nothing, and tears it down again.
//! - [`record`]: what the agent owns, on disk, one record per namespace.
//! - [`sys`]: the one trait through which the executor touches the system; [`linux`] implements
//!   it on the kernel, with [`netlink`] for links, addresses and routes and [`rtmsg`] for the
//!   pure decisions of which messages to send.

pub mod executor;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
pub mod lifecycle;
pub mod linux;
mod netlink;
pub mod record;
mod rtmsg;
pub mod service;
pub mod sys;

pub use service::Agent;
