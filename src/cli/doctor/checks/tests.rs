use std::path::PathBuf;

use super::*;
use crate::plan::plugin::{OPENCONNECT, OPENVPN};

/// A plugin taken over by an installation of nm-vpn-netns.
fn taken_over(plugin: &'static Plugin, version: &str) -> PluginSeen {
    PluginSeen {
        plugin,
        registrations: vec![Registration {
            file: format!(
                "/usr/lib/NetworkManager/VPN/nm-{}-service.name",
                plugin.name
            )
            .into(),
            program: "/usr/lib/NetworkManager/nm-vpn-netns-service".into(),
            program_present: true,
        }],
        stock_program: Ok((
            format!("/usr/lib/NetworkManager/nm-{}-service", plugin.name).into(),
            true,
        )),
        version: Some(version.into()),
    }
}

/// A plugin that is not installed.
fn absent(plugin: &'static Plugin) -> PluginSeen {
    PluginSeen {
        plugin,
        registrations: vec![],
        stock_program: Err("not taken over".into()),
        version: None,
    }
}

/// A good installation from source, with both plugins.
fn good() -> Observed {
    Observed {
        installer: Installer::Source,
        plugins: vec![
            taken_over(&OPENVPN, "1.10.2-2"),
            taken_over(&OPENCONNECT, "1.2.8-3+deb12u1"),
        ],
        activation_file: Some((
            "/usr/share/dbus-1/system-services/io.github.NmVpnNetns.Agent1.service".into(),
            true,
        )),
        bus_policy: Some("/usr/share/dbus-1/system.d/io.github.NmVpnNetns.Agent1.conf".into()),
        agent: AgentAnswer::Version(contract::VERSION),
        nm_version: Ok("1.42.4".into()),
        dco_modules: vec![],
        nss_resolve: false,
        resolver_dirs: vec![],
    }
}

/// The finding of `check`, the `nth` of them (one per plugin for some).
fn nth(check: &str, nth: usize, o: &Observed) -> Finding {
    evaluate(o)
        .into_iter()
        .filter(|f| f.check == check)
        .nth(nth)
        .unwrap_or_else(|| panic!("no finding {nth} for {check}"))
}

fn the(check: &str, o: &Observed) -> Finding {
    nth(check, 0, o)
}

#[test]
fn a_good_installation_has_no_problem() {
    let findings = evaluate(&good());
    let problems: Vec<_> = findings
        .iter()
        .filter(|f| f.verdict != Verdict::Ok)
        .collect();
    assert!(problems.is_empty(), "expected none, got {problems:#?}");
    assert_eq!(findings.len(), 11, "{findings:#?}");
    // Which registrations are taken over, one line each.
    assert_eq!(
        nth("registration", 1, &good()).detail,
        "/usr/lib/NetworkManager/VPN/nm-openconnect-service.name runs \
         /usr/lib/NetworkManager/nm-vpn-netns-service"
    );
}

#[test]
fn a_plugin_that_is_not_installed_is_a_note_and_no_plugin_at_all_fails() {
    let mut o = good();
    o.plugins[1] = absent(&OPENCONNECT);
    let findings = evaluate(&o);
    let f = nth("registration", 1, &o);
    assert_eq!(
        (f.verdict, f.detail.as_str()),
        (
            Verdict::Info,
            "no .name file registers org.freedesktop.NetworkManager.openconnect: \
             NetworkManager-openconnect is not installed"
        )
    );
    assert_eq!(findings.len(), 9, "{findings:#?}");
    assert!(findings.iter().all(|f| f.verdict != Verdict::Fail));

    o.plugins[0] = absent(&OPENVPN);
    let f = the("stock plugin", &o);
    assert_eq!(
        (f.verdict, f.detail.as_str(), f.fix.as_deref()),
        (
            Verdict::Fail,
            "neither NetworkManager-openvpn nor NetworkManager-openconnect is installed: \
             nm-vpn-netns has no VPN to isolate",
            Some("apt install network-manager-openvpn or apt install network-manager-openconnect")
        )
    );
}

/// nm-openconnect ignores `netns-isolate`: its stock registration in place of ours is a profile
/// connected without isolation, which doctor must name.
#[test]
fn openconnect_not_taken_over_fails_as_connecting_unisolated() {
    let mut o = good();
    o.plugins[1].registrations[0].program = "/usr/lib/NetworkManager/nm-openconnect-service".into();
    let f = nth("registration", 1, &o);
    assert_eq!(
        (f.verdict, f.detail.as_str()),
        (
            Verdict::Fail,
            "NetworkManager runs the stock plugin: \
             /usr/lib/NetworkManager/VPN/nm-openconnect-service.name names \
             /usr/lib/NetworkManager/nm-openconnect-service, so an openconnect profile with \
             netns-isolate=yes connects without isolation"
        )
    );
}

