//! The generated man pages and completions, as `nm-vpn-netns generate-docs` writes them, and the
//! README's table of keys, against the key table of `plan::settings`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nm_vpn_netns::agent::policy::USER_NAME_RULE;
use nm_vpn_netns::plan::settings::{Key, NAME_RULE};

const FILES: [&str; 14] = [
    "man/nm-vpn-netns.8",
    "man/nm-vpn-netns-exec.8",
    "man/nm-vpn-netns-status.8",
    "man/nm-vpn-netns-doctor.8",
    "man/nm-vpn-netns-enable.8",
    "man/nm-vpn-netns-disable.8",
    "man/nm-vpn-netns-list.8",
    "man/nm-vpn-netns-delete.8",
    "man/nm-vpn-netns-agent.8",
    "man/nm-vpn-netns-service.8",
    "man/nm-vpn-netns.5",
    "completions/nm-vpn-netns.bash",
    "completions/_nm-vpn-netns",
    "completions/nm-vpn-netns.fish",
];

/// Runs `generate-docs` into a fresh directory of its own for each `test`, and checks that it
/// wrote exactly [`FILES`].
fn generate(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(Command::new(env!("CARGO_BIN_EXE_nm-vpn-netns"))
        .arg("generate-docs")
        .arg(&dir)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    let written: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = FILES
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    assert_eq!(written, expected, "files written");
    for f in &expected {
        assert!(Path::new(f).is_file(), "{f} is missing");
    }
    dir
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// groff renders every page without a single warning (`-ww`), and the keys page shows every key.
#[test]
fn man_pages_render_cleanly() {
    let dir = generate("man_pages_render_cleanly");
    if !installed("groff") {
        eprintln!("groff is not installed (groff-base); the pages were not rendered");
        return;
    }
    for page in FILES.iter().filter(|f| f.starts_with("man/")) {
        // Plain ASCII, without bold or underlining, and no hyphenation to split a key's name.
        let out = run(Command::new("groff")
            .args(["-man", "-Tascii", "-P-cbou", "-ww", "-rLL=100n", "-rHY=0"])
            .arg(dir.join(page)));
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            warnings.is_empty(),
            "{page}: expected no warnings, got:\n{warnings}"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("SEE ALSO"), "{page} has no SEE ALSO:\n{text}");
        if *page == "man/nm-vpn-netns.5" {
            for key in Key::ALL {
                assert!(
                    text.contains(key.as_str()),
                    "{page} does not show {key}:\n{text}"
                );
            }
        }
    }
}

/// Each shell at hand parses its completion file.
#[test]
fn completions_parse() {
    let dir = generate("completions_parse").join("completions");
    for (shell, file, check) in [
        ("bash", "nm-vpn-netns.bash", "-n"),
        ("zsh", "_nm-vpn-netns", "-n"),
        ("fish", "nm-vpn-netns.fish", "--no-execute"),
    ] {
        if installed(shell) {
            run(Command::new(shell).arg(check).arg(dir.join(file)));
        } else {
            eprintln!("{shell} is not installed; {file} was not parsed");
        }
    }
}

/// The README's table of keys is the key table, row for row, and states the name rules.
#[test]
fn readme_lists_every_key() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    for spec in Key::ALL.map(Key::spec) {
        let row = format!(
            "| `{}` | {} | `{}` | {} |",
            spec.name, spec.values, spec.default, spec.meaning
        );
        assert!(
            readme.lines().any(|l| l == row),
            "README.md: expected the row\n{row}\nin its table of keys; got:\n{}",
            readme
                .lines()
                .filter(|l| l.contains(spec.name) && l.starts_with('|'))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        readme.contains(NAME_RULE),
        "README.md: expected {NAME_RULE:?}"
    );
    // Wrapped as the README wraps its paragraphs.
    assert!(
        readme.replace('\n', " ").contains(USER_NAME_RULE),
        "README.md: expected {USER_NAME_RULE:?}"
    );
}
