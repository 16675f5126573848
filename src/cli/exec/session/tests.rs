use super::*;

fn os(s: &str) -> OsString {
    s.into()
}

#[test]
fn only_session_variables_pass() {
    let env = session_env(
        [
            ("WAYLAND_DISPLAY", "wayland-0"),
            ("LC_ALL", "C.UTF-8"),
            ("LC_", "x"),
            ("lc_all", "x"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("GCONV_PATH", "/tmp"),
            ("HOME", "/home/alice"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(k, v)| (os(k), os(v))),
    );
    let names: Vec<&OsString> = env.keys().collect();
    assert_eq!(names, [&os("LC_ALL"), &os("PATH"), &os("WAYLAND_DISPLAY")]);
}

#[test]
fn every_listed_variable_passes() {
    for name in SESSION_VARS.iter().chain(&["LC_MESSAGES", "LC_CTYPE"]) {
        assert!(is_session_var(OsStr::new(name)), "{name}");
    }
}

fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| os(v))
}

#[test]
fn a_user_goes_through_pkexec() {
    let route = route(1000, env_of(&[("SUDO_UID", "0"), ("PKEXEC_UID", "0")])).unwrap();
    assert_eq!(route, Route::Pkexec);
}

#[test]
fn root_runs_as_whoever_sudo_or_pkexec_names() {
    let cases: [(&[(&str, &str)], Caller); 4] = [
        (&[], Caller::Root),
        (&[("SUDO_UID", "1001")], Caller::Sudo(1001)),
        (&[("PKEXEC_UID", "1002")], Caller::Pkexec(1002)),
        // A PKEXEC_UID that a sudoers rule let the caller pass never outranks sudo's own.
        (
            &[("PKEXEC_UID", "0"), ("SUDO_UID", "1001")],
            Caller::Sudo(1001),
        ),
    ];
    for (vars, expected) in cases {
        assert_eq!(
            route(0, env_of(vars)).unwrap(),
            Route::Privileged(expected),
            "{vars:?}"
        );
    }
    assert_eq!(Caller::Root.uid(), 0);
    assert_eq!(Caller::Sudo(7).uid(), 7);
}

#[test]
fn a_bad_uid_is_refused() {
    let e = route(0, env_of(&[("SUDO_UID", "alice")])).unwrap_err();
    assert_eq!(e.to_string(), "SUDO_UID=\"alice\" is not a user id");
}

#[test]
fn assignments_are_filtered_again() {
    let env = parse_assignments(&[os("LANG=C.UTF-8"), os("DISPLAY=:0=1"), os("TERM=")]).unwrap();
    assert_eq!(env.get(&os("LANG")), Some(&os("C.UTF-8")));
    assert_eq!(env.get(&os("DISPLAY")), Some(&os(":0=1")));
    assert_eq!(env.get(&os("TERM")), Some(&os("")));

    let e = parse_assignments(&[os("LD_PRELOAD=/tmp/x.so")]).unwrap_err();
    assert!(
        matches!(e, SessionError::NotSessionVar(ref n) if n == "LD_PRELOAD"),
        "{e:?}"
    );
    for bad in ["=x", "LANG"] {
        let e = parse_assignments(&[os(bad)]).unwrap_err();
        assert!(matches!(e, SessionError::BadAssignment(_)), "{bad}: {e:?}");
    }
}

#[test]
fn pkexec_gets_the_session_explicitly() {
    let env = BTreeMap::from([(os("LANG"), os("C")), (os("DISPLAY"), os(":0"))]);
    let command = [os("firefox"), os("--new-window")];
    let args = pkexec_args(&Reinvocation {
        program: Path::new("/usr/bin/nm-vpn-netns"),
        env: &env,
        cwd: Some(Path::new("/home/alice")),
        target: Some("work"),
        command: &command,
    });
    let expected = [
        "/usr/bin/nm-vpn-netns",
        "exec",
        "--session-env",
        "DISPLAY=:0",
        "--session-env",
        "LANG=C",
        "--session-cwd",
        "/home/alice",
        "work",
        "--",
        "firefox",
        "--new-window",
    ];
    assert_eq!(args, expected.map(os));
}

#[test]
fn without_target_the_command_follows_the_separator() {
    let env = BTreeMap::new();
    let command = [os("--weird-name")];
    let args = pkexec_args(&Reinvocation {
        program: Path::new("/usr/bin/nm-vpn-netns"),
        env: &env,
        cwd: None,
        target: None,
        command: &command,
    });
    assert_eq!(
        args,
        ["/usr/bin/nm-vpn-netns", "exec", "--", "--weird-name"].map(os)
    );
}

#[test]
fn the_command_gets_the_users_own_home_and_names() {
    let user = User {
        name: "alice".into(),
        passwd: Default::default(),
        uid: nix::unistd::Uid::from_raw(1000),
        gid: nix::unistd::Gid::from_raw(1000),
        gecos: Default::default(),
        dir: "/home/alice".into(),
        shell: "/bin/bash".into(),
    };
    let session = BTreeMap::from([(os("LANG"), os("C.UTF-8")), (os("HOME"), os("/root"))]);
    let env = command_env(&session, &user);
    let expected = [
        ("HOME", "/home/alice"),
        ("LANG", "C.UTF-8"),
        ("LOGNAME", "alice"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("SHELL", "/bin/bash"),
        ("USER", "alice"),
    ];
    assert_eq!(env, BTreeMap::from(expected.map(|(k, v)| (os(k), os(v)))));
}
