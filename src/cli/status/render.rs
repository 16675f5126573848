//! What `status` prints, from the views alone: text for people, JSON for programs.

use serde_json::{json, Value};

use super::{leak_free, Kernel, Seen, View};
use crate::cli::list::{columns, yes_no};
use crate::plan::mirror::Origin;

fn origin_word(origin: Origin) -> &'static str {
    match origin {
        Origin::VpnData => "vpn.data",
        Origin::Mirror => "mirror",
    }
}

const NEEDS_ROOT: &str = "needs root";

/// A root-only field in JSON: its value, `{"unavailable": "needs root"}`, or `null` with the
/// reason it is missing.
fn seen_json<T>(seen: &Seen<T>, shown: impl Fn(&T) -> Value) -> Value {
    match seen {
        Seen::Shown(t) => shown(t),
        Seen::NeedsRoot => json!({ "unavailable": NEEDS_ROOT }),
        Seen::Missing(why) => json!({ "unavailable": why }),
    }
}

/// The JSON object of `status --json`.
pub fn json(views: &[View]) -> Value {
    let vpns: Vec<Value> = views.iter().map(view_json).collect();
    json!({ "vpns": vpns, "leak_free": leak_free(views) })
}

fn view_json(v: &View) -> Value {
    let strings = |items: Vec<String>| Value::from(items);
    json!({
        "id": v.id,
        "uuid": v.uuid,
        "netns": v.netns,
        "state": v.state,
        "persistent": v.persistent,
        "keys_from": v.keys.map(|(origin, _)| origin_word(origin)),
        "mirror": v.keys.map(|(_, mirror)| mirror),
        "created": seen_json(&v.record, |r| json!(r.created)),
        "tun": seen_json(&v.kernel, |k: &Kernel| match &k.tun {
            None => Value::Null,
            Some(name) => json!({
                "name": name,
                "addresses": strings(k.addresses.iter().map(ToString::to_string).collect()),
            }),
        }),
        "routes": seen_json(&v.kernel, |k| strings(k.routes.iter().map(ToString::to_string).collect())),
        "dns": seen_json(&v.kernel, |k| json!({
            "servers": strings(k.dns.iter().map(ToString::to_string).collect()),
            "search": k.search,
        })),
        "leak_check": seen_json(&v.kernel, |k| json!({
            "passed": k.leaks.is_empty(),
            "leaks": strings(k.leaks.iter().map(ToString::to_string).collect()),
        })),
    })
}

fn seen_text<T>(seen: &Seen<T>, shown: impl Fn(&T) -> String) -> String {
    match seen {
        Seen::Shown(t) => shown(t),
        Seen::NeedsRoot => NEEDS_ROOT.to_owned(),
        Seen::Missing(why) => format!("unknown: {why}"),
    }
}

/// `status`'s text: a block per VPN, a line per field.
pub fn text(views: &[View]) -> String {
    if views.is_empty() {
        return "no isolated VPN is active, and nm-vpn-netns keeps no namespace\n".to_owned();
    }
    let blocks: Vec<String> = views.iter().map(view_text).collect();
    blocks.join("\n")
}

fn view_text(v: &View) -> String {
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut line = |key: &str, value: String| lines.push(vec![format!("  {key}"), value]);
    line(
        "namespace",
        v.netns.clone().unwrap_or_else(|| "unknown".to_owned()),
    );
    line("persistent", yes_no(v.persistent).to_owned());
    if let Some((origin, mirror)) = v.keys {
        let keys = match (origin, mirror) {
            (Origin::VpnData, false) => "in vpn.data",
            (Origin::VpnData, true) => "in vpn.data, and mirrored in user.data",
            (Origin::Mirror, _) => "in the mirror in user.data only (vpn.data has none)",
        };
        line("keys", keys.to_owned());
    }
    line(
        "created",
        seen_text(&v.record, |r| {
            if r.created {
                "by nm-vpn-netns".to_owned()
            } else {
                "by someone else; nm-vpn-netns only configured it".to_owned()
            }
        }),
    );
    line(
        "tun",
        seen_text(&v.kernel, |k| match &k.tun {
            None => "none (the VPN is down)".to_owned(),
            Some(name) => {
                let addresses: Vec<String> = k.addresses.iter().map(ToString::to_string).collect();
                format!("{name} {}", addresses.join(" "))
                    .trim_end()
                    .to_owned()
            }
        }),
    );
    line(
        "routes",
        seen_text(&v.kernel, |k| {
            let routes: Vec<String> = k.routes.iter().map(ToString::to_string).collect();
            if routes.is_empty() {
                "none".to_owned()
            } else {
                routes.join("; ")
            }
        }),
    );
    line(
        "dns",
        seen_text(&v.kernel, |k| {
            let servers: Vec<String> = k.dns.iter().map(ToString::to_string).collect();
            let mut text = if servers.is_empty() {
                "none".to_owned()
            } else {
                servers.join(" ")
            };
            if !k.search.is_empty() {
                text.push_str(&format!(" (search {})", k.search.join(" ")));
            }
            text
        }),
    );
    line(
        "leak check",
        seen_text(&v.kernel, |k| {
            if k.leaks.is_empty() {
                return "passed".to_owned();
            }
            let leaks: Vec<String> = k.leaks.iter().map(|l| format!("\n    {l}")).collect();
            format!("FAILED:{}", leaks.concat())
        }),
    );
    format!("{} ({}): {}\n{}", v.id, v.uuid, v.state, columns(&lines))
}
