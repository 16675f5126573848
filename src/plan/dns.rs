//! The namespace's resolver files: `resolv.conf` from the VPN's DNS servers and search domains,
//! `nsswitch.conf` from the host's with its `hosts` line replaced.

use std::net::IpAddr;

use super::settings::NetnsName;

const HOSTS_LINE: &str = "hosts: files dns";

/// Whether `domain` can go on resolv.conf's `search` line.
pub fn check_domain(domain: &str) -> Result<(), &'static str> {
    // The name goes on resolv.conf's `search` line: whitespace would split it and a newline
    // would let the server add a line of its own, such as another nameserver.
    if domain.is_empty() {
        Err("it is empty")
    } else if domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("whitespace and control characters are not allowed in a search domain")
    } else {
        Ok(())
    }
}

/// `/etc/netns/NAME/resolv.conf`: the VPN's nameservers, or none at all, and its search domains.
pub fn render_resolv_conf(netns: &NetnsName, nameservers: &[IpAddr], search: &[String]) -> String {
    let mut out = format!("# Written by nm-vpn-netns for the VPN in network namespace {netns}.\n");
    if nameservers.is_empty() {
        // With no nameserver line glibc asks 127.0.0.1, which is the namespace's own loopback,
        // not the host's resolver.
        out.push_str(
            "# The VPN pushed no DNS server. Lookups fail closed: they never reach the host's \
             resolver.\n",
        );
    }
    for ns in nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out
}

/// The host's nsswitch.conf with every `hosts` line made `hosts: files dns`.
pub fn render_nsswitch(host: &str) -> String {
    let mut out = String::with_capacity(host.len() + HOSTS_LINE.len() + 2);
    let mut replaced = false;
    for line in host.split_inclusive('\n') {
        if names_hosts_database(line) {
            // Every such line: glibc takes the last one, and all of them must go.
            replaced = true;
            out.push_str(HOSTS_LINE);
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(HOSTS_LINE);
        out.push('\n');
    }
    out
}

/// Whether glibc's nsswitch parser reads `line` as the `hosts` database: it skips leading
/// whitespace and ends the name at whitespace or ':', so `  hosts :` and `hosts files` count.
fn names_hosts_database(line: &str) -> bool {
    let rest = line.trim_start_matches(is_c_space);
    let end = rest
        .find(|c| is_c_space(c) || c == ':')
        .unwrap_or(rest.len());
    &rest[..end] == "hosts"
}

fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}
