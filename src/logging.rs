//! Logging set-up shared by the binaries, following NetworkManager's plugin conventions.
//!
//! NM passes `NM_VPN_LOG_LEVEL` as a syslog level (7 trace … 3 err, 0 off). Plugins' stderr ends
//! up in NM's own log, which is where an admin looks, so stderr is the sink.

use log::LevelFilter;

/// Maps NM's syslog-style level to a `log` filter; unset or unparsable means info.
pub fn level_from_nm(value: Option<&str>) -> LevelFilter {
    match value.and_then(|v| v.trim().parse::<u8>().ok()) {
        None => LevelFilter::Info,
        Some(0) => LevelFilter::Off,
        Some(1..=3) => LevelFilter::Error,
        Some(4) => LevelFilter::Warn,
        Some(5) => LevelFilter::Info,
        Some(6) => LevelFilter::Debug,
        Some(_) => LevelFilter::Trace,
    }
}

/// Initialises the global logger for a binary named `name`.
pub fn init(name: &'static str) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| level_from_nm(std::env::var("NM_VPN_LOG_LEVEL").ok().as_deref()));
    env_logger::Builder::new()
        .filter_level(level)
        .format(move |buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "{name}[{}]: <{}> {}",
                std::process::id(),
                record.level(),
                record.args()
            )
        })
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nm_levels_map_to_filters() {
        assert_eq!(level_from_nm(None), LevelFilter::Info);
        assert_eq!(level_from_nm(Some("0")), LevelFilter::Off);
        assert_eq!(level_from_nm(Some("3")), LevelFilter::Error);
        assert_eq!(level_from_nm(Some("4")), LevelFilter::Warn);
        assert_eq!(level_from_nm(Some("5")), LevelFilter::Info);
        assert_eq!(level_from_nm(Some("6")), LevelFilter::Debug);
        assert_eq!(level_from_nm(Some("7")), LevelFilter::Trace);
        assert_eq!(level_from_nm(Some("junk")), LevelFilter::Info);
    }
}
