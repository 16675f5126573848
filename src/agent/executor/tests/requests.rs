//! The requests the executor's tests make: one connection's, and its variants.

use super::*;
use crate::agent::policy::Policy;

/// `req` with its connection's part changed by `change`.
pub(super) fn claim(mut req: IsolateArgs, change: impl FnOnce(&mut PrepareArgs)) -> IsolateArgs {
    change(&mut req.claim);
    req
}

pub(super) fn persistent_request() -> IsolateArgs {
    claim(request(), |c| c.persistent = true)
}

pub(super) fn request() -> IsolateArgs {
    IsolateArgs {
        claim: PrepareArgs {
            netns: work(),
            connection_uuid: UUID.to_owned(),
            connection_id: "work".to_owned(),
            persistent: false,
            user: None,
            policy: Policy::default(),
            owner: ":1.42".to_owned(),
            never_default_v4: false,
            never_default_v6: false,
            tunnel_mtu: None,
            deadline: Instant::now() + Duration::from_secs(3600),
        },
        plan: plan(),
        tun_ifindex: 7,
    }
}

/// [`request`] with a policy that lets system connections use the foreign namespace `work`.
pub(super) fn foreign_allowed() -> IsolateArgs {
    claim(request(), |c| {
        c.policy = Policy {
            system_foreign: [work()].into(),
            ..Policy::default()
        }
    })
}

/// [`request`] as a connection of user alice, whose names are taken as given.
pub(super) fn alice(req: IsolateArgs) -> IsolateArgs {
    claim(req, |c| c.user = Some("alice".to_owned()))
}

pub(super) fn other_request() -> IsolateArgs {
    let req = claim(request(), |c| {
        c.connection_uuid = OTHER_UUID.to_owned();
        c.connection_id = "work!".to_owned();
        c.owner = ":1.43".to_owned();
    });
    IsolateArgs {
        tun_ifindex: 8,
        plan: IsolationPlan {
            link: LinkPlan {
                name: "tun1".parse().unwrap(),
                mtu: None,
            },
            ..plan()
        },
        ..req
    }
}
