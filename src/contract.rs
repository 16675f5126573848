//! The contract between the two processes: the plugin shim (unprivileged, inside
//! NetworkManager's sandbox) asks the agent (root, outside it) to isolate a tun.
//!
//! Everything both ends must agree on is here, once: the bus, object and interface names, the
//! typed `Isolate` request and reply (`a{sv}` on the wire, through zbus's dict derives), the error
//! names, and the proxy the shim calls. The agent serves [`crate::agent::Agent`] under the same
//! names. The `#[proxy]` and `#[interface]` attributes take no constants, so unit tests check
//! their literals against these: the proxy's below, the agent's in its service.
//!
//! It changes only compatibly with the previous release, both ways, since an old shim may call a
//! new agent and a new shim an old one during an upgrade: ARCHITECTURE.md, "Compatibility between
//! releases"; `tests/contract_compat.rs` checks it against 0.1.0.
//!
//! ```text
//! // Bus name io.github.NmVpnNetns.Agent1, object /io/github/NmVpnNetns/Agent1
//! interface io.github.NmVpnNetns.Agent1 {
//!   Prepare(in a{sv} request, out a{sv} result);  // since 0.4
//!   Isolate(in a{sv} request, out a{sv} result);
//!   Reapply(in s netns, in a{sv} config, in a{sv} ip4, in a{sv} ip6);
//!   Release(in s netns);
//!   ReleaseWithReport(in s netns, out a{sv} report);  // since 0.2
//!   List(out aa{sv} entries);  // since 0.3
//!   Delete(in s netns, in b force, out a{sv} report);  // since 0.3
//!   property u Version;  // 1
//!   signal LinkLost(s netns, s link, s reason);  // since 0.2, to the lease holder only
//! }
//! errors: io.github.NmVpnNetns.Agent1.Error.{InvalidArgs, AccessDenied, InUse, Timeout, Failed,
//!         UnknownNetns (since 0.3)}
//! ```

use std::collections::HashMap;
use std::marker::PhantomData;

use serde::de::{Deserialize, DeserializeSeed, Deserializer};
use zbus::wire::serialized::Context;
use zbus::wire::{DynamicType, Signature, LE};
use zbus::{DeserializeDict, SerializeDict, Type};

use crate::plan::VarDict;

/// The agent's well-known bus name. Its D-Bus policy lets only root own and call it.
pub const BUS_NAME: &str = "io.github.NmVpnNetns.Agent1";
/// The one object the agent serves.
pub const OBJECT_PATH: &str = "/io/github/NmVpnNetns/Agent1";
/// The interface at [`OBJECT_PATH`]; the same literal stands in the `#[proxy]` and `#[interface]`
/// attributes, which take no constants.
pub const INTERFACE: &str = "io.github.NmVpnNetns.Agent1";
/// The value of the `Version` property: bumped on any incompatible change of this contract.
pub const VERSION: u32 = 1;

/// The name of the signal [`Agent1Proxy::receive_link_lost`] receives, for messages and for
/// tests that look for it on the wire.
pub const LINK_LOST: &str = "LinkLost";

/// `LinkLost`'s `reason`: why the VPN can no longer serve its namespace. A string on the wire, so
/// that a reason added later still stops an older shim's VPN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkLoss {
    /// `link-removed`: the tun left the namespace, destroyed or moved out. openvpn does this when
    /// it reopens its tun, as after the server pushed other options on a reconnect.
    Removed,
    /// `netns-deleted`: the namespace lost its name in `/run/netns` (`ip netns delete`, or
    /// `umount` alone), so no app can be started in it any more.
    NetnsDeleted,
    /// A reason this build does not know.
    Other(String),
}

impl LinkLoss {
    pub fn as_str(&self) -> &str {
        match self {
            LinkLoss::Removed => "link-removed",
            LinkLoss::NetnsDeleted => "netns-deleted",
            LinkLoss::Other(reason) => reason,
        }
    }
}

impl From<&str> for LinkLoss {
    fn from(reason: &str) -> Self {
        match reason {
            "link-removed" => LinkLoss::Removed,
            "netns-deleted" => LinkLoss::NetnsDeleted,
            other => LinkLoss::Other(other.to_owned()),
        }
    }
}

