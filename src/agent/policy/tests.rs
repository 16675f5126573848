use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::report::chain;

fn parse(text: &str) -> Result<Policy, String> {
    Policy::parse(Path::new("/etc/nm-vpn-netns/agent.conf"), text).map_err(|e| chain(&e))
}

fn name(s: &str) -> NetnsName {
    s.parse().unwrap()
}

#[test]
fn defaults_confine_both_kinds_of_connection() {
    let policy = parse("").unwrap();
    assert_eq!(policy, Policy::default());
    assert!(policy.system_foreign.is_empty());
    assert_eq!(policy.user_names, UserNames::Prefixed);
    assert_eq!(policy.max_per_user, 4);
}

#[test]
fn every_key_is_read() {
    let policy = parse(
        "# admin\n[agent]\nsystem-foreign-namespaces=lab;office;\nuser-namespace-names=as-given\n\
         max-namespaces-per-user=0\n",
    )
    .unwrap();
    assert_eq!(
        policy,
        Policy {
            system_foreign: [name("lab"), name("office")].into(),
            user_names: UserNames::AsGiven,
            max_per_user: 0,
        }
    );
}

#[test]
fn a_bad_key_or_value_names_the_file_the_key_and_the_value() {
    for (text, expected) in [
        (
            "[agent]\nmax-namespaces-per-user=four\n",
            "the agent's policy /etc/nm-vpn-netns/agent.conf, line 2: \
             max-namespaces-per-user=\"four\": not a number from 0 to 1024",
        ),
        (
            "[agent]\nuser-namespace-names=plain\n",
            "the agent's policy /etc/nm-vpn-netns/agent.conf, line 2: \
             user-namespace-names=\"plain\": not prefixed or as-given",
        ),
        (
            "[agent]\nsystem-foreign-namespaces=lab;../etc\n",
            "the agent's policy /etc/nm-vpn-netns/agent.conf, line 2: \
             system-foreign-namespaces=\"lab;../etc\": invalid namespace name \"../etc\"",
        ),
        (
            "[agent]\nmax-namespace-per-user=2\n",
            "the agent's policy /etc/nm-vpn-netns/agent.conf, line 2: unknown key \
             \"max-namespace-per-user\" in [agent]",
        ),
        (
            "[policy]\nmax-namespaces-per-user=2\n",
            "unknown key \"max-namespaces-per-user\" in [policy]",
        ),
        (
            "max-namespaces-per-user=2\n",
            "the agent's policy /etc/nm-vpn-netns/agent.conf is not a valid key file: line 1: a \
             key comes before the first group",
        ),
    ] {
        let err = parse(text).unwrap_err();
        assert!(
            err.contains(expected),
            "{text:?}:\n expected {expected}\n got {err}"
        );
    }
}

