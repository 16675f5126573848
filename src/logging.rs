//! Logging set-up shared by the binaries, following NetworkManager's plugin conventions.
//!
//! NM passes `NM_VPN_LOG_LEVEL` as a syslog level (7 trace … 3 err) and `NM_VPN_LOG_SYSLOG=1`
//! when it logs to syslog itself. With syslog unreachable (no `/dev/log`, as in containers and
//! the e2e rig) we fall back to stderr, which NM passes on to its own log. A syslog that goes
//! away (it restarted) is connected to once more; a message it cannot take (too long, its queue
//! full) goes to stderr, and syslog stays the sink for the next.
//!
//! Each line carries the program's name and pid once. A syslog datagram carries them in its
//! header, which syslog and journald turn into the identifier. On stderr they lead the line, for
//! NM's log and the e2e rig's, unless stderr is the journal (the agent's systemd unit): journald
//! adds them itself, so a line there is only the priority prefix of sd-daemon(3) and the message.
//!
//! Every message is one line: control characters are escaped here, once for both binaries, so
//! that text a peer chose (a connection's id, a server's banner, an error from the bus) can never
//! start a line of its own, such as a forged `<3>` line in the journal, or move a terminal's cursor.
//! The backslash is escaped too, so that an escape in a line is always ours, and so are Unicode's
//! line and paragraph separators and its bidirectional controls, which would make a line read
//! otherwise than it is.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
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
    /// The socket, connected to `path`.
    Syslog {
        socket: UnixDatagram,
        path: PathBuf,
    },
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
        if let Sink::Syslog { socket, path } = &*sink {
            let pri = LOG_DAEMON | syslog_severity(record.level());
            let line = format!("<{pri}>{}[{pid}]: {message}", self.name);
            match socket.send(line.as_bytes()) {
                Ok(_) => return,
                // syslog restarted, with a socket of its own: connect to that once. If it is
                // not there, stderr from now on.
                Err(e) if is_gone(&e) => match connect_syslog(path) {
                    Some(socket) if socket.send(line.as_bytes()).is_ok() => {
                        let path = path.clone();
                        *sink = Sink::Syslog { socket, path };
                        return;
                    }
                    _ => *sink = Sink::Stderr,
                },
                // This message only (too long, or syslog's queue full): it goes to stderr.
                Err(_) => {}
            }
        }
        let line = stderr_line(self.stderr, self.name, pid, record.level(), &message);
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    fn flush(&self) {}
}

/// Whether a send failed because nothing listens at the syslog socket any more.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(nix::errno::Errno::from_raw),
        Some(
            nix::errno::Errno::ENOENT
                | nix::errno::Errno::ECONNREFUSED
                | nix::errno::Errno::ENOTCONN
                | nix::errno::Errno::EPIPE
        )
    )
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