/// `Isolate`'s argument. Nothing in it is trusted: the agent validates every field again, with
/// the same parser and planner the shim uses.
#[derive(Debug, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct IsolateRequest {
    /// `connection.id`, for names made from it and for messages.
    pub id: String,
    /// `connection.uuid`, which owns a namespace the agent creates.
    pub uuid: String,
    /// `connection.permissions`; empty (or absent) means a system connection.
    pub permissions: Option<Vec<String>>,
    /// The connection's `netns-*` keys, exactly as in `vpn.data`.
    pub netns_settings: Option<HashMap<String, String>>,
    /// `ipv4.never-default` of the profile; absent means false.
    pub never_default_v4: Option<bool>,
    /// `ipv6.never-default` of the profile; absent means false.
    pub never_default_v6: Option<bool>,
    /// `tunnel-mtu` of the profile's `vpn.data` (openvpn's `--tun-mtu`); absent means unset, and
    /// then `Config`'s `mtu` applies. Since 0.2.
    pub tunnel_mtu: Option<u32>,
    /// The tun's ifindex in the caller's (NetworkManager's) namespace.
    pub ifindex: u32,
    /// The VPN plugin's `Config` dict, as the stock service emitted it.
    pub config: VarDict,
    /// The VPN plugin's `Ip4Config` dict, when `Config` announced one.
    pub ip4_config: Option<VarDict>,
    /// The VPN plugin's `Ip6Config` dict, when `Config` announced one.
    pub ip6_config: Option<VarDict>,
}

/// `Prepare`'s argument: what `Isolate`'s request carries that is known at Connect, before the
/// tun exists. The agent validates it as it validates `Isolate`'s. Since 0.4.
#[derive(Debug, Default, Clone, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct PrepareRequest {
    /// As in [`IsolateRequest`].
    pub id: String,
    pub uuid: String,
    pub permissions: Option<Vec<String>>,
    pub netns_settings: Option<HashMap<String, String>>,
    pub never_default_v4: Option<bool>,
    pub never_default_v6: Option<bool>,
    pub tunnel_mtu: Option<u32>,
    /// The profile's `vpn.timeout` in seconds, NetworkManager's bound on the whole connect;
    /// absent or 0 means NetworkManager's default. Past it, a prepared namespace that no
    /// `Isolate` took is released.
    pub connect_timeout: Option<u32>,
}

/// `Prepare`'s answer. Since 0.4.
#[derive(Debug, Default, Clone, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct PrepareReply {
    /// The namespace, under `/run/netns`, that the caller now holds.
    pub netns: String,
    /// The agent created the namespace, rather than opening one that was there.
    pub created: bool,
    /// How long the agent's step took, in microseconds.
    pub elapsed_us: u64,
}

/// `Isolate`'s answer.
#[derive(Debug, Default, Clone, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct IsolateReply {
    /// The namespace, under `/run/netns`.
    pub netns: String,
    /// The tun's name inside the namespace (renamed if its name was taken there).
    pub link: String,
    /// The agent created the namespace, rather than reusing one.
    pub created: bool,
    /// How long the agent's isolation step took, in microseconds.
    pub elapsed_us: u64,
}

/// `ReleaseWithReport`'s answer: what the release left behind. Every field is optional, so that
/// either end may add one; both ignore keys they do not know.
#[derive(Debug, Default, Clone, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct ReleaseReport {
    /// The processes, as (pid, comm), that still ran in the namespace when the agent deleted it.
    pub stranded: Option<Vec<(u32, String)>>,
}

/// One namespace the agent keeps a record of, as `List` answers it: a connected VPN's, one kept
/// by `netns-persistent` after its VPN went down, or one a failed teardown left. Since 0.3.
#[derive(Debug, Default, Clone, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct NetnsEntry {
    /// The namespace, under `/run/netns`.
    pub netns: String,
    /// `connection.uuid` of the connection that isolated a VPN in it last.
    pub uuid: String,
    /// Its `connection.id` then; the profile may have been renamed or deleted since.
    pub id: String,
    /// The user of a user connection (`connection.permissions`); absent for a system connection.
    pub user: Option<String>,
    /// `netns-persistent=yes`: the namespace stays after the VPN goes down.
    pub persistent: bool,
    /// The agent created the namespace, rather than using one someone else made.
    pub created: bool,
    /// A VPN is connected in it: a lease holds it.
    pub connected: bool,
    /// The tun's name inside, while connected.
    pub link: Option<String>,
}

/// `Delete`'s answer. Every field is optional, so that either end may add one. Since 0.3.
#[derive(Debug, Default, Clone, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "kebab-case")]
pub struct DeleteReport {
    /// The processes, as (pid, comm), that ran in the namespace and that `force` ended.
    pub ended: Option<Vec<(u32, String)>>,
    /// Those of them still running when the namespace was deleted: they survived SIGKILL.
    pub stranded: Option<Vec<(u32, String)>>,
}