#[test]
fn the_stock_registration_in_place_of_ours_fails_with_the_reinstall() {
    let mut o = good();
    o.installer = Installer::Deb;
    o.plugins[0].registrations[0].program = "/usr/lib/NetworkManager/nm-openvpn-service".into();
    let f = the("registration", &o);
    assert_eq!(f.verdict, Verdict::Fail);
    assert!(
        f.detail.contains("runs the stock plugin") && f.detail.ends_with("fails to connect"),
        "{}",
        f.detail
    );
    assert_eq!(
        f.fix.as_deref(),
        Some("apt install --reinstall nm-vpn-netns")
    );

    o.plugins[0].registrations.clear();
    let f = the("registration", &o);
    assert_eq!(
        (f.verdict, f.detail.as_str()),
        (
            Verdict::Fail,
            "no .name file registers org.freedesktop.NetworkManager.openvpn"
        )
    );
}

#[test]
fn a_second_registration_is_a_warning_that_names_it() {
    let mut o = good();
    let mut etc = o.plugins[0].registrations[0].clone();
    etc.file = "/etc/NetworkManager/VPN/nm-openvpn-service.name".into();
    o.plugins[0].registrations.push(etc);
    let f = the("registration", &o);
    assert_eq!(f.verdict, Verdict::Warn);
    assert_eq!(
        f.fix.as_deref(),
        Some("rm /etc/NetworkManager/VPN/nm-openvpn-service.name")
    );
}

#[test]
fn a_missing_activation_file_or_policy_fails() {
    let mut o = good();
    o.activation_file = None;
    let f = the("agent activation", &o);
    assert_eq!(f.verdict, Verdict::Fail);
    assert!(
        f.detail
            .contains("no D-Bus activation file for io.github.NmVpnNetns.Agent1"),
        "{}",
        f.detail
    );
    assert_eq!(
        f.fix.as_deref(),
        Some("make install (as root, in the nm-vpn-netns source tree)")
    );

    let mut o = good();
    o.bus_policy = None;
    assert_eq!(the("agent activation", &o).verdict, Verdict::Fail);
    let mut o = good();
    o.activation_file = Some((PathBuf::from("/x.service"), false));
    assert_eq!(the("agent activation", &o).verdict, Verdict::Fail);
}

#[test]
fn the_agent_is_judged_by_its_answer() {
    let mut o = good();
    o.agent = AgentAnswer::NotAsked;
    assert_eq!(the("agent", &o).verdict, Verdict::Info);
    o.agent = AgentAnswer::Version(contract::VERSION + 1);
    assert_eq!(the("agent", &o).verdict, Verdict::Fail);
    o.agent = AgentAnswer::Failed("org.freedesktop.DBus.Error.Spawn.ChildExited".into());
    let f = the("agent", &o);
    assert_eq!(f.verdict, Verdict::Fail);
    assert!(f.detail.contains("ChildExited"), "{}", f.detail);
}

#[test]
fn versions_compare_by_their_leading_numbers() {
    for (found, min, expected) in [
        ("1.42.4", "1.42", true),
        ("1.52.1", "1.42", true),
        ("1.40.18", "1.42", false),
        ("1.10.2-2", "1.10", true),
        ("1.8.12-1", "1.10", false),
        ("1:1.42.4-1", "1.42", true),
        ("1.12.3-1~deb13u1", "1.10", true),
        ("garbage", "1.10", false),
    ] {
        assert_eq!(at_least(found, min), expected, "{found} >= {min}");
    }
    let mut o = good();
    o.nm_version = Ok("1.40.18".into());
    let f = the("NetworkManager", &o);
    assert_eq!(f.verdict, Verdict::Warn);
    assert_eq!(f.detail, "1.40.18 is older than 1.42, the oldest supported");
    o.nm_version = Err("org.freedesktop.DBus.Error.ServiceUnknown".into());
    let f = the("NetworkManager", &o);
    assert_eq!(
        (f.verdict, f.fix.as_deref()),
        (Verdict::Fail, Some("systemctl start NetworkManager"))
    );
}

#[test]
fn dco_is_a_warning_and_resolvers_a_note() {
    let mut o = good();
    o.dco_modules = vec!["ovpn_dco_v2".into()];
    let f = the("openvpn DCO", &o);
    assert_eq!(f.verdict, Verdict::Warn);
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .starts_with("modprobe -r ovpn_dco_v2"),
        "{f:?}"
    );

    o.nss_resolve = true;
    o.resolver_dirs = vec!["/run/nscd".into()];
    let f = the("host resolvers", &o);
    assert_eq!(f.verdict, Verdict::Info);
    assert!(
        f.detail
            .starts_with("nss-resolve (hosts: resolve), the sockets in /run/nscd answer lookups"),
        "{}",
        f.detail
    );
}
