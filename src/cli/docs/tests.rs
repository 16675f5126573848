use super::*;
use crate::plan::settings::{Key, NAME_RULE, STATIC_IP_KEYS};

const DATE: &str = "2024-05-06";

fn docs(cli: clap::Command) -> Vec<Doc> {
    render(cli, DATE).unwrap()
}

fn doc<'a>(docs: &'a [Doc], path: &str) -> &'a str {
    let found = docs.iter().find(|d| d.path == Path::new(path));
    &found
        .unwrap_or_else(|| panic!("no {path} in {:?}", paths(docs)))
        .text
}

fn paths(docs: &[Doc]) -> Vec<String> {
    docs.iter().map(|d| d.path.display().to_string()).collect()
}

/// How roff spells `text` outside a font change: `-` is the minus sign, `'` a string.
fn roff(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('-', r"\-")
        .replace('\'', r"\*(Aq")
}

/// The `.SH` headings of a page, in order.
fn headings(page: &str) -> Vec<&str> {
    page.lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|h| h.trim_matches('"'))
        .collect()
}

#[test]
fn keys_page_lists_every_key_with_its_values_and_default() {
    let page = doc(&docs(Cli::command()), "man/nm-vpn-netns.5").to_owned();
    for spec in Key::ALL.map(Key::spec) {
        let entry = format!(".TP\n\\fB{}\\fR\n", roff(spec.name));
        let at = page
            .find(&entry)
            .unwrap_or_else(|| panic!("expected an entry {entry:?} in:\n{page}"));
        let values = format!(". Default: \\fB{}\\fR.", roff(spec.default));
        assert!(
            page[at..].contains(&values),
            "{} lacks {values:?}",
            spec.name
        );
    }
}

#[test]
fn keys_page_text() {
    let page = doc(&docs(Cli::command()), "man/nm-vpn-netns.5").to_owned();
    assert!(
        page.contains(".TH nm-vpn-netns 5 2024-05-06 \"nm-vpn-netns "),
        "{page}"
    );
    assert_eq!(
        headings(&page),
        [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "KEYS",
            "NAMESPACE NAMES",
            "FILES",
            "EXAMPLES",
            "SEE ALSO"
        ]
    );
    for text in [
        "nmcli connection modify work +vpn.data netns-isolate=yes",
        "refuses the connection",
        "/etc/netns/NAME/",
    ] {
        assert!(page.contains(&roff(text)), "expected {text:?} in:\n{page}");
    }
    for key in STATIC_IP_KEYS {
        assert!(page.contains(&format!("\\fB{}\\fR", roff(key))), "{key}");
    }
    assert!(
        page.contains("\\fBA\\-Z a\\-z 0\\-9 _ . \\-\\fR"),
        "{NAME_RULE}"
    );
    assert!(page.contains("\\fBnm\\-vpn\\-netns\\fR(8), "), "{page}");
}

#[test]
fn program_pages_say_who_starts_them() {
    let docs = docs(Cli::command());
    for (page, says) in [
        ("man/nm-vpn-netns.8", "Two programs that users never start"),
        (
            "man/nm-vpn-netns-agent.8",
            "Users do not start it. D-Bus starts it",
        ),
        (
            "man/nm-vpn-netns-service.8",
            "Users do not start it. NetworkManager starts",
        ),
    ] {
        let text = doc(&docs, page);
        assert!(text.contains(&roff(says)), "expected {says:?} in {page}");
        let name = page.trim_start_matches("man/").trim_end_matches(".8");
        assert!(
            text.contains(&format!(".TH {name} 8 {DATE} \"nm-vpn-netns ")),
            "{page}"
        );
        let headings = headings(text);
        let from_files = &headings[headings.iter().position(|h| *h == "FILES").unwrap()..];
        assert!(
            matches!(from_files, ["FILES", "VERSION", .., "SEE ALSO"]),
            "{page}: {headings:?}"
        );
        // The pieces of a page share one preamble.
        assert_eq!(text.matches(".ds Aq").count(), 2, "{page}");
    }
    let agent = doc(&docs, "man/nm-vpn-netns-agent.8");
    assert!(agent.contains(&roff(crate::contract::BUS_NAME)));
    assert!(agent.contains(&roff("--address")));
    let service = doc(&docs, "man/nm-vpn-netns-service.8");
    let diverted = format!("{}/*{}", crate::shim::VPN_DIR, crate::shim::DIVERTED_SUFFIX);
    assert!(service.contains(&roff(&diverted)));
    assert!(service.contains(&roff("--stock-program")));
}

/// A subcommand that a later version adds gets its page, a place on the main page, and
/// completions, with nothing to change here.
#[test]
fn subcommands_are_picked_up() {
    let cli = Cli::command()
        .subcommand(clap::Command::new("sample").about("Show a sample"))
        .subcommand(clap::Command::new("secret").hide(true));
    let docs = docs(cli);
    let sample = doc(&docs, "man/nm-vpn-netns-sample.8");
    assert!(sample.contains(&roff("Show a sample")), "{sample}");
    assert!(sample.contains(&roff("nm-vpn-netns sample")), "{sample}");
    let main = doc(&docs, "man/nm-vpn-netns.8");
    assert!(headings(main).contains(&"SUBCOMMANDS"), "{main}");
    assert!(main.contains(&roff("nm-vpn-netns-sample(8)")), "{main}");
    for shell in ["nm-vpn-netns.bash", "_nm-vpn-netns", "nm-vpn-netns.fish"] {
        let text = doc(&docs, &format!("completions/{shell}"));
        assert!(text.contains("sample"), "{shell}");
    }
    assert!(!paths(&docs)
        .iter()
        .any(|p| p.contains("secret") || p.contains("help")));
}

#[test]
fn spans_mark_literals() {
    assert_eq!(
        spans("set `netns-isolate=yes` here"),
        [roman("set "), bold("netns-isolate=yes"), roman(" here")]
    );
    assert_eq!(spans("`uuid`"), [bold("uuid")]);
}

#[test]
fn dates() {
    for (secs, date) in [
        (0, "1970-01-01"),
        (951_782_400, "2000-02-29"),
        (1_700_000_000, "2023-11-14"),
        (4_107_542_399, "2100-02-28"),
    ] {
        assert_eq!(civil_date(secs), date, "{secs}");
    }
}
