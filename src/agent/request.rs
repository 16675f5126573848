//! The agent's reading of an `Isolate` request: every field decoded and validated, the caller's
//! user and the namespace's name formed as the policy says, and the plan made, before the
//! executor touches anything. The service calls it; the fuzzers call [`validate_request`].

use std::collections::BTreeMap;
use std::time::Instant;

use crate::agent::executor::IsolateArgs;
use crate::agent::policy::Policy;
use crate::contract::{self, AgentError, IsolateRequest};
use crate::plan::settings::{self, ConnectionInfo, IpSettings};
use crate::plan::{self, PlanInput, VarDict};
use crate::report::chain;

/// Where the agent reads the host's nsswitch.conf, the base of the namespace's own.
const HOST_NSSWITCH: &str = "/etc/nsswitch.conf";

pub(super) fn read_host_nsswitch() -> String {
    // A host without the file gets glibc's defaults, which the plan's own `hosts:` line overrides.
    std::fs::read_to_string(HOST_NSSWITCH).unwrap_or_default()
}

pub(super) fn plan_error(e: plan::PlanError) -> AgentError {
    AgentError::InvalidArgs(chain(&e))
}

/// The id and uuid go into the record and the logs, so a hostile caller must not make them grow.
fn check_sizes(req: &IsolateRequest) -> Result<(), AgentError> {
    for (field, value, cap) in [("id", &req.id, 1024), ("uuid", &req.uuid, 64)] {
        if value.len() > cap {
            let len = value.len();
            return Err(AgentError::InvalidArgs(format!(
                "request field {field:?} has {len} bytes; at most {cap}"
            )));
        }
    }
    Ok(())
}

/// The `Isolate` request with every field decoded and validated: nothing in it is trusted until
/// `settings::parse` and `plan::build` accepted it. A user connection's name is formed as
/// `policy` says.
pub(super) fn decode_request(
    req: &VarDict,
    owner: String,
    policy: Policy,
) -> Result<IsolateArgs, AgentError> {
    let invalid = |msg: String| AgentError::InvalidArgs(msg);
    // The deadline starts when the request arrives, before any validation work.
    let start = Instant::now();
    let req: IsolateRequest = contract::from_dict(req).map_err(|e| invalid(e.to_string()))?;
    if req.ifindex == 0 {
        return Err(invalid(
            "request field \"ifindex\" must be a positive u32".into(),
        ));
    }
    check_sizes(&req)?;
    // Absent, a user connection would pass for a system one.
    let permissions = req.permissions.ok_or_else(|| {
        invalid(
            "request field \"permissions\" is missing; send connection.permissions, empty for a \
             system connection"
                .into(),
        )
    })?;
    let conn = ConnectionInfo {
        id: req.id,
        uuid: req.uuid,
        permissions,
        ipv4: IpSettings {
            never_default: req.never_default_v4.unwrap_or_default(),
            ..Default::default()
        },
        ipv6: IpSettings {
            never_default: req.never_default_v6.unwrap_or_default(),
            ..Default::default()
        },
    };
    let netns_settings: BTreeMap<String, String> =
        req.netns_settings.unwrap_or_default().into_iter().collect();
    let settings = settings::parse(&netns_settings, &conn).map_err(|e| invalid(chain(&e)))?;
    if !settings.isolate {
        return Err(invalid(format!(
            "connection {:?} does not ask for isolation (netns-isolate is not yes)",
            conn.id
        )));
    }
    let denied = |e: crate::agent::policy::PolicyError| AgentError::AccessDenied(chain(&e));
    let user = policy.connection_user(&conn.permissions).map_err(denied)?;
    let netns = match &user {
        Some(user) => policy
            .user_netns_name(user, &settings.name, &settings.name_source)
            .map_err(denied)?,
        None => settings.name.clone(),
    };
    let host_nsswitch = read_host_nsswitch();
    let plan = plan::build(&PlanInput {
        netns,
        never_default_v4: settings.never_default_v4,
        never_default_v6: settings.never_default_v6,
        tunnel_mtu: req.tunnel_mtu,
        config: &req.config,
        ip4_config: req.ip4_config.as_ref(),
        ip6_config: req.ip6_config.as_ref(),
        host_nsswitch: &host_nsswitch,
    })
    .map_err(plan_error)?;
    Ok(IsolateArgs {
        plan,
        connection_uuid: settings.connection_uuid,
        connection_id: settings.connection_id,
        persistent: settings.persistent,
        user,
        policy,
        tun_ifindex: req.ifindex,
        owner,
        never_default_v4: settings.never_default_v4,
        never_default_v6: settings.never_default_v6,
        tunnel_mtu: req.tunnel_mtu,
        deadline: start + settings.timeout,
    })
}

/// Everything `Isolate` checks before it touches the system, under the default policy, alone: for
/// the fuzzers (`fuzz/`) and the test that replays what they found.
#[doc(hidden)]
pub fn validate_request(req: &VarDict) -> Result<(), AgentError> {
    decode_request(req, String::new(), Policy::default()).map(drop)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use zbus::OwnedVariant;

    use super::decode_request;
    use crate::agent::leases::Lease;
    use crate::agent::policy::Policy;
    use crate::plan::VarDict;

    /// The request's `tunnel-mtu` is what the tun gets, not Config's `mtu` (1500 from
    /// nm-openvpn's helper), and the lease keeps it for a `Reapply`.
    #[test]
    fn the_requests_tunnel_mtu_is_planned_and_leased() {
        let ov = |v: zbus::Variant<'_>| OwnedVariant::try_from(v).unwrap();
        let dict = |e: Vec<(&str, OwnedVariant)>| -> VarDict {
            e.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        };
        let config = dict(vec![
            ("tundev", ov("tun0".into())),
            ("gateway", ov(0x0100_12c6u32.into())),
            ("mtu", ov(1500u32.into())),
            ("has-ip4", ov(true.into())),
        ]);
        let ip4 = dict(vec![
            ("address", ov(0x0200_13c6u32.into())),
            ("prefix", ov(24u32.into())),
        ]);
        let settings = HashMap::from([("netns-isolate".to_owned(), "yes".to_owned())]);
        let request = |tunnel_mtu: Option<u32>| {
            let mut r = dict(vec![
                ("id", ov("work".into())),
                ("uuid", ov("8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b".into())),
                ("permissions", ov(Vec::<String>::new().into())),
                ("netns-settings", ov(settings.clone().into())),
                ("ifindex", ov(7u32.into())),
                ("config", ov(config.clone().into())),
                ("ip4-config", ov(ip4.clone().into())),
            ]);
            if let Some(mtu) = tunnel_mtu {
                r.insert("tunnel-mtu".into(), ov(mtu.into()));
            }
            decode_request(&r, String::new(), Policy::default()).unwrap()
        };
        let args = request(Some(1400));
        let lease = Lease::from(&args);
        assert_eq!(args.plan.link.mtu, Some(1400), "expected tunnel-mtu");
        assert_eq!(
            (args.tunnel_mtu, lease.tunnel_mtu),
            (Some(1400), Some(1400))
        );
        let args = request(None);
        let lease = Lease::from(&args);
        assert_eq!(args.plan.link.mtu, Some(1500), "expected Config's mtu");
        assert_eq!(lease.tunnel_mtu, None);
    }
}