/// Processes as people read them: `PID (comm)`, comma-separated.
pub fn process_list(processes: &[(u32, String)]) -> String {
    let list: Vec<String> = processes
        .iter()
        .map(|(pid, comm)| format!("{pid} ({})", comm.escape_debug()))
        .collect();
    list.join(", ")
}

/// The warning about processes left in a namespace deleted at `down`, in the agent's log and in
/// NetworkManager's (through the plugin).
pub fn stranded_message(netns: &str, stranded: &[(u32, String)]) -> String {
    format!(
        "namespace {netns} was deleted at down while processes still ran in it: {}. They keep \
         running without network and can no longer be reached with ip netns exec; end them, or \
         set netns-persistent=yes in the connection's vpn.data to keep the namespace across \
         reconnects",
        process_list(stranded)
    )
}

/// Errors as callers see them: the name tells a program what happened, the message a person
/// (NetworkManager logs only the message).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.github.NmVpnNetns.Agent1.Error")]
pub enum AgentError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The request is malformed or names something invalid.
    InvalidArgs(String),
    /// The caller may not do this.
    AccessDenied(String),
    /// The namespace is leased by another VPN, or belongs to another connection.
    InUse(String),
    /// `netns-timeout` passed before the namespace was ready; everything was undone.
    Timeout(String),
    /// The kernel or the file system refused; everything was undone.
    Failed(String),
    /// The agent keeps no record of the namespace. Since 0.3.
    UnknownNetns(String),
}

/// A dict that does not decode as the contract's type, naming the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("request field {field:?} is {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

/// Decodes a dict received as plain `a{sv}` into a contract type, so that a malformed field is
/// reported by name. The agent takes `Isolate`'s argument as `a{sv}` rather than the typed struct:
/// zbus would answer a struct that fails to decode with its own generic error before the method
/// runs, which names no field and which the agent could not log.
pub fn from_dict<T>(dict: &VarDict) -> Result<T, FieldError>
where
    T: for<'de> Deserialize<'de> + Type,
{
    let encoding_failed = |e: zbus::Error| FieldError {
        field: String::new(),
        problem: format!("not encodable: {e}"),
    };
    let data = zbus::wire::to_bytes(Context::new(LE, 0), dict).map_err(encoding_failed)?;
    let mut track = serde_path_to_error::Track::new();
    let seed = Tracked::<T> {
        track: &mut track,
        wanted: PhantomData,
    };
    let error = match data.deserialize_with_seed(seed) {
        Ok((value, _)) => return Ok(value),
        Err(error) => error,
    };
    let message = error.to_string();
    // A missing field fails the struct as a whole, at the root of the path; serde's default
    // `missing_field` message is the only place that names it (`a_bad_field_is_named` pins it).
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return Err(FieldError {
            field: field.to_owned(),
            problem: "missing".to_owned(),
        });
    }
    Err(FieldError {
        field: track.path().to_string(),
        problem: format!("invalid: {message}"),
    })
}

/// Deserializes `T` while recording where in it the deserializer is, for [`from_dict`].
struct Tracked<'t, T> {
    track: &'t mut serde_path_to_error::Track,
    wanted: PhantomData<T>,
}

impl<T: Type> DynamicType for Tracked<'_, T> {
    fn signature(&self) -> Signature {
        T::SIGNATURE.clone()
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Tracked<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize(serde_path_to_error::Deserializer::new(
            deserializer,
            self.track,
        ))
    }
}

/// The agent as the shim calls it. One line of IDL per method.
#[zbus::proxy(
    interface = "io.github.NmVpnNetns.Agent1",
    default_service = "io.github.NmVpnNetns.Agent1",
    default_path = "/io/github/NmVpnNetns/Agent1"
)]
pub trait Agent1 {
    /// `Prepare(in a{sv} request, out a{sv} result)`: at Connect, while openvpn still connects,
    /// takes the lease on the connection's namespace for the caller and creates or opens the
    /// namespace, so that `Isolate` only moves and configures the tun. An optimisation: an
    /// `Isolate` without it does the whole work. `Release` ends a prepared lease as any other; so
    /// do the caller leaving the bus and the connect timeout passing without `Isolate`. An agent
    /// older than 0.4 answers `UnknownMethod`. Since 0.4.
    fn prepare(&self, request: &PrepareRequest) -> Result<PrepareReply, AgentError>;

