//! The man pages and shell completions, rendered from the programs' clap commands and from the
//! key table of [`crate::plan::settings`], so that they cannot drift from what the code accepts.
//!
//! `nm-vpn-netns generate-docs DIR` writes:
//! - `DIR/man/`: `nm-vpn-netns.8`, `nm-vpn-netns-agent.8`, `nm-vpn-netns-service.8`, one
//!   `nm-vpn-netns-SUBCOMMAND.8` for each visible subcommand of [`Cli`], and `nm-vpn-netns.5`
//!   (the `netns-*` keys of `vpn.data`);
//! - `DIR/completions/`: `nm-vpn-netns.bash`, `_nm-vpn-netns` (zsh) and `nm-vpn-netns.fish`.
//!
//! Only `nm-vpn-netns` gets completions: NetworkManager and D-Bus start the other two, from
//! directories that are not on `PATH`.
//!
//! - [`programs`]: the pages of section 8;
//! - [`keys`]: the page of section 5.

mod keys;
mod programs;

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Inline, Roff};

use super::Cli;

/// The subdirectories of the output directory.
const MAN_DIR: &str = "man";
const COMPLETIONS_DIR: &str = "completions";

/// The shells that get completions, each file named as clap_complete names it.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// `.TH`'s source: the package, not the program, since all pages ship together.
const SOURCE: &str = concat!("nm-vpn-netns ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("cannot render {page}")]
    Render {
        page: String,
        #[source]
        source: io::Error,
    },
    #[error("SOURCE_DATE_EPOCH is {value:?}; expected seconds since 1970")]
    SourceDateEpoch { value: String },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One generated file: its path under the output directory, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub path: PathBuf,
    pub text: String,
}

/// Every file `generate` writes, for the command-line interface `cli` (normally [`Cli`]'s), with
/// `date` (`YYYY-MM-DD`) on each page.
pub fn render(cli: clap::Command, date: &str) -> Result<Vec<Doc>, DocsError> {
    let mut docs: Vec<Doc> = programs::pages(cli.clone(), date)?
        .into_iter()
        .chain([keys::page(date)])
        .map(|(name, text)| Doc {
            path: Path::new(MAN_DIR).join(name),
            text,
        })
        .collect();
    docs.extend(completions(cli));
    Ok(docs)
}

/// Writes every file of [`render`] for [`Cli`] under `dir`, creating directories as needed.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    render(Cli::command(), &page_date()?)?
        .into_iter()
        .map(|doc| {
            let path = dir.join(&doc.path);
            path.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, doc.text))
                .map_err(|source| DocsError::Write {
                    path: path.clone(),
                    source,
                })?;
            Ok(path)
        })
        .collect()
}

/// The pages' date: that of `SOURCE_DATE_EPOCH` when it is set, so that a package build is
/// reproducible, and today's otherwise.
fn page_date() -> Result<String, DocsError> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .parse()
            .map_err(|_| DocsError::SourceDateEpoch { value })?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    Ok(civil_date(secs))
}

/// `YYYY-MM-DD` of a Unix time, in UTC (the inverse of Howard Hinnant's `days_from_civil`).
fn civil_date(unix_secs: u64) -> String {
    let z = unix_secs / 86_400 + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn completions(mut cli: clap::Command) -> Vec<Doc> {
    let name = cli.get_name().to_owned();
    SHELLS
        .into_iter()
        .map(|shell| {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cli, &name, &mut text);
            Doc {
                path: Path::new(COMPLETIONS_DIR)
                    .join(clap_complete::Generator::file_name(&shell, &name)),
                text: String::from_utf8_lossy(&text).into_owned(),
            }
        })
        .collect()
}

/// Sections that clap_mangen has no place for, shared by the pages of both sections.
#[derive(Debug, Clone, Copy, Default)]
struct Extras {
    /// FILES: a path and what it is.
    files: &'static [(&'static str, &'static str)],
    /// EXAMPLES: what each does, then its commands.
    examples: &'static [(&'static str, &'static [&'static str])],
    /// SEE ALSO: pages as `name(section)`.
    see_also: &'static [&'static str],
}

/// The namespace's files, which every page that talks about a namespace lists.
const NETNS_FILES: [(&str, &str); 2] = [
    (
        "/run/netns/NAME",
        "The network namespace of an isolated VPN, for `ip netns exec NAME`.",
    ),
    (
        "/etc/netns/NAME/",
        "Its `resolv.conf`, with the VPN's DNS servers and search domains, and its \
         `nsswitch.conf`; `ip netns exec` mounts them over those in `/etc`.",
    ),
];

impl Extras {
    fn render_files(&self, roff: &mut Roff) {
        if self.files.is_empty() {
            return;
        }
        roff.control("SH", ["FILES"]);
        for (path, what) in self.files {
            roff.control("TP", []);
            roff.text([bold(*path)]);
            roff.text(spans(what));
        }
    }

    fn render_examples(&self, roff: &mut Roff) {
        if self.examples.is_empty() {
            return;
        }
        roff.control("SH", ["EXAMPLES"]);
        for (what, commands) in self.examples {
            roff.control("PP", []);
            roff.text(spans(what));
            roff.control("PP", []);
            roff.control("RS", ["4"]);
            roff.control("nf", []);
            for command in *commands {
                roff.text([roman(*command)]);
            }
            roff.control("fi", []);
            roff.control("RE", []);
        }
    }

    fn render_see_also(&self, roff: &mut Roff) {
        roff.control("SH", ["SEE ALSO"]);
        let mut line = Vec::new();
        for (i, page) in self.see_also.iter().enumerate() {
            let (name, section) = page.split_once('(').unwrap_or((page, ""));
            if i > 0 {
                line.push(roman(", "));
            }
            line.extend([bold(name), roman(format!("({section}"))]);
        }
        roff.text(line);
    }
}

/// `text` with its `backticked` spans in bold, as the key table and [`Extras`] write literals.
fn spans(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

/// A piece of roff without the preamble that every rendered [`Roff`] starts with, so that a page
/// made of pieces has it once.
fn without_preamble(piece: &str) -> &str {
    // An empty document renders as the preamble alone.
    let preamble = Roff::new().render();
    piece.strip_prefix(preamble.as_str()).unwrap_or(piece)
}

#[cfg(test)]
mod tests;
