use super::*;

fn p(s: &str) -> PathBuf {
    s.into()
}

fn entry(name: &str, target: Option<&str>) -> EtcEntry {
    EtcEntry {
        source: Path::new("/etc/netns/work").join(name),
        is_dir: false,
        target: target.map(p),
    }
}

#[test]
fn like_ip_netns_exec_without_resolvers() {
    let facts = Facts {
        resolver_dirs: vec![],
        etc: vec![entry("resolv.conf", Some("/etc/resolv.conf"))],
    };
    assert_eq!(
        plan(&facts),
        [
            Step::RemountSys,
            Step::Bind {
                source: p("/etc/netns/work/resolv.conf"),
                target: p("/etc/resolv.conf")
            }
        ]
    );
}

#[test]
fn resolvers_are_hidden_before_binds_and_a_bind_into_them_is_made_there() {
    let facts = Facts {
        resolver_dirs: vec![p("/run/nscd"), p("/run/systemd/resolve")],
        etc: vec![
            entry("nsswitch.conf", Some("/etc/nsswitch.conf")),
            entry("resolv.conf", Some("/run/systemd/resolve/stub-resolv.conf")),
        ],
    };
    assert_eq!(
        plan(&facts),
        [
            Step::RemountSys,
            Step::Hide(p("/run/nscd")),
            Step::Hide(p("/run/systemd/resolve")),
            Step::Bind {
                source: p("/etc/netns/work/nsswitch.conf"),
                target: p("/etc/nsswitch.conf")
            },
            Step::Create {
                path: p("/run/systemd/resolve/stub-resolv.conf"),
                is_dir: false
            },
            Step::Bind {
                source: p("/etc/netns/work/resolv.conf"),
                target: p("/run/systemd/resolve/stub-resolv.conf")
            },
        ]
    );
}

#[test]
fn a_file_missing_from_etc_is_left_unbound() {
    let facts = Facts {
        resolver_dirs: vec![],
        etc: vec![entry("hosts.extra", None)],
    };
    assert_eq!(
        plan(&facts)[1..],
        [Step::Unbound {
            source: p("/etc/netns/work/hosts.extra"),
            etc: p("/etc/hosts.extra")
        }]
    );
}

#[test]
fn the_resolver_list_covers_nscd_and_resolved() {
    for dir in ["/run/nscd", "/var/run/nscd", "/run/systemd/resolve"] {
        assert!(RESOLVER_SOCKET_DIRS.contains(&dir), "{dir}");
    }
}
