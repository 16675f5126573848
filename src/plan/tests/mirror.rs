//! The mirror of the `netns-*` keys in `user.data`: which keys decide, and the profile edits of
//! `enable`, `disable` and the shim's restore.

use std::collections::{BTreeMap, HashMap};

use zbus::OwnedVariant;

use crate::plan::mirror::{self, decide, mirror_key, Origin, MIRROR_PREFIX};
use crate::plan::owned as ov;
use crate::plan::settings::{ConnectionInfo, NmConnection, SettingsError};

const UUID: &str = "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b";

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn a_ss(pairs: &[(&str, &str)]) -> OwnedVariant {
    OwnedVariant::from(map(pairs).into_iter().collect::<HashMap<_, _>>())
}

/// A profile as GetSettings returns it: no secrets; `user` only when `user_data` is given.
fn profile(vpn_data: &[(&str, &str)], user_data: Option<&[(&str, &str)]>) -> NmConnection {
    let mut conn = NmConnection::from([
        (
            "connection".to_owned(),
            HashMap::from([
                ("id".to_owned(), ov("work")),
                ("uuid".to_owned(), ov(UUID)),
                ("type".to_owned(), ov("vpn")),
            ]),
        ),
        (
            "vpn".to_owned(),
            HashMap::from([
                (
                    "service-type".to_owned(),
                    ov("org.freedesktop.NetworkManager.openvpn"),
                ),
                ("data".to_owned(), a_ss(vpn_data)),
            ]),
        ),
    ]);
    if let Some(user_data) = user_data {
        conn.insert(
            "user".to_owned(),
            HashMap::from([("data".to_owned(), a_ss(user_data))]),
        );
    }
    conn
}

fn data_of(conn: &NmConnection, setting: &str) -> BTreeMap<String, String> {
    let dict = HashMap::<String, String>::try_from(conn[setting]["data"].clone()).unwrap();
    dict.into_iter().collect()
}

fn decided(conn: &NmConnection) -> Result<mirror::Decided, SettingsError> {
    decide(conn, &ConnectionInfo::from_nm(conn).unwrap())
}

const ISOLATE: &str = "io.github.nm-vpn-netns.netns-isolate";

#[test]
fn the_mirror_keys_are_valid_user_keys() {
    assert_eq!(mirror_key("netns-isolate"), ISOLATE);
    // nm_setting_user_check_key: a dot, and words of A-Za-z0-9 and -_+/= between single dots.
    assert!(MIRROR_PREFIX.ends_with('.') && !MIRROR_PREFIX.contains(".."));
    for key in crate::plan::settings::Key::ALL {
        let name = mirror_key(key.as_str());
        assert!(name.len() <= 255, "{name}");
        assert!(
            name.split('.').all(|word| !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b))),
            "{name}"
        );
    }
}

#[test]
fn the_mirror_decides_when_vpn_data_has_no_key() {
    let conn = profile(
        &[("remote", "vpn.test")],
        Some(&[(ISOLATE, "yes"), ("org.example.other", "x")]),
    );
    let d = decided(&conn).unwrap();
    assert_eq!(d.origin, Origin::Mirror);
    assert_eq!(d.keys, map(&[("netns-isolate", "yes")]));
    assert!(d.settings.isolate);
}

#[test]
fn any_key_in_vpn_data_wins_over_the_mirror() {
    for (vpn_data, isolate) in [
        (&[("netns-isolate", "no")][..], false),
        (&[("netns-isolate", "yes"), ("netns-name", "other")], true),
        // Only a timeout: vpn.data still decides, and says nothing of isolation.
        (&[("netns-timeout", "5000")], false),
    ] {
        let conn = profile(vpn_data, Some(&[(ISOLATE, "yes")]));
        let d = decided(&conn).unwrap();
        assert_eq!(
            (d.origin, d.settings.isolate),
            (Origin::VpnData, isolate),
            "{vpn_data:?}"
        );
        assert_eq!(d.keys, map(vpn_data));
    }
}

#[test]
fn no_keys_anywhere_is_not_isolated() {
    for user in [None, Some(&[("org.example.other", "x")][..])] {
        let d = decided(&profile(&[("remote", "x")], user)).unwrap();
        assert_eq!(d.origin, Origin::VpnData);
        assert!(!d.settings.isolate && d.keys.is_empty());
    }
}