    /// `Isolate(in a{sv} request, out a{sv} result)`: moves the tun into its namespace and
    /// configures it there; answers once done, or fails having undone everything (but what the
    /// caller's `Prepare` made, which stays prepared). The caller's unique name holds the lease:
    /// if it leaves the bus, the agent releases as `Release` would.
    fn isolate(&self, request: &IsolateRequest) -> Result<IsolateReply, AgentError>;

    /// `Reapply(in s netns, in a{sv} config, in a{sv} ip4, in a{sv} ip6)`: re-applies addresses,
    /// routes and DNS after openvpn re-sent its config (a soft restart where it kept root). Only
    /// the lease holder may call it; `ip4`/`ip6` may be empty.
    fn reapply(
        &self,
        netns: &str,
        config: &VarDict,
        ip4: &VarDict,
        ip6: &VarDict,
    ) -> Result<(), AgentError>;

    /// `Release(in s netns)`: ends the caller's lease; see ARCHITECTURE.md, "Ownership".
    fn release(&self, netns: &str) -> Result<(), AgentError>;

    /// `ReleaseWithReport(in s netns, out a{sv} report)`: `Release`, answered with what it left
    /// behind ([`ReleaseReport`]). An agent older than 0.2 answers `UnknownMethod`; the shim then
    /// calls `Release`.
    fn release_with_report(&self, netns: &str) -> Result<ReleaseReport, AgentError>;

    /// `List(out aa{sv} entries)`: every namespace the agent keeps a record of, as
    /// [`NetnsEntry`]; root only, like every method. Since 0.3.
    fn list(&self) -> Result<Vec<NetnsEntry>, AgentError>;

    /// `Delete(in s netns, in b force, out a{sv} report)`: tears down a namespace the agent keeps,
    /// as a release of a namespace that is not persistent does: the namespace if the agent
    /// created it, the DNS files, the record. Refused (`InUse`) while a VPN is connected in it,
    /// and while processes run in it unless `force`, which ends them first (SIGTERM, then
    /// SIGKILL); `UnknownNetns` for a namespace without a record. Since 0.3.
    fn delete(&self, netns: &str, force: bool) -> Result<DeleteReport, AgentError>;

    /// `signal LinkLost(s netns, s link, s reason)`: the tun `link` of the caller's lease on
    /// `netns` can no longer serve it, for the [`LinkLoss`] `reason`; the holder stops the VPN.
    /// Sent to the lease holder alone; the stream yields only what the agent's name's owner
    /// sent. A shim older than 0.2 ignores it. Since 0.2.
    #[zbus(signal)]
    fn link_lost(&self, netns: &str, link: &str, reason: &str) -> zbus::Result<()>;

    /// `property u Version`: [`VERSION`].
    #[zbus(property)]
    fn version(&self) -> zbus::Result<u32>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{owned, var_dict};
    use zbus::names::ErrorName;
    use zbus::DBusError;

    #[test]
    fn proxy_defaults_are_the_names() {
        use zbus::proxy::Defaults;
        assert_eq!(
            Agent1Proxy::DESTINATION.as_ref().map(|d| d.as_str()),
            Some(BUS_NAME)
        );
        assert_eq!(
            Agent1Proxy::PATH.as_ref().map(|p| p.as_str()),
            Some(OBJECT_PATH)
        );
        assert_eq!(
            Agent1Proxy::INTERFACE.as_ref().map(|i| i.as_str()),
            Some(INTERFACE)
        );
    }

    fn request() -> IsolateRequest {
        IsolateRequest {
            id: "Work VPN".into(),
            uuid: "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b".into(),
            permissions: Some(vec!["user:alice:".into()]),
            netns_settings: Some(HashMap::from([("netns-isolate".into(), "yes".into())])),
            never_default_v4: Some(false),
            never_default_v6: Some(true),
            tunnel_mtu: Some(1400),
            ifindex: 7,
            config: var_dict(vec![("tundev", owned("tun0"))]),
            ip4_config: Some(var_dict(vec![("address", owned(0x0200_13c6u32))])),
            ip6_config: None,
        }
    }

    /// The dict as it crosses the bus, decoded as a plain `a{sv}`.
    fn on_the_wire<T: serde::Serialize + Type>(value: &T) -> VarDict {
        let data = zbus::wire::to_bytes(Context::new(LE, 0), value).unwrap();
        data.deserialize::<VarDict>().unwrap().0
    }

