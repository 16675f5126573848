//! Reading a GKeyFile the way GLib reads it: the stock plugin's `.name` file (the shim) and the
//! agent's policy file.
//!
//! NetworkManager reads `.name` files with `g_key_file_get_string()`, so `program=` must mean here
//! what it means there: no inline comments, `;` and `#` kept inside values, trailing blanks kept,
//! `\s \n \t \r \\` unescaped, any other escape an error, and a malformed line anywhere an error
//! for the whole file. rust-ini and configparser cut values at `;`/`#`, hence this reader.

use std::fmt;

/// Why a key file was refused; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFileError {
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for KeyFileError {}

/// One `key=value` line of a key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// 1-based.
    pub line: usize,
    pub group: &'a str,
    pub key: &'a str,
    raw: &'a str,
}

impl Entry<'_> {
    /// The value, unescaped. As in GLib, a bad escape is an error only in a value that is read.
    pub fn value(&self) -> Result<String, KeyFileError> {
        unescape(self.raw).map_err(|reason| KeyFileError {
            line: self.line,
            reason,
        })
    }
}

/// Every key of the file in order, or the first malformed line. A repeated key appears each
/// time; GLib counts the last one.
pub fn entries(text: &str) -> Result<Vec<Entry<'_>>, KeyFileError> {
    let mut current: Option<&str> = None;
    let mut found = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let error = |reason| KeyFileError {
            line: index + 1,
            reason,
        };
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = group_name(line) {
            if name.is_empty() || name.chars().any(|c| c == '[' || c == ']' || c.is_control()) {
                return Err(error("invalid group name"));
            }
            current = Some(name);
            continue;
        }
        let Some((k, value)) = line.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(error("not a key-value pair, group or comment"));
        };
        let Some(group) = current else {
            return Err(error("a key comes before the first group"));
        };
        let key = k.trim_end_matches(|c: char| c.is_ascii_whitespace());
        if !is_key_name(key) {
            return Err(error("invalid key name"));
        }
        found.push(Entry {
            line: index + 1,
            group,
            key,
            raw: value.trim_start_matches(|c: char| c.is_ascii_whitespace()),
        });
    }
    Ok(found)
}

/// The string value of `key` in `[group]`, or `None` if it is absent. A repeated key counts
/// the last time, and a repeated group continues the first, as in GLib.
pub fn get_string(text: &str, group: &str, key: &str) -> Result<Option<String>, KeyFileError> {
    entries(text)?
        .into_iter()
        .rfind(|e| e.group == group && e.key == key)
        .map(|e| e.value())
        .transpose()
}

/// `[name]` followed by nothing but blanks, as `g_key_file_line_is_group()` has it.
fn group_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let close = rest.find(']')?;
    rest[close + 1..]
        .trim_matches([' ', '\t'])
        .is_empty()
        .then_some(&rest[..close])
}

/// `g_key_file_is_key_name()`: no `=`, `[`, `]` except a trailing `[locale]`, and no blank before
/// it (the caller has trimmed the ends).
fn is_key_name(key: &str) -> bool {
    let (name, locale) = match key.find('[') {
        Some(open) => (&key[..open], Some(&key[open + 1..])),
        None => (key, None),
    };
    let locale_ok = locale.is_none_or(|l| {
        l.strip_suffix(']').is_some_and(|l| {
            l.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        })
    });
    !name.is_empty() && !name.contains(['=', ']']) && !name.ends_with(' ') && locale_ok
}

fn unescape(value: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('s') => ' ',
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('\\') => '\\',
            Some(_) => return Err("invalid escape sequence"),
            None => return Err("escape character at end of line"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = "VPN Connection";

    fn program(text: &str) -> Result<Option<String>, KeyFileError> {
        get_string(text, GROUP, "program")
    }

    /// Debian 12's nm-openvpn-service.name, byte for byte.
    const STOCK: &str = "[VPN Connection]\nname=openvpn\nservice=org.freedesktop.NetworkManager.openvpn\n\
        program=/usr/lib/NetworkManager/nm-openvpn-service\nsupports-multiple-connections=true\n\n\
        [libnm]\nplugin=libnm-vpn-plugin-openvpn.so\n\n[GNOME]\n\
        auth-dialog=/usr/lib/NetworkManager/nm-openvpn-auth-dialog\nproperties=libnm-openvpn-properties\n\
        supports-external-ui-mode=true\nsupports-hints=true\n";

    #[test]
    fn stock_file() {
        assert_eq!(
            program(STOCK).unwrap().as_deref(),
            Some("/usr/lib/NetworkManager/nm-openvpn-service")
        );
        assert_eq!(
            get_string(STOCK, "libnm", "plugin").unwrap().as_deref(),
            Some("libnm-vpn-plugin-openvpn.so")
        );
        assert_eq!(get_string(STOCK, "libnm", "program").unwrap(), None);
    }

    #[test]
    fn values_keep_what_ini_parsers_cut() {
        for (line, want) in [
            ("program=/opt/a;b", "/opt/a;b"),
            ("program=/opt/a #not a comment", "/opt/a #not a comment"),
            ("program = \t/opt/x  ", "/opt/x  "),
            (
                "program=/opt/with\\sspace\\\\and\\tTab",
                "/opt/with space\\and\tTab",
            ),
            ("program=", ""),
            ("program=a=b", "a=b"),
            ("program=/opt/ünï", "/opt/ünï"),
        ] {
            let text = format!("[{GROUP}]\n{line}\n");
            assert_eq!(program(&text).unwrap().as_deref(), Some(want), "{line:?}");
        }
    }

    #[test]
    fn glib_line_rules() {
        let text = "# top comment\r\n  [VPN Connection]  \r\n\tprogram=/first\r\n[GNOME]\n\
                    program=/other-group\n  # indented comment\n[VPN Connection]\nprogram=/last\n\
                    program[de]=/localized\n";
        assert_eq!(program(text).unwrap().as_deref(), Some("/last"));
        assert_eq!(
            get_string(text, GROUP, "program[de]").unwrap().as_deref(),
            Some("/localized")
        );
        assert_eq!(program("").unwrap(), None);
    }

    #[test]
    fn malformed_files_are_refused() {
        for (text, line, reason) in [
            ("program=/x\n", 1, "a key comes before the first group"),
            (
                "[VPN Connection]\njunk\n",
                2,
                "not a key-value pair, group or comment",
            ),
            (
                "[VPN Connection]\n=x\n",
                2,
                "not a key-value pair, group or comment",
            ),
            ("[]\n", 1, "invalid group name"),
            (
                "[VPN Connection] x\n",
                1,
                "not a key-value pair, group or comment",
            ),
            ("[VPN Connection]\n prog ram[=x\n", 2, "invalid key name"),
            (
                "[VPN Connection]\nprogram=/x\\q\n",
                2,
                "invalid escape sequence",
            ),
            (
                "[VPN Connection]\nprogram=/x\\\n",
                2,
                "escape character at end of line",
            ),
        ] {
            assert_eq!(
                program(text),
                Err(KeyFileError { line, reason }),
                "{text:?}"
            );
        }
        // A bad line anywhere fails the file, as g_key_file_load_from_file() does.
        assert!(program("[VPN Connection]\nprogram=/x\n[GNOME]\nbroken\n").is_err());
        // Bad escapes only matter in the value that is read.
        assert_eq!(
            program("[VPN Connection]\nprogram=/x\nother=\\q\n")
                .unwrap()
                .as_deref(),
            Some("/x")
        );
    }
}