#[test]
fn the_mirror_is_validated_like_vpn_data() {
    let text = |e: SettingsError| crate::report::chain(&e);
    let bad_value = profile(&[], Some(&[(ISOLATE, "maybe")]));
    assert_eq!(
        text(decided(&bad_value).unwrap_err()),
        "in user.data, the copy of the netns-* keys that nm-vpn-netns enable keeps: \
         netns-isolate: invalid value \"maybe\": expected yes/no/true/false/1/0"
    );
    // Even when vpn.data decides, a typo in the mirror is found.
    let unused = profile(&[("netns-isolate", "no")], Some(&[(ISOLATE, "maybe")]));
    assert!(matches!(
        decided(&unused).unwrap_err(),
        SettingsError::Mirror(_)
    ));
    let unknown = profile(&[], Some(&[("io.github.nm-vpn-netns.netns-bogus", "1")]));
    let e = text(decided(&unknown).unwrap_err());
    assert!(
        e.starts_with("unknown key \"io.github.nm-vpn-netns.netns-bogus\" in user.data;"),
        "{e}"
    );
    let mut wrong_type = profile(&[], None);
    let bad: HashMap<String, u32> = [(ISOLATE.to_owned(), 1)].into();
    wrong_type.insert(
        "user".to_owned(),
        HashMap::from([("data".to_owned(), OwnedVariant::from(bad))]),
    );
    assert_eq!(
        text(decided(&wrong_type).unwrap_err()),
        "user.data: expected D-Bus type a{ss}, got a{su}"
    );
}

/// The rule against static settings is the deciding keys' alone: a profile whose vpn.data says
/// `netns-isolate=no` still connects with a static DNS server.
#[test]
fn static_settings_are_refused_only_for_the_deciding_keys() {
    let with_dns = |vpn_data: &[(&str, &str)]| {
        let mut conn = profile(vpn_data, Some(&[(ISOLATE, "yes")]));
        conn.insert(
            "ipv4".to_owned(),
            HashMap::from([("dns".to_owned(), ov(vec![0x0100_0a0au32]))]),
        );
        conn
    };
    assert!(decided(&with_dns(&[("netns-isolate", "no")])).is_ok());
    let e = crate::report::chain(&decided(&with_dns(&[])).unwrap_err());
    assert!(e.ends_with("ipv4.dns is set; an isolated VPN cannot use static ipv4/ipv6 settings because NetworkManager would apply them outside the namespace"), "{e}");
}

#[test]
fn enable_writes_both_and_keeps_everything_else() {
    let before = profile(
        &[("remote", "vpn.test"), ("netns-timeout", "9000")],
        Some(&[
            ("org.example.other", "x"),
            ("io.github.nm-vpn-netns.netns-persistent", "yes"),
        ]),
    );
    let keys = map(&[("netns-isolate", "yes"), ("netns-name", "uuid")]);
    let after = mirror::enable(before.clone(), &keys).unwrap();
    assert_eq!(
        data_of(&after, "vpn"),
        map(&[
            ("remote", "vpn.test"),
            ("netns-isolate", "yes"),
            ("netns-name", "uuid")
        ])
    );
    assert_eq!(
        data_of(&after, "user"),
        map(&[
            ("org.example.other", "x"),
            (ISOLATE, "yes"),
            ("io.github.nm-vpn-netns.netns-name", "uuid")
        ])
    );
    assert_eq!(after["connection"], before["connection"]);
    assert_eq!(after["vpn"]["service-type"], before["vpn"]["service-type"]);
    assert!(!after["vpn"].contains_key("secrets"));
    // A profile without a user setting gets one.
    let fresh = mirror::enable(profile(&[("remote", "x")], None), &keys).unwrap();
    assert_eq!(data_of(&fresh, "user").len(), 2);
}

#[test]
fn disable_removes_both_and_an_empty_user_setting() {
    let keys = map(&[("netns-isolate", "yes")]);
    let plain = profile(&[("remote", "x")], None);
    let enabled = mirror::enable(plain.clone(), &keys).unwrap();
    assert!(mirror::has_keys(&enabled).unwrap());
    let disabled = mirror::disable(enabled).unwrap();
    assert_eq!(disabled, plain);
    assert!(!mirror::has_keys(&disabled).unwrap());
    let shared = profile(
        &[("netns-isolate", "yes")],
        Some(&[("org.example.other", "x"), (ISOLATE, "yes")]),
    );
    let disabled = mirror::disable(shared).unwrap();
    assert_eq!(
        data_of(&disabled, "user"),
        map(&[("org.example.other", "x")])
    );
    assert!(data_of(&disabled, "vpn").is_empty());
}

#[test]
fn restore_puts_the_mirror_back_only_into_a_vpn_data_without_keys() {
    let keys = map(&[("netns-isolate", "yes"), ("netns-persistent", "yes")]);
    let enabled = mirror::enable(profile(&[("remote", "x")], None), &keys).unwrap();
    // What the editor leaves: vpn.data rebuilt without our keys, user untouched.
    let mut edited = enabled.clone();
    edited
        .get_mut("vpn")
        .unwrap()
        .insert("data".to_owned(), a_ss(&[("remote", "x")]));
    assert_eq!(mirror::restore(edited).unwrap(), Some(enabled.clone()));
    assert_eq!(mirror::restore(enabled).unwrap(), None);
    let by_hand = profile(&[("netns-isolate", "no")], Some(&[(ISOLATE, "yes")]));
    assert_eq!(mirror::restore(by_hand).unwrap(), None);
    assert_eq!(mirror::restore(profile(&[], None)).unwrap(), None);
}