/// `message` with every control character escaped: C0, DEL and C1, ESC among them. `\n`, `\r`,
/// `\t` and `\\` read as in Rust, the other ASCII ones as `\x1b`, the others as `\u{85}`: C1,
/// the line and paragraph separators U+2028 and U+2029, and the bidirectional embeddings,
/// overrides and isolates U+202A–U+202E and U+2066–U+2069.
pub fn escape_controls(message: &str) -> Cow<'_, str> {
    if !message.chars().any(needs_escape) {
        return Cow::Borrowed(message);
    }
    let mut escaped = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            '\\' => escaped.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(escaped, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\\' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
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

fn connect_syslog(path: &Path) -> Option<UnixDatagram> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect(path).ok()?;
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
    let path = Path::new(SYSLOG_SOCKET);
    let sink = match wants_syslog.then(|| connect_syslog(path)).flatten() {
        Some(socket) => Sink::Syslog {
            socket,
            path: path.to_owned(),
        },
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

    /// A logger at info whose syslog is `socket`, connected to `path`.
    fn syslog_logger(socket: UnixDatagram, path: &Path, stderr: StderrFormat) -> Logger {
        Logger {
            name: "nm-vpn-netns-test",
            level: LevelFilter::Info,
            sink: Mutex::new(Sink::Syslog {
                socket,
                path: path.to_owned(),
            }),
            stderr,
        }
    }

    /// A logger on one end of a pair, and the other end, as syslog.
    fn paired_logger(stderr: StderrFormat) -> (Logger, UnixDatagram) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let logger = syslog_logger(ours, Path::new("/nonexistent"), stderr);
        (logger, theirs)
    }

    fn log(logger: &Logger, level: log::Level, args: std::fmt::Arguments<'_>) {
        logger.log(&Record::builder().level(level).args(args).build());
    }

    /// A syslog listening at `path`; [`recv`] on it never waits.
    fn listen(path: &Path) -> UnixDatagram {
        let syslog = UnixDatagram::bind(path).unwrap();
        syslog.set_nonblocking(true).unwrap();
        syslog
    }

    /// The next datagram syslog has, if any.
    fn recv(syslog: &UnixDatagram) -> Option<String> {
        let mut buf = [0u8; 512];
        let n = syslog.recv(&mut buf).ok()?;
        Some(String::from_utf8(buf[..n].to_vec()).unwrap())
    }

    fn from_us(message: &str) -> Option<String> {
        Some(format!(
            "nm-vpn-netns-test[{}]: {message}",
            std::process::id()
        ))
    }

    #[test]
    fn syslog_messages_carry_facility_and_severity() {
        let (logger, syslog) = paired_logger(StderrFormat::Plain);
        log(&logger, log::Level::Error, format_args!("no namespace"));
        let secret = "password=hunter2";
        log(
            &logger,
            log::Level::Debug,
            format_args!("filtered out: {secret}"),
        );
        assert_eq!(
            recv(&syslog),
            from_us("no namespace").map(|l| format!("<27>{l}"))
        );
        assert_eq!(recv(&syslog), None, "debug was filtered out");
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
            ("plain text and ünïcode", None),
            ("\\n as typed", Some("\\\\n as typed")),
            ("forged \\x0a", Some("forged \\\\x0a")),
            ("work\n<3>forged", Some("work\\n<3>forged")),
            ("a\r\tb", Some("a\\r\\tb")),
            ("\u{1b}[2Jcleared", Some("\\x1b[2Jcleared")),
            (
                "nul\0 bel\u{7} del\u{7f}",
                Some("nul\\x00 bel\\x07 del\\x7f"),
            ),
            ("c1\u{85}\u{9b}", Some("c1\\u{85}\\u{9b}")),
            (
                "line\u{2028}para\u{2029}",
                Some("line\\u{2028}para\\u{2029}"),
            ),
            (
                "\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}",
                Some("\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}"),
            ),
            (
                "admin\u{2066}\u{2067}\u{2068}\u{2069}",
                Some("admin\\u{2066}\\u{2067}\\u{2068}\\u{2069}"),
            ),
            ("\u{2065}\u{206a}\u{2027}\u{202f}", None),
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
        let (logger, syslog) = paired_logger(StderrFormat::Journal);
        let id = "work\n<3>forged";
        log(
            &logger,
            log::Level::Info,
            format_args!("isolated connection {id}"),
        );
        assert_eq!(
            recv(&syslog),
            from_us("isolated connection work\\n<3>forged").map(|l| format!("<30>{l}"))
        );
    }

    /// A syslog that restarted listens on a new socket at the same path: the next message goes
    /// there, and none is lost. With nothing there, stderr takes over.
    #[test]
    fn a_restarted_syslog_is_connected_to_again() {
        let dir = std::env::temp_dir().join(format!("nm-vpn-netns-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("log");
        let first = listen(&path);
        let logger = syslog_logger(connect_syslog(&path).unwrap(), &path, StderrFormat::Plain);
        log(&logger, log::Level::Warn, format_args!("before"));
        assert_eq!(recv(&first), from_us("before").map(|l| format!("<28>{l}")));

        drop(first);
        std::fs::remove_file(&path).unwrap();
        let second = listen(&path);
        log(&logger, log::Level::Warn, format_args!("after the restart"));
        assert_eq!(
            recv(&second),
            from_us("after the restart").map(|l| format!("<28>{l}"))
        );

        drop(second);
        std::fs::remove_file(&path).unwrap();
        log(
            &logger,
            log::Level::Warn,
            format_args!("syslog is gone: this line is on stderr"),
        );
        let sink = logger.sink.lock().unwrap();
        assert!(
            matches!(*sink, Sink::Stderr),
            "syslog is gone, yet it is still the sink"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A message syslog cannot take now (its queue is full) goes to stderr; syslog is still the
    /// sink for the next.
    #[test]
    fn a_message_syslog_refuses_does_not_end_syslog() {
        let (logger, syslog) = paired_logger(StderrFormat::Plain);
        if let Sink::Syslog { socket, .. } = &*logger.sink.lock().unwrap() {
            socket.set_nonblocking(true).unwrap();
            while socket.send(b"filler").is_ok() {}
        }
        log(
            &logger,
            log::Level::Warn,
            format_args!("syslog's queue is full: this line is on stderr"),
        );
        while recv(&syslog).is_some() {}
        log(&logger, log::Level::Warn, format_args!("next"));
        assert_eq!(recv(&syslog), from_us("next").map(|l| format!("<28>{l}")));
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
