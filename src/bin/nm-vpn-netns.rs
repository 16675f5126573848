//! Command-line tool for users and admins of nm-vpn-netns.

#![deny(clippy::too_many_lines)]

use anyhow::Context;
use nm_vpn_netns::cli::{self, docs, Invocation};

fn main() -> anyhow::Result<()> {
    match cli::parse() {
        Invocation::Run(_cli) => {}
        Invocation::GenerateDocs(dir) => {
            let written = docs::generate(&dir)
                .with_context(|| format!("cannot generate the docs in {}", dir.display()))?;
            for path in written {
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}