#[test]
fn the_file_must_be_the_owners_and_writable_by_no_one_else() {
    let dir = std::env::temp_dir().join(format!("nm-vpn-netns-policy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("agent.conf");
    let me = nix::unistd::geteuid().as_raw();
    assert_eq!(Policy::load(&path, me).unwrap(), Policy::default());

    std::fs::write(&path, "[agent]\nmax-namespaces-per-user=2\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(Policy::load(&path, me).unwrap().max_per_user, 2);

    let err = chain(&Policy::load(&path, me + 1).unwrap_err());
    assert!(
        err.starts_with(&format!(
            "refusing the agent's policy {}: it is owned by uid {me}",
            path.display()
        )),
        "{err}"
    );
    for mode in [0o664, 0o646] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = chain(&Policy::load(&path, me).unwrap_err());
        assert!(err.contains("writable by group or others"), "{err}");
    }
    let link = dir.join("link.conf");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = chain(&Policy::load(&link, me).unwrap_err());
    assert!(err.starts_with("cannot read the agent's policy"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_user_connection_is_known_by_its_first_user() {
    let policy = Policy::default();
    let perms = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(policy.connection_user(&[]).unwrap(), None);
    assert_eq!(
        policy.connection_user(&perms(&["user:alice:"])).unwrap(),
        Some("alice".to_owned())
    );
    assert_eq!(
        policy.connection_user(&perms(&["user:bob"])).unwrap(),
        Some("bob".to_owned())
    );
    let err = chain(&policy.connection_user(&perms(&["group:x"])).unwrap_err());
    assert!(err.contains("no user:NAME entry"), "{err}");
    let two = perms(&["user:alice:", "user:bob:"]);
    let err = chain(&policy.connection_user(&two).unwrap_err());
    assert!(err.contains("several users"), "{err}");
    let as_given = Policy {
        user_names: UserNames::AsGiven,
        ..Policy::default()
    };
    assert_eq!(
        as_given.connection_user(&two).unwrap(),
        Some("alice".to_owned())
    );
}

/// The users of these tests, as the name service would give them.
fn uid_of(user: &str) -> nix::Result<Option<u32>> {
    Ok(match user {
        "alice" => Some(1000),
        "a-b" => Some(1001),
        "a" => Some(1002),
        "big" => Some(u32::MAX),
        "broken" => return Err(nix::Error::ECONNREFUSED),
        _ => None,
    })
}

fn user_name(
    policy: &Policy,
    user: &str,
    name: &NetnsName,
    source: &NameSource,
) -> Result<NetnsName, String> {
    policy
        .user_netns_name(user, name, source, uid_of)
        .map_err(|e| chain(&e))
}

fn literal(s: &str) -> (NetnsName, NameSource) {
    (name(s), NameSource::Literal(name(s)))
}

#[test]
fn user_names_are_prefixed_by_uid_and_stay_valid() {
    let policy = Policy::default();
    let (work, chosen) = literal("work");
    assert_eq!(
        user_name(&policy, "alice", &work, &chosen),
        Ok(name("u1000-work"))
    );
    let as_given = Policy {
        user_names: UserNames::AsGiven,
        ..Policy::default()
    };
    assert_eq!(
        user_name(&as_given, "nobody-here", &work, &chosen),
        Ok(name("work"))
    );

    // A derived name is shortened to fit; a chosen one is refused.
    let long = name(&"a".repeat(60));
    let derived = user_name(&policy, "alice", &long, &NameSource::Name).unwrap();
    assert_eq!(derived.as_str().len(), NETNS_NAME_MAX);
    assert!(derived.as_str().starts_with("u1000-aaa"), "{derived}");
    let err = user_name(&policy, "alice", &long, &NameSource::Literal(long.clone())).unwrap_err();
    assert!(err.contains("longer than 64 characters"), "{err}");
    // The longest uid still leaves room for a name.
    let (most, chosen) = literal(&"w".repeat(NETNS_NAME_MAX - "u4294967295-".len()));
    let got = user_name(&policy, "big", &most, &chosen).unwrap();
    assert_eq!(got.as_str().len(), NETNS_NAME_MAX, "{got}");
}

/// User `a-b`'s `c` and user `a`'s `b-c` were both `u-a-b-c` with the user's name as prefix.
#[test]
fn no_two_users_share_a_prefixed_name() {
    let policy = Policy::default();
    let (c, c_chosen) = literal("c");
    let (b_c, b_c_chosen) = literal("b-c");
    let first = user_name(&policy, "a-b", &c, &c_chosen).unwrap();
    let second = user_name(&policy, "a", &b_c, &b_c_chosen).unwrap();
    assert_eq!(first, name("u1001-c"));
    assert_eq!(second, name("u1002-b-c"));
}

#[test]
fn a_user_that_cannot_be_resolved_is_refused_by_name() {
    let policy = Policy::default();
    let (work, chosen) = literal("work");
    for (user, expected) in [
        (
            "al ice",
            "no user \"al ice\" exists; connection.permissions must name an existing user",
        ),
        ("broken", "cannot look up user \"broken\": ECONNREFUSED"),
    ] {
        let err = user_name(&policy, user, &work, &chosen).unwrap_err();
        assert!(
            err.starts_with(expected),
            "{user}:\n expected {expected}\n got {err}"
        );
    }
}

/// The real name service: root is uid 0 everywhere.
#[test]
fn the_system_resolves_root() {
    let (work, chosen) = literal("work");
    let got = Policy::default().user_netns_name("root", &work, &chosen, system_uid);
    assert_eq!(got.unwrap(), name("u0-work"));
    let err = Policy::default()
        .user_netns_name("no-such-user-nm-vpn-netns", &work, &chosen, system_uid)
        .unwrap_err();
    assert!(matches!(err, PolicyError::UnknownUser { .. }), "{err:?}");
}
