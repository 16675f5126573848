//! The pages of section 8: one for each program, and one for each visible subcommand of
//! `nm-vpn-netns`, rendered by clap_mangen with the sections it has no place for added.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_mangen::roff::Roff;
use clap_mangen::Man;

use super::{without_preamble, DocsError, Extras, NETNS_FILES, SOURCE};
use crate::{agent, shim};

const SECTION: &str = "8";
const MANUAL: &str = "System Manager's Manual";

const CLI: Extras = Extras {
    files: &NETNS_FILES,
    examples: &[(
        "Isolate the VPN connection `work`, bring it up, and run a browser in its namespace as \
         yourself:",
        &[
            "nmcli connection modify work +vpn.data netns-isolate=yes",
            "nmcli connection up work",
            "nm-vpn-netns exec work -- firefox",
        ],
    )],
    see_also: &[
        "nm-vpn-netns(5)",
        "nm-vpn-netns-service(8)",
        "nm-vpn-netns-agent(8)",
        "nmcli(1)",
        "ip-netns(8)",
        "NetworkManager(8)",
    ],
};

const SUBCOMMAND: Extras = Extras {
    files: &[],
    examples: &[],
    see_also: &["nm-vpn-netns(8)", "nm-vpn-netns(5)"],
};

const AGENT_FILES: [(&str, &str); 8] = [
    NETNS_FILES[0],
    NETNS_FILES[1],
    (
        "/etc/nm-vpn-netns/agent.conf",
        "The administrator's policy, read at each connect; no file means the defaults. A key \
         file owned by root and writable by no one else, with the group `[agent]` and the keys \
         `system-foreign-namespaces` (namespaces nm-vpn-netns did not create that system \
         connections may use, separated by `;`; default none), `user-namespace-names` \
         (`prefixed`, the default, names a user's namespace `u<UID>-NAME`, UID the user's \
         numeric id; `as-given` takes the profile's name) and `max-namespaces-per-user` (default 4). A bad key or value refuses \
         every connect with an error that names it.",
    ),
    (
        "/run/nm-vpn-netns/",
        "One record for each namespace the agent made or configured, with the namespace's \
         identity, so that it removes only what it made.",
    ),
    (
        "/var/lib/nm-vpn-netns/",
        "A copy of each record that outlives a reboot, as `/etc/netns` does: what the agent \
         wrote there, and the files it replaced.",
    ),
    (
        "/usr/share/dbus-1/system.d/io.github.NmVpnNetns.Agent1.conf",
        "The D-Bus policy: only root may own the agent's name or call it.",
    ),
    (
        "/usr/share/dbus-1/system-services/io.github.NmVpnNetns.Agent1.service",
        "The D-Bus activation file.",
    ),
    (
        "/usr/lib/systemd/system/nm-vpn-netns-agent.service",
        "The systemd unit that D-Bus activation starts where systemd runs.",
    ),
];

const AGENT: Extras = Extras {
    files: &AGENT_FILES,
    examples: &[],
    see_also: &[
        "nm-vpn-netns(8)",
        "nm-vpn-netns-service(8)",
        "nm-vpn-netns(5)",
        "ip-netns(8)",
        "dbus-daemon(1)",
    ],
};

const SERVICE: Extras = Extras {
    files: &[
        (
            "/usr/lib/NetworkManager/VPN/nm-openvpn-service.name",
            "NetworkManager's registration of the OpenVPN plugin. Installing nm-vpn-netns \
             replaces it with a copy whose `program=` names this plugin.",
        ),
        (
            "/usr/lib/NetworkManager/VPN/nm-openconnect-service.name",
            "The same for the OpenConnect plugin.",
        ),
        (
            "/usr/lib/NetworkManager/VPN/*.name.distrib",
            "The stock registrations, moved aside. The one whose `service=` is the service of \
             `--bus-name` names in `program=` the stock service that this plugin runs; a service \
             without one is refused.",
        ),
    ],
    examples: &[],
    see_also: &[
        "nm-vpn-netns(8)",
        "nm-vpn-netns-agent(8)",
        "nm-vpn-netns(5)",
        "NetworkManager(8)",
        "nmcli(1)",
    ],
};

/// The pages as (file name, roff), for the command-line interface `cli`.
pub(super) fn pages(cli: clap::Command, date: &str) -> Result<Vec<(String, String)>, DocsError> {
    // A page for `help` would say nothing that the others do not.
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let mut pages = vec![page(cli.clone(), &CLI, date)?];
    subcommand_pages(&cli, date, &mut pages)?;
    pages.push(page(agent::Args::command(), &AGENT, date)?);
    pages.push(page(shim::Args::command(), &SERVICE, date)?);
    Ok(pages)
}

/// A page for each visible subcommand of `cmd` and of theirs, named as clap_mangen's
/// SUBCOMMANDS section refers to them (`nm-vpn-netns-status(8)`).
fn subcommand_pages(
    cmd: &clap::Command,
    date: &str,
    pages: &mut Vec<(String, String)>,
) -> Result<(), DocsError> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push(page(sub.clone(), &SUBCOMMAND, date)?);
        subcommand_pages(sub, date, pages)?;
    }
    Ok(())
}

fn page(cmd: clap::Command, extras: &Extras, date: &str) -> Result<(String, String), DocsError> {
    let man = Man::new(cmd.clone())
        .section(SECTION)
        .date(date)
        .source(SOURCE)
        .manual(MANUAL);
    let name = man.get_filename();
    let text = render(&man, &cmd, extras).map_err(|source| DocsError::Render {
        page: name.clone(),
        source,
    })?;
    Ok((name, text))
}

type Piece = fn(&Man, &mut dyn Write) -> io::Result<()>;

/// clap_mangen's sections and ours, in the order of man-pages(7): ... OPTIONS, SUBCOMMANDS,
/// FILES, VERSION, EXAMPLES, SEE ALSO.
fn render(man: &Man, cmd: &clap::Command, extras: &Extras) -> io::Result<String> {
    let mut pieces: Vec<Piece> = vec![
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        // Every program has at least --help.
        Man::render_options_section,
    ];
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        pieces.push(Man::render_subcommands_section);
    }
    let mut page = Roff::new().render();
    for piece in pieces {
        append(&mut page, man, piece)?;
    }
    let mut files = Roff::new();
    extras.render_files(&mut files);
    page.push_str(without_preamble(&files.render()));
    if cmd.get_version().is_some() {
        append(&mut page, man, Man::render_version_section)?;
    }
    let mut rest = Roff::new();
    extras.render_examples(&mut rest);
    extras.render_see_also(&mut rest);
    page.push_str(without_preamble(&rest.render()));
    Ok(page)
}

fn append(page: &mut String, man: &Man, piece: Piece) -> io::Result<()> {
    let mut text = Vec::new();
    piece(man, &mut text)?;
    page.push_str(without_preamble(&String::from_utf8_lossy(&text)));
    Ok(())
}
