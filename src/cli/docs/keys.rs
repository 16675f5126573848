//! nm-vpn-netns(5): the `netns-*` keys of `vpn.data`, rendered from the key table of
//! [`crate::plan::settings`] and the rules that module enforces.

use clap_mangen::roff::{bold, italic, line_break, roman, Inline, Roff};

use super::{spans, Extras, NETNS_FILES, SOURCE};
use crate::agent::policy::USER_NAME_RULE;
use crate::plan::mirror::MIRROR_PREFIX;
use crate::plan::settings::{Key, KEY_PREFIX, NAME_RULE, NETNS_NAME_MAX, STATIC_IP_KEYS};

const TITLE: &str = "nm-vpn-netns";
const SECTION: &str = "5";
const MANUAL: &str = "File Formats Manual";

const EXTRAS: Extras = Extras {
    files: &NETNS_FILES,
    examples: &[
        (
            "Isolate the VPN connection `work` in a namespace named after it, and bring it up:",
            &[
                "nmcli connection modify work +vpn.data netns-isolate=yes",
                "nmcli connection up work",
            ],
        ),
        (
            "Keep its namespace across reconnects, under the name `vpn`:",
            &["nmcli connection modify work +vpn.data netns-persistent=yes +vpn.data netns-name=vpn"],
        ),
        (
            "Turn the isolation off again:",
            &["nmcli connection modify work +vpn.data netns-isolate=no"],
        ),
    ],
    see_also: &[
        "nm-vpn-netns(8)",
        "nm-vpn-netns-service(8)",
        "nm-vpn-netns-agent(8)",
        "nm-settings-nmcli(5)",
        "nmcli(1)",
        "ip-netns(8)",
    ],
};

/// The page as (file name, roff).
pub(super) fn page(date: &str) -> (String, String) {
    let mut roff = Roff::new();
    roff.control("TH", [TITLE, SECTION, date, SOURCE, MANUAL]);
    roff.control("SH", ["NAME"]);
    roff.text([roman(format!(
        "{TITLE} - the {KEY_PREFIX}* keys of a NetworkManager OpenVPN or OpenConnect \
         connection's vpn.data"
    ))]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([
        bold("nmcli connection modify "),
        italic("connection"),
        bold(" +vpn.data "),
        italic("key"),
        bold("="),
        italic("value"),
    ]);
    description(&mut roff);
    roff.control("SH", ["KEYS"]);
    for spec in Key::ALL.map(Key::spec) {
        roff.control("TP", []);
        roff.text([bold(spec.name)]);
        roff.text(spans(spec.meaning));
        let mut values: Vec<Inline> = vec![line_break(), roman("Values: ")];
        values.extend(spans(spec.values));
        values.extend([roman(". Default: "), bold(spec.default), roman(".")]);
        roff.text(values);
    }
    roff.control("SH", ["NAMESPACE NAMES"]);
    roff.text(spans(NAME_RULE));
    roff.text(spans(&format!(
        "With `netns-name=name`, each run of other characters in connection.id becomes one `-`, \
         a leading `.` or `-` is dropped, and the name is cut at {NETNS_NAME_MAX} characters. If \
         nothing is left, connection.uuid is used."
    )));
    roff.text(spans(USER_NAME_RULE));
    EXTRAS.render_files(&mut roff);
    EXTRAS.render_examples(&mut roff);
    EXTRAS.render_see_also(&mut roff);
    (format!("{TITLE}.{SECTION}"), roff.render())
}

fn description(roff: &mut Roff) {
    roff.control("SH", ["DESCRIPTION"]);
    roff.text(spans(&format!(
        "A NetworkManager VPN connection keeps the options of its plugin in vpn.data, as \
         key=value pairs. With nm-vpn-netns installed, the keys that start with `{KEY_PREFIX}` \
         choose whether an OpenVPN or OpenConnect connection is isolated in a network namespace \
         of its own, and how. The plugin, nm-vpn-netns-service(8), removes them before the stock \
         plugin sees the connection. The stock OpenVPN plugin refuses a connection with keys it \
         does not know, so without nm-vpn-netns such a connection fails; the stock OpenConnect \
         plugin ignores them, so without nm-vpn-netns's registration (see nm-vpn-netns doctor) \
         it connects unisolated."
    )));
    roff.control("PP", []);
    roff.text(spans(&format!(
        "Every `{KEY_PREFIX}` key is checked whenever the connection is activated, even without \
         `netns-isolate=yes`. An unknown `{KEY_PREFIX}` key, or a bad value, refuses the \
         connection with an error that names the key, before any password prompt. NetworkManager \
         logs it (`journalctl -u NetworkManager`)."
    )));
    roff.control("PP", []);
    let static_keys = STATIC_IP_KEYS
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    roff.text(spans(&format!(
        "An isolated connection is refused as well if it sets any of {static_keys} in its ipv4 \
         or ipv6 settings: NetworkManager would apply them outside the namespace."
    )));
    roff.control("PP", []);
    roff.text(spans(&format!(
        "nm-vpn-netns enable also keeps a copy of the keys in the connection's user setting, as \
         `{MIRROR_PREFIX}{KEY_PREFIX}isolate` and so on, which the GNOME connection editor leaves \
         alone when it drops the keys from vpn.data. When vpn.data has no `{KEY_PREFIX}` key, the \
         copy is checked and used instead, and put back into vpn.data once the VPN is up; any \
         `{KEY_PREFIX}` key in vpn.data, such as `netns-isolate=no`, wins over it. Removing the \
         keys from vpn.data by hand therefore does not turn isolation off: nm-vpn-netns disable \
         removes both."
    )));
}
