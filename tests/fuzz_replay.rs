//! Replays the fuzzers' seed corpus and every crash they found (`fuzz/README.md`) through the
//! fuzz targets' own entry points, so that a plain `cargo test` runs them without cargo-fuzz, and
//! checks that the committed seeds are the ones made here from the captured dicts.
//!
//! `NM_VPN_NETNS_WRITE_SEEDS=1 cargo test --test fuzz_replay` writes the seeds anew.

mod common;
#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::collections::{BTreeMap, HashMap};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use common::{openvpn_config, openvpn_ip4, openvpn_ip6, openvpn_net30, VarDict, UUID};
use nm_vpn_netns::agent::service::validate_request;
use nm_vpn_netns::plan::settings::{NmConnection, OPENVPN_SERVICE};
use nm_vpn_netns::plan::{owned, var_dict};
use nm_vpn_netns::shim::codec::{self, ConfigSet};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zbus::wire::serialized::{Context, Data};
use zbus::wire::LE;
use zbus::{OwnedVariant, Type};

/// Set to write the seeds into `fuzz/corpus` instead of comparing them.
const WRITE_SEEDS: &str = "NM_VPN_NETNS_WRITE_SEEDS";

/// The keys of the rig's TLS profiles, which every seed profile has besides its own.
const STOCK_KEYS: &[(&str, &str)] = &[
    ("remote", "198.18.0.1"),
    ("connection-type", "tls"),
    ("ca", "/etc/openvpn/rig/ca.crt"),
    ("cert", "/etc/openvpn/rig/client1.crt"),
    ("key", "/etc/openvpn/rig/client1.key"),
    ("cert-pass-flags", "4"),
    ("dev", "tun"),
];

/// A profile as NM hands it to the plugin: `connection.id`, `connection.permissions` and the
/// `netns-*` keys.
struct Profile {
    name: &'static str,
    id: &'static str,
    permissions: &'static [&'static str],
    netns_keys: &'static [(&'static str, &'static str)],
}

const PROFILES: &[Profile] = &[
    Profile {
        name: "isolated",
        id: "Work VPN",
        permissions: &[],
        netns_keys: &[("netns-isolate", "yes")],
    },
    Profile {
        name: "all-keys",
        id: "work",
        permissions: &[],
        netns_keys: &[
            ("netns-isolate", "yes"),
            ("netns-persistent", "yes"),
            ("netns-name", "vpn-work"),
            ("netns-timeout", "5000"),
        ],
    },
    Profile {
        name: "user-uuid",
        id: "Alice's VPN",
        // A user every system has: the agent looks the user up for the uid in the name.
        permissions: &["user:root:"],
        netns_keys: &[("netns-isolate", "true"), ("netns-name", "uuid")],
    },
];

fn vpn_data(profile: &Profile) -> Vec<(&'static str, &'static str)> {
    STOCK_KEYS
        .iter()
        .chain(profile.netns_keys)
        .copied()
        .collect()
}

/// `fuzz_targets/vpn_data.rs`'s text form of a profile.
fn vpn_data_seed(profile: &Profile) -> Vec<u8> {
    let mut text = format!("connection.id={}\nconnection.uuid={UUID}\n", profile.id);
    for p in profile.permissions {
        text += &format!("connection.permissions={p}\n");
    }
    for (k, v) in vpn_data(profile) {
        text += &format!("{k}={v}\n");
    }
    text.into_bytes()
}

/// The connection dict of `Connect`, as NM sends it for `profile`.
fn nm_connection(profile: &Profile) -> NmConnection {
    let data: HashMap<String, String> = vpn_data(profile)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut connection = var_dict(vec![("id", owned(profile.id)), ("uuid", owned(UUID))]);
    if !profile.permissions.is_empty() {
        connection.insert("permissions".into(), owned(profile.permissions.to_vec()));
    }
    HashMap::from([
        ("connection".to_owned(), connection),
        ("vpn".to_owned(), var_dict(vec![("data", owned(data))])),
    ])
}

