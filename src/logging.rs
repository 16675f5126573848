//! Logging set-up shared by the binaries, following NetworkManager's plugin conventions.
//!
//! NM passes `NM_VPN_LOG_LEVEL` as a syslog level (7 trace … 3 err) and `NM_VPN_LOG_SYSLOG=1`
//! when it logs to syslog itself. With syslog unreachable (no `/dev/log`, as in containers and
//! the e2e rig) we fall back to stderr, which NM passes on to its own log.
//!
//! Each line carries the program's name and pid once. A syslog datagram carries them in its
//! header, which syslog and journald turn into the identifier. On stderr they lead the line, for
//! NM's log and the e2e rig's, unless stderr is the journal (the agent's systemd unit): journald
//! adds them itself, so a line there is only the priority prefix of sd-daemon(3) and the message.
//!
//! Every message is one line: control characters are escaped here, once for both binaries, so
//! that text a peer chose (a connection's id, a server's banner, an error from the bus) can never
//! start a line of its own, such as a forged `<3>` line in the journal, or move a terminal's cursor.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use log::{LevelFilter, Log, Metadata, Record};

const SYSLOG_SOCKET: &str = "/dev/log";
/// syslog facility LOG_DAEMON, as nm-openvpn uses.
const LOG_DAEMON: u8 = 3 << 3;

/// Maps NM's syslog-style level to a `log` filter; unset or unparsable means info.
///
/// NM sends 0 (LOG_EMERG) whenever its VPN_PLUGIN log domain is off, which is its default. We
/// still log errors then: a refusal that happens after `Connect` returned (the namespace is in
/// use, the agent failed) reaches NM's log no other way, and NM itself reports only a generic
/// reason.
pub fn level_from_nm(value: Option<&str>) -> LevelFilter {
    match value.and_then(|v| v.trim().parse::<u8>().ok()) {
        None => LevelFilter::Info,
        Some(0..=3) => LevelFilter::Error,
        Some(4) => LevelFilter::Warn,
        Some(5) => LevelFilter::Info,
        Some(6) => LevelFilter::Debug,
        Some(_) => LevelFilter::Trace,
    }
}

enum Sink {
    Syslog(UnixDatagram),
    Stderr,
}

/// How a line on stderr reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StderrFormat {
    /// `name[pid]: <LEVEL> message`.
    Plain,
    /// `<N>message`, N the syslog severity.
    Journal,
}

struct Logger {
    name: &'static str,
    level: LevelFilter,
    sink: Mutex<Sink>,
    stderr: StderrFormat,
}

fn syslog_severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let pid = std::process::id();
        let message = record.args().to_string();
        let message = escape_controls(&message);
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Sink::Syslog(socket) = &*sink {
            let pri = LOG_DAEMON | syslog_severity(record.level());
            let line = format!("<{pri}>{}[{pid}]: {message}", self.name);
            if socket.send(line.as_bytes()).is_ok() {
                return;
            }
            // syslog went away (it restarted): keep the message rather than lose it.
            *sink = Sink::Stderr;
        }
        let line = stderr_line(self.stderr, self.name, pid, record.level(), &message);
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    fn flush(&self) {}
}

fn stderr_line(
    format: StderrFormat,
    name: &str,
    pid: u32,
    level: log::Level,
    message: &str,
) -> String {
    match format {
        StderrFormat::Plain => format!("{name}[{pid}]: <{level}> {message}"),
        StderrFormat::Journal => format!("<{}>{message}", syslog_severity(level)),
    }
}

