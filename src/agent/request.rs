//! An `Isolate` or `Prepare` request decoded, validated and planned, before the agent touches
//! anything.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::agent::executor::{IsolateArgs, PrepareArgs};
use crate::agent::policy::{Policy, PolicyError, UidOf};
use crate::contract::{self, AgentError, IsolateRequest, PrepareRequest};
use crate::plan::settings::{self, ConnectionInfo, IpSettings};
use crate::plan::{self, PlanInput, VarDict};
use crate::report::chain;

/// Where the agent reads the host's nsswitch.conf, the base of the namespace's own.
const HOST_NSSWITCH: &str = "/etc/nsswitch.conf";

/// A request's `decode` ([`decode_request`], [`decode_prepare`]) on tokio's blocking pool. A user
/// connection's uid comes from NSS, which may wait seconds on SSSD or an LDAP server: on the
/// event loop, that wait would stall every other caller meanwhile (tests/agent_p2p.rs shows that
/// it does not).
pub(super) async fn off_the_loop<T: Send + 'static>(
    decode: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(decode)
        .await
        .map_err(|e| AgentError::Failed(format!("cannot decode the request: {e}")))?
}

pub(super) fn read_host_nsswitch() -> String {
    // A host without the file gets glibc's defaults, which the plan's own `hosts:` line overrides.
    std::fs::read_to_string(HOST_NSSWITCH).unwrap_or_default()
}

pub(super) fn plan_error(e: plan::PlanError) -> AgentError {
    AgentError::InvalidArgs(chain(&e))
}

/// The id and uuid go into the record and the logs, so a hostile caller must not make them grow.
fn check_sizes(id: &str, uuid: &str) -> Result<(), AgentError> {
    for (field, value, cap) in [("id", id, 1024), ("uuid", uuid, 64)] {
        if value.len() > cap {
            let len = value.len();
            return Err(AgentError::InvalidArgs(format!(
                "request field {field:?} has {len} bytes; at most {cap}"
            )));
        }
    }
    Ok(())
}

/// The fields that `Isolate` and `Prepare` share: the connection, as Connect knew it.
struct ConnectionFields {
    id: String,
    uuid: String,
    permissions: Option<Vec<String>>,
    netns_settings: Option<HashMap<String, String>>,
    never_default_v4: Option<bool>,
    never_default_v6: Option<bool>,
    tunnel_mtu: Option<u32>,
}

/// Who asks: the caller's unique name, the policy read for the request, how a user's uid is
/// found, and when the request arrived.
pub(super) struct Asker {
    pub owner: String,
    pub policy: Policy,
    pub uid_of: UidOf,
    pub arrived: Instant,
}

impl Asker {
    /// A caller with no name under the default policy, arrived now: for checks of a request
    /// alone.
    pub fn anonymous() -> Self {
        Asker {
            owner: String::new(),
            policy: Policy::default(),
            uid_of: crate::agent::policy::system_uid,
            arrived: Instant::now(),
        }
    }
}

/// The connection's claim on its namespace, validated: `settings::parse` accepted its keys and
/// the policy named its namespace. The deadline counts from when the request arrived.
fn decode_claim(req: ConnectionFields, asker: Asker) -> Result<PrepareArgs, AgentError> {
    let invalid = |msg: String| AgentError::InvalidArgs(msg);
    check_sizes(&req.id, &req.uuid)?;
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
    let Asker {
        owner,
        policy,
        uid_of,
        arrived,
    } = asker;
    let denied = |e: PolicyError| AgentError::AccessDenied(chain(&e));
    let user = policy.connection_user(&conn.permissions).map_err(denied)?;
    let netns = match &user {
        Some(user) => policy
            .user_netns_name(user, &settings.name, &settings.name_source, uid_of)
            .map_err(denied)?,
        None => settings.name.clone(),
    };
    Ok(PrepareArgs {
        netns,
        connection_uuid: settings.connection_uuid,
        connection_id: settings.connection_id,
        persistent: settings.persistent,
        user,
        policy,
        owner,
        never_default_v4: settings.never_default_v4,
        never_default_v6: settings.never_default_v6,
        tunnel_mtu: req.tunnel_mtu,
        deadline: arrived + settings.timeout,
    })
}

/// The `Prepare` request decoded and validated as [`decode_request`] does `Isolate`'s, with the
/// connect timeout it names, if any.
pub(super) fn decode_prepare(
    req: &VarDict,
    asker: Asker,
) -> Result<(PrepareArgs, Option<u32>), AgentError> {
    let req: PrepareRequest =
        contract::from_dict(req).map_err(|e| AgentError::InvalidArgs(e.to_string()))?;
    let connect_timeout = req.connect_timeout.filter(|&s| s > 0);
    let fields = ConnectionFields {
        id: req.id,
        uuid: req.uuid,
        permissions: req.permissions,
        netns_settings: req.netns_settings,
        never_default_v4: req.never_default_v4,
        never_default_v6: req.never_default_v6,
        tunnel_mtu: req.tunnel_mtu,
    };
    Ok((decode_claim(fields, asker)?, connect_timeout))
}

/// The `Isolate` request with every field decoded and validated: nothing in it is trusted until
/// `settings::parse` and `plan::build` accepted it. A user connection's name is formed as
/// the asker's policy says. The deadline counts from when the request arrived, so that the time
/// spent in the queue of the blocking pool and in a slow user lookup counts against it.
pub(super) fn decode_request(req: &VarDict, asker: Asker) -> Result<IsolateArgs, AgentError> {
    let invalid = |msg: String| AgentError::InvalidArgs(msg);
    let req: IsolateRequest = contract::from_dict(req).map_err(|e| invalid(e.to_string()))?;
    if req.ifindex == 0 {
        return Err(invalid(
            "request field \"ifindex\" must be a positive u32".into(),
        ));
    }
    let fields = ConnectionFields {
        id: req.id,
        uuid: req.uuid,
        permissions: req.permissions,
        netns_settings: req.netns_settings,
        never_default_v4: req.never_default_v4,
        never_default_v6: req.never_default_v6,
        tunnel_mtu: req.tunnel_mtu,
    };
    let claim = decode_claim(fields, asker)?;
    let host_nsswitch = read_host_nsswitch();
    let plan = plan::build(&PlanInput {
        netns: claim.netns.clone(),
        never_default_v4: claim.never_default_v4,
        never_default_v6: claim.never_default_v6,
        tunnel_mtu: claim.tunnel_mtu,
        config: &req.config,
        ip4_config: req.ip4_config.as_ref(),
        ip6_config: req.ip6_config.as_ref(),
        host_nsswitch: &host_nsswitch,
    })
    .map_err(plan_error)?;
    Ok(IsolateArgs {
        claim,
        plan,
        tun_ifindex: req.ifindex,
    })
}
