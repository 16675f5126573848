//! `status` from observed state to views, verdict and output, without NetworkManager or root.

use serde_json::json;

use super::kernel::MAIN_TABLE;
use super::*;
use crate::nmbus::active_state;

const UUID: &str = "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b";
const KEPT_UUID: &str = "5f0e2c1a-0000-4000-8000-000000000002";

fn active() -> Active {
    Active {
        id: "work".into(),
        uuid: UUID.into(),
        state: active_state::ACTIVATED,
        persistent: false,
        keys_from: Origin::VpnData,
        mirror: true,
        netns: Some("work".into()),
    }
}

fn record(netns: &str, uuid: &str, connected: bool, persistent: bool) -> NetnsEntry {
    NetnsEntry {
        netns: netns.into(),
        uuid: uuid.into(),
        id: netns.into(),
        user: None,
        persistent,
        created: true,
        connected,
        link: connected.then(|| "tun0".into()),
    }
}

fn kernel(leaks: Vec<Leak>) -> Kernel {
    Kernel {
        tun: Some("tun0".into()),
        addresses: vec![Addr {
            link: "tun0".into(),
            address: "198.19.0.2".parse().unwrap(),
            prefix: 24,
        }],
        routes: vec![Route {
            dest: None,
            ipv6: false,
            via: Some("198.19.0.1".parse().unwrap()),
            dev: Some("tun0".into()),
            table: MAIN_TABLE,
            kind: "unicast".into(),
        }],
        dns: vec!["198.19.0.1".parse().unwrap()],
        search: vec!["vpn.test".into()],
        leaks,
    }
}

#[test]
fn each_record_goes_with_its_active_vpn_and_the_rest_follow() {
    let records = [
        record("kept", KEPT_UUID, false, true),
        record("work", UUID, true, false),
    ];
    let views = merge(vec![active()], Some(&records));
    let got: Vec<(&str, Option<&str>, &str, bool)> = views
        .iter()
        .map(|v| {
            (
                v.id.as_str(),
                v.netns.as_deref(),
                v.state.as_str(),
                v.persistent,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("work", Some("work"), "activated", false),
            ("kept", Some("kept"), "persistent", true)
        ]
    );
    assert_eq!(views[0].record, Seen::Shown(records[1].clone()));

    // Without root: NetworkManager's view alone.
    let views = merge(vec![active()], None);
    assert_eq!(views.len(), 1);
    assert_eq!(
        (&views[0].record, &views[0].kernel),
        (&Seen::NeedsRoot, &Seen::NeedsRoot)
    );

    // The agent's name wins over the one worked out from the settings.
    let renamed = [record("u1000-work", UUID, true, false)];
    let views = merge(vec![active()], Some(&renamed));
    assert_eq!(views[0].netns.as_deref(), Some("u1000-work"));
}

#[test]
fn the_exit_status_says_whether_a_leak_check_failed() {
    let mut views = merge(vec![active()], None);
    assert_eq!((leak_free(&views), exit_status(&views)), (None, 0));
    views[0].kernel = Seen::Shown(kernel(Vec::new()));
    assert_eq!((leak_free(&views), exit_status(&views)), (Some(true), 0));
    let leak = Leak::Dns("198.19.0.1".parse().unwrap());
    views.push(View {
        kernel: Seen::Shown(kernel(vec![leak])),
        ..views[0].clone()
    });
    assert_eq!(
        (leak_free(&views), exit_status(&views)),
        (Some(false), EXIT_LEAK)
    );
}

#[test]
fn json_has_every_field_and_marks_what_needs_root() {
    let records = [record("work", UUID, true, false)];
    let mut views = merge(vec![active()], Some(&records));
    views[0].kernel = Seen::Shown(kernel(Vec::new()));
    let want = json!({
        "vpns": [{
            "id": "work",
            "uuid": UUID,
            "netns": "work",
            "state": "activated",
            "persistent": false,
            "keys_from": "vpn.data",
            "mirror": true,
            "created": true,
            "tun": {"name": "tun0", "addresses": ["198.19.0.2/24"]},
            "routes": ["default via 198.19.0.1 dev tun0"],
            "dns": {"servers": ["198.19.0.1"], "search": ["vpn.test"]},
            "leak_check": {"passed": true, "leaks": []},
        }],
        "leak_free": true,
    });
    assert_eq!(render::json(&views), want);

    let views = merge(vec![active()], None);
    let got = render::json(&views);
    let root_only = json!({"unavailable": "needs root"});
    for field in ["created", "tun", "routes", "dns", "leak_check"] {
        assert_eq!(got["vpns"][0][field], root_only, "{field}");
    }
    assert_eq!(got["vpns"][0]["netns"], "work");
    assert_eq!(got["leak_free"], serde_json::Value::Null);
}

#[test]
fn text_has_a_line_per_field_and_names_each_leak() {
    let records = [record("work", UUID, true, false)];
    let mut views = merge(vec![active()], Some(&records));
    let leak = Leak::Dns("198.19.0.1".parse().unwrap());
    views[0].kernel = Seen::Shown(kernel(vec![leak]));
    let want = format!(
        "work ({UUID}): activated
  namespace   work
  persistent  no
  keys        in vpn.data, and mirrored in user.data
  created     by nm-vpn-netns
  tun         tun0 198.19.0.2/24
  routes      default via 198.19.0.1 dev tun0
  dns         198.19.0.1 (search vpn.test)
  leak check  FAILED:
    /etc/resolv.conf of the root namespace names the VPN's DNS server 198.19.0.1
"
    );
    let got = render::text(&views);
    assert_eq!(got, want, "expected:\n{want}got:\n{got}");

    let got = render::text(&merge(vec![active()], None));
    assert!(got.contains("\n  tun         needs root\n"), "{got}");
    assert_eq!(
        render::text(&[]),
        "no isolated VPN is active, and nm-vpn-netns keeps no namespace\n"
    );
}