/// `message` with every control character escaped: C0, DEL and C1, ESC among them. `\n`, `\r`
/// and `\t` read as in Rust, the others as `\x1b` or, for C1, `\u{85}`.
pub fn escape_controls(message: &str) -> Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return Cow::Borrowed(message);
    }
    let mut escaped = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if u32::from(c) < 0x80 && c.is_control() => {
                let _ = write!(escaped, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Whether `journal_stream`, the value of `JOURNAL_STREAM` (`DEV:INODE`, in decimal), names the
/// file `(dev, ino)`. systemd sets it for a service whose stderr is the journal; a child whose
/// stderr was redirected inherits it, so the file itself must match (systemd.exec(5)).
fn is_journal_stream(journal_stream: Option<&str>, dev: u64, ino: u64) -> bool {
    journal_stream
        .and_then(|v| v.split_once(':'))
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

fn stderr_format() -> StderrFormat {
    let journal = nix::sys::stat::fstat(std::io::stderr().as_fd()).is_ok_and(|st| {
        is_journal_stream(
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
            st.st_dev,
            st.st_ino,
        )
    });
    if journal {
        StderrFormat::Journal
    } else {
        StderrFormat::Plain
    }
}

fn open_syslog() -> Option<UnixDatagram> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect(SYSLOG_SOCKET).ok()?;
    Some(socket)
}

/// Initialises the global logger for a binary named `name`. `RUST_LOG` (a level) overrides
/// NM's level, for debugging by hand.
pub fn init(name: &'static str) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| level_from_nm(std::env::var("NM_VPN_LOG_LEVEL").ok().as_deref()));
    let wants_syslog = std::env::var("NM_VPN_LOG_SYSLOG").is_ok_and(|v| v.trim() == "1");
    let sink = match wants_syslog.then(open_syslog).flatten() {
        Some(socket) => Sink::Syslog(socket),
        None => Sink::Stderr,
    };
    let logger = Logger {
        name,
        level,
        sink: Mutex::new(sink),
        stderr: stderr_format(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nm_levels_map_to_filters() {
        assert_eq!(level_from_nm(None), LevelFilter::Info);
        assert_eq!(level_from_nm(Some("0")), LevelFilter::Error);
        assert_eq!(level_from_nm(Some("3")), LevelFilter::Error);
        assert_eq!(level_from_nm(Some("4")), LevelFilter::Warn);
        assert_eq!(level_from_nm(Some("5")), LevelFilter::Info);
        assert_eq!(level_from_nm(Some("6")), LevelFilter::Debug);
        assert_eq!(level_from_nm(Some("7")), LevelFilter::Trace);
        assert_eq!(level_from_nm(Some("junk")), LevelFilter::Info);
    }

    #[test]
    fn syslog_messages_carry_facility_and_severity() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let logger = Logger {
            name: "nm-vpn-netns-test",
            level: LevelFilter::Info,
            sink: Mutex::new(Sink::Syslog(ours)),
            stderr: StderrFormat::Plain,
        };
        logger.log(
            &Record::builder()
                .level(log::Level::Error)
                .args(format_args!("no namespace"))
                .build(),
        );
        logger.log(
            &Record::builder()
                .level(log::Level::Debug)
                .args(format_args!("filtered out"))
                .build(),
        );
        let mut buf = [0u8; 256];
        let n = theirs.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(
            line,
            format!(
                "<27>nm-vpn-netns-test[{}]: no namespace",
                std::process::id()
            )
        );
        theirs.set_nonblocking(true).unwrap();
        assert!(theirs.recv(&mut buf).is_err(), "debug was filtered out");
    }

    #[test]
    fn stderr_lines_carry_name_and_pid_unless_journald_adds_them() {
        let line = |format, level| {
            stderr_line(
                format,
                "nm-vpn-netns-agent",
                541,
                level,
                "isolated \"work\"",
            )
        };
        assert_eq!(
            line(StderrFormat::Plain, log::Level::Info),
            "nm-vpn-netns-agent[541]: <INFO> isolated \"work\""
        );
        for (level, prefix) in [
            (log::Level::Error, 3),
            (log::Level::Warn, 4),
            (log::Level::Info, 6),
            (log::Level::Debug, 7),
        ] {
            assert_eq!(
                line(StderrFormat::Journal, level),
                format!("<{prefix}>isolated \"work\""),
                "{level}"
            );
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        for (raw, escaped) in [
            ("plain text, ünïcode and \\n as typed", None),
            ("work\n<3>forged", Some("work\\n<3>forged")),
            ("a\r\tb", Some("a\\r\\tb")),
            ("\u{1b}[2Jcleared", Some("\\x1b[2Jcleared")),
            (
                "nul\0 bel\u{7} del\u{7f}",
                Some("nul\\x00 bel\\x07 del\\x7f"),
            ),
            ("c1\u{85}\u{9b}", Some("c1\\u{85}\\u{9b}")),
        ] {
            let got = escape_controls(raw);
            assert_eq!(got, escaped.unwrap_or(raw), "{raw:?}");
            assert_eq!(
                matches!(got, Cow::Borrowed(_)),
                escaped.is_none(),
                "{raw:?}"
            );
        }
    }

    /// Both sinks get one line per message, whatever a peer put in it.
    #[test]
    fn a_message_is_one_line_in_every_sink() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let logger = Logger {
            name: "nm-vpn-netns-test",
            level: LevelFilter::Info,
            sink: Mutex::new(Sink::Syslog(ours)),
            stderr: StderrFormat::Journal,
        };
        let id = "work\n<3>forged";
        logger.log(
            &Record::builder()
                .level(log::Level::Info)
                .args(format_args!("isolated connection {id}"))
                .build(),
        );
        let mut buf = [0u8; 256];
        let n = theirs.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(
            line,
            format!(
                "<30>nm-vpn-netns-test[{}]: isolated connection work\\n<3>forged",
                std::process::id()
            )
        );
    }

    #[test]
    fn the_journal_stream_must_be_stderr_itself() {
        assert!(is_journal_stream(Some("8:123456"), 8, 123_456));
        assert!(!is_journal_stream(Some("8:123456"), 8, 123_457));
        assert!(!is_journal_stream(Some("9:123456"), 8, 123_456));
        assert!(!is_journal_stream(None, 8, 123_456));
        for junk in ["", "8", "8:", ":1", "x:1", "8:1:2"] {
            assert!(!is_journal_stream(Some(junk), 8, 1), "{junk:?}");
        }
    }
}
