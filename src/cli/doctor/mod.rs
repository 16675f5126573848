//! `nm-vpn-netns doctor`: checks the installation, and says how to fix what is broken.
//!
//! It first looks at everything ([`observe`]), then judges ([`checks`], pure), then prints.

mod checks;
mod observe;

use std::process::ExitCode;

use checks::{Finding, Verdict};

const LONG_ABOUT: &str = "\
Checks that isolation can work on this system, and says how to fix what is broken: that
nm-vpn-netns-service is the plugin NetworkManager runs for OpenVPN and for OpenConnect, one line
for each that is installed, and that the stock plugin is still there for it to start (without
it, an isolated OpenVPN profile fails to connect, and an isolated OpenConnect profile connects
without isolation); that D-Bus can start the agent (run as root, doctor starts it and asks its
version); that NetworkManager and the plugins are versions nm-vpn-netns supports;
whether openvpn's data-channel offload (DCO) module is loaded, which isolated VPNs cannot use;
and whether nscd, systemd-resolved or avahi-daemon would answer lookups across namespaces,
which nm-vpn-netns exec guards against.

Each problem comes with the command that fixes it.

EXIT STATUS: 0 when nothing is broken (warnings and notes included), 1 when a check failed or
doctor itself could not run.";

/// Check the installation, and say how to fix what is broken.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Args {
    /// Print the findings as a JSON array of {check, verdict, detail, fix}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot start the D-Bus client")]
    Runtime(#[source] std::io::Error),
    #[error("cannot print the findings")]
    Json(#[source] serde_json::Error),
}

pub fn run(args: Args) -> Result<ExitCode, DoctorError> {
    let observed = super::block_on(observe::observe()).map_err(DoctorError::Runtime)?;
    let findings = checks::evaluate(&observed);
    if args.json {
        let text = serde_json::to_string_pretty(&findings).map_err(DoctorError::Json)?;
        println!("{text}");
    } else {
        print!("{}", render(&findings));
    }
    let broken = findings.iter().any(|f| f.verdict == Verdict::Fail);
    Ok(if broken {
        ExitCode::from(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// One line per finding, its fix indented below it.
fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let verdict = match f.verdict {
            Verdict::Ok => "ok",
            Verdict::Info => "note",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!("{verdict:<5} {}: {}\n", f.check, f.detail));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("      fix: {fix}\n"));
        }
    }
    out
}
