use super::*;

fn vpn(id: &str, uuid: &str, netns: &str, permissions: &[&str], connected: bool) -> Vpn {
    Vpn {
        id: id.into(),
        uuid: uuid.into(),
        netns: netns.parse().unwrap(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        connected,
    }
}

fn vpns() -> Vec<Vpn> {
    vec![
        vpn("work", "u-work", "work", &[], true),
        vpn("home", "u-home", "u1000-home", &["user:alice:"], false),
        vpn("lab", "u-lab", "lab", &["user:bob:"], true),
    ]
}

#[test]
fn a_target_is_an_id_a_uuid_or_a_namespace() {
    let vpns = vpns();
    for target in ["work", "u-work"] {
        assert_eq!(resolve(Some(target), &vpns).unwrap().uuid, "u-work");
    }
    assert_eq!(resolve(Some("lab"), &vpns).unwrap().uuid, "u-lab");
}

#[test]
fn without_a_target_the_one_connected_vpn() {
    let vpns = vpns();
    assert_eq!(
        resolve(None, &vpns).unwrap_err(),
        TargetError::SeveralConnected {
            names: vec!["work (work)".into(), "lab (lab)".into()]
        }
    );
    assert_eq!(resolve(None, &vpns[..2]).unwrap().uuid, "u-work");
    assert_eq!(
        resolve(None, &vpns[1..2]).unwrap_err(),
        TargetError::NoneConnected
    );
}

#[test]
fn a_vpn_that_is_down_is_named_so() {
    let e = resolve(Some("u1000-home"), &vpns()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VPN \"home\" is down, so its namespace u1000-home is not in use; bring it up first: \
         nmcli connection up uuid u-home"
    );
}

#[test]
fn a_namespace_of_no_vpn_is_refused() {
    let e = resolve(Some("other"), &vpns()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no isolated VPN has the id, uuid or namespace \"other\""
    );
}

#[test]
fn a_shared_name_is_the_connected_one_else_ambiguous() {
    let mut vpns = vpns();
    vpns.push(vpn("work", "u-work2", "work2", &[], false));
    assert_eq!(resolve(Some("work"), &vpns).unwrap().uuid, "u-work");
    vpns[0].connected = false;
    assert!(matches!(
        resolve(Some("work"), &vpns).unwrap_err(),
        TargetError::Ambiguous { .. }
    ));
    assert_eq!(
        resolve(Some("u-work2"), &vpns).unwrap_err().to_string(),
        "VPN \"work\" is down, so its namespace work2 is not in use; bring it up first: nmcli \
         connection up uuid u-work2"
    );
}

#[test]
fn who_may_exec_where() {
    let vpns = vpns();
    let (system, alices, bobs) = (&vpns[0], &vpns[1], &vpns[2]);
    assert_eq!(authorize("alice", 1000, system), Ok(()));
    assert_eq!(authorize("alice", 1000, alices), Ok(()));
    assert_eq!(authorize("root", 0, bobs), Ok(()));
    assert_eq!(
        authorize("alice", 1000, bobs).unwrap_err().to_string(),
        "user \"alice\" may not exec into lab: connection \"lab\" belongs to bob"
    );
}

fn entry(netns: &str, uuid: &str, connected: bool) -> NetnsEntry {
    NetnsEntry {
        netns: netns.into(),
        uuid: uuid.into(),
        connected,
        ..NetnsEntry::default()
    }
}

#[test]
fn the_agent_names_the_namespace_it_holds() {
    let name = |s: &str| s.parse::<NetnsName>().unwrap();
    let entries = [
        entry("u1000-home", "u-home", true),
        entry("kept", "u-kept", false),
    ];
    assert_eq!(
        agent_view(&entries, "u-home", name("home"), true),
        (name("u1000-home"), true)
    );
    // NM has not reached ACTIVATED yet, or is already tearing it down.
    assert_eq!(
        agent_view(&entries, "u-home", name("home"), false),
        (name("u1000-home"), false)
    );
    // NM says ACTIVATED, but the agent holds no namespace for it: nothing to enter.
    assert_eq!(
        agent_view(&entries, "u-kept", name("kept"), true),
        (name("kept"), false)
    );
    assert_eq!(
        agent_view(&[], "u-work", name("work"), true),
        (name("work"), false)
    );
}