/// The captured config sets of `tests/common`.
fn config_sets() -> Vec<(&'static str, ConfigSet)> {
    let (net30, net30_ip4) = openvpn_net30();
    vec![
        (
            "subnet-ipv6",
            ConfigSet {
                config: openvpn_config("tun0", true),
                ip4: Some(openvpn_ip4("tun0")),
                ip6: Some(openvpn_ip6()),
            },
        ),
        (
            "subnet",
            ConfigSet {
                config: openvpn_config("tun0", false),
                ip4: Some(openvpn_ip4("tun0")),
                ip6: None,
            },
        ),
        (
            "net30",
            ConfigSet {
                config: net30,
                ip4: Some(net30_ip4),
                ip6: None,
            },
        ),
    ]
}

/// A dict with its keys in order.
type Sorted = BTreeMap<String, OwnedVariant>;

/// `value` as the body of a D-Bus message in little-endian order, decoded as `D` and encoded
/// again: every dict then has its keys in order, whatever the order of the `HashMap` it came from,
/// so that the seeds are the same at every run.
fn body<T: Serialize + Type, D: DeserializeOwned + Serialize + Type>(value: &T) -> Vec<u8> {
    let ctxt = Context::new(LE, 0);
    let data = zbus::wire::to_bytes(ctxt, value).unwrap();
    let (sorted, _) = data.deserialize::<D>().unwrap();
    zbus::wire::to_bytes(ctxt, &sorted)
        .unwrap()
        .bytes()
        .to_vec()
}

/// Every seed, as (target, file name, content).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for profile in PROFILES {
        seeds.push(("vpn_data", profile.name.to_owned(), vpn_data_seed(profile)));
    }
    let empty = VarDict::new();
    for (name, set) in config_sets() {
        let (ip4, ip6) = (set.ip4.as_ref(), set.ip6.as_ref());
        let dicts = (&set.config, ip4.unwrap_or(&empty), ip6.unwrap_or(&empty));
        seeds.push((
            "nm_dicts",
            name.to_owned(),
            body::<_, (Sorted, Sorted, Sorted)>(&dicts),
        ));
        for profile in PROFILES {
            let intent = codec::check(nm_connection(profile), OPENVPN_SERVICE)
                .unwrap()
                .intent
                .expect("every seed profile is isolated");
            let request = codec::isolate_request(&intent, 7, &set);
            let file = format!("{}-{name}", profile.name);
            seeds.push(("agent_request", file, body::<_, Sorted>(&request)));
        }
    }
    seeds
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn the_committed_seeds_are_made_from_the_captured_dicts() {
    let write = std::env::var_os(WRITE_SEEDS).is_some();
    let mut stale = Vec::new();
    for (target, name, content) in seeds() {
        let path = fuzz_dir()
            .join("corpus")
            .join(target)
            .join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read(&path).ok().as_ref() != Some(&content) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "expected these seeds as made here, got other or no files (run \
         `{WRITE_SEEDS}=1 cargo test --test fuzz_replay` and commit them): {stale:#?}"
    );
}

/// Each request seed passes every check of the agent, so the fuzzers start from inputs that reach
/// the end; the other seeds are made of the same profiles and dicts.
#[test]
fn the_seeds_are_accepted() {
    for (target, name, content) in seeds() {
        if target != "agent_request" {
            continue;
        }
        let (request, _) = Data::new(content, Context::new(LE, 0))
            .deserialize::<VarDict>()
            .unwrap();
        let verdict = validate_request(&request);
        assert!(verdict.is_ok(), "{name}: expected Ok, got {verdict:?}");
    }
}

/// Every file of `fuzz/corpus/TARGET` and `fuzz/regressions/TARGET` through its target.
#[test]
fn the_corpus_and_the_regressions_replay() {
    let mut failed = Vec::new();
    let mut replayed = 0;
    for (target, run) in harness::TARGETS {
        for dir in ["corpus", "regressions"] {
            let dir = fuzz_dir().join(dir).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                replayed += 1;
                if panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                    failed.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        failed.is_empty(),
        "expected no panic, got one for: {failed:#?}"
    );
    assert!(
        replayed >= seeds().len(),
        "expected at least the seeds, got {replayed} files"
    );
}
