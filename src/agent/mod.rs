//! The privileged agent, `nm-vpn-netns-agent`: root, activated by the bus, outside
//! NetworkManager's sandbox, which can neither create a namespace nor enter one.
//!
//! - [`service`]: the D-Bus facade of [`crate::contract`]: checks the caller, decodes and plans,
//!   keeps the leases, and maps errors to the contract's names.
//! - [`executor`]: carries a plan out all or nothing, and tears it down again.
//! - [`sys`]: the one trait through which the executor touches the system.

pub mod executor;
pub mod service;
pub mod sys;

pub use service::{serve, watch_callers, Agent};