    #[test]
    fn request_keys_on_the_wire() {
        let wire = on_the_wire(&request());
        let mut keys: Vec<_> = wire.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "config",
                "id",
                "ifindex",
                "ip4-config",
                "netns-settings",
                "never-default-v4",
                "never-default-v6",
                "permissions",
                "tunnel-mtu",
                "uuid"
            ]
        );
        assert_eq!(wire["ifindex"], owned(7u32));
        assert_eq!(wire["tunnel-mtu"], owned(1400u32));
        assert_eq!(wire["permissions"], owned(vec!["user:alice:"]));
        assert_eq!(from_dict::<IsolateRequest>(&wire).unwrap(), request());
    }

    #[test]
    fn reply_keys_on_the_wire() {
        let reply = IsolateReply {
            netns: "work".into(),
            link: "tun0".into(),
            created: true,
            elapsed_us: 21_000,
        };
        let wire = on_the_wire(&reply);
        assert_eq!(
            wire,
            var_dict(vec![
                ("netns", owned("work")),
                ("link", owned("tun0")),
                ("created", owned(true)),
                ("elapsed-us", owned(21_000u64)),
            ])
        );
        assert_eq!(from_dict::<IsolateReply>(&wire).unwrap(), reply);
    }

    #[test]
    fn list_and_delete_answers_on_the_wire() {
        let entry = NetnsEntry {
            netns: "work".into(),
            uuid: "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b".into(),
            id: "Work VPN".into(),
            user: None,
            persistent: true,
            created: true,
            connected: false,
            link: None,
        };
        let wire = on_the_wire(&entry);
        assert_eq!(
            wire,
            var_dict(vec![
                ("netns", owned("work")),
                ("uuid", owned("8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b")),
                ("id", owned("Work VPN")),
                ("persistent", owned(true)),
                ("created", owned(true)),
                ("connected", owned(false)),
            ])
        );
        assert_eq!(from_dict::<NetnsEntry>(&wire).unwrap(), entry);
        let report = DeleteReport {
            ended: Some(vec![(4242, "sleep".into())]),
            stranded: None,
        };
        let wire = on_the_wire(&report);
        assert_eq!(
            wire,
            var_dict(vec![("ended", owned(vec![(4242u32, "sleep")]))])
        );
        assert_eq!(from_dict::<DeleteReport>(&wire).unwrap(), report);
        assert_eq!(
            process_list(&[(1, "a b".into()), (2, "c\n".into())]),
            "1 (a b), 2 (c\\n)"
        );
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let mut wire = on_the_wire(&request());
        for key in [
            "permissions",
            "netns-settings",
            "never-default-v4",
            "ip4-config",
        ] {
            wire.remove(key);
        }
        let decoded: IsolateRequest = from_dict(&wire).unwrap();
        assert_eq!(decoded.permissions, None);
        assert_eq!(decoded.never_default_v4, None);
        assert_eq!(decoded.ip4_config, None);
    }

    #[test]
    fn a_bad_field_is_named() {
        let mut wire = on_the_wire(&request());
        wire.remove("uuid");
        let e = from_dict::<IsolateRequest>(&wire).unwrap_err();
        assert_eq!(e.to_string(), "request field \"uuid\" is missing");

        let mut wire = on_the_wire(&request());
        wire.insert("ifindex".into(), owned("tun0"));
        let e = from_dict::<IsolateRequest>(&wire).unwrap_err();
        assert_eq!(e.field, "ifindex", "{e}");
        assert!(
            e.to_string()
                .starts_with("request field \"ifindex\" is invalid: "),
            "{e}"
        );

        let mut wire = on_the_wire(&request());
        wire.insert("config".into(), owned(3u32));
        let e = from_dict::<IsolateRequest>(&wire).unwrap_err();
        assert_eq!(e.field, "config", "{e}");
    }

    #[test]
    fn a_link_loss_reason_round_trips_and_an_unknown_one_is_kept() {
        for loss in [LinkLoss::Removed, LinkLoss::NetnsDeleted] {
            assert_eq!(LinkLoss::from(loss.as_str()), loss);
        }
        assert_eq!(
            LinkLoss::from("link-eaten"),
            LinkLoss::Other("link-eaten".into())
        );
    }

    #[test]
    fn error_names_are_below_the_interface() {
        let e = AgentError::InvalidArgs("x".into());
        assert_eq!(
            e.name(),
            ErrorName::try_from(format!("{INTERFACE}.Error.InvalidArgs")).unwrap()
        );
    }
}
