//! Which stock service the shim stands in for. NetworkManager names the VPN service in the bus name
//! it passes; the stock program is `program=` of that service's registration, which installing
//! moved aside before writing ours (packaging/takeover.sh, `nm_vpn_netns_diverted`). The choice is
//! pure ([`program_for`]); reading the directory is the thin effect ([`stock_program`]).

use std::io;
use std::path::{Path, PathBuf};

use zbus::names::WellKnownName;

use super::keyfile;
use super::{ShimError, DIVERTED_SUFFIX, VPN_DIR};

/// The last element of the bus name NM gives a plugin that supports several connections:
/// `<service>.Connection_<N>`, N the active connection's number
/// (NM's src/core/vpn/nm-vpn-connection.c, `nm_vpn_connection_activate`).
const CONNECTION_PREFIX: &str = "Connection_";

/// The VPN service of the bus name NM passes: `<service>.Connection_N`, or the service itself,
/// which is what NM uses for a plugin without `supports-multiple-connections`.
pub fn service_of(bus_name: &str) -> &str {
    match bus_name.rsplit_once('.') {
        Some((service, last)) if last.starts_with(CONNECTION_PREFIX) => service,
        _ => bus_name,
    }
}

/// The stock service's name for ours: `<service>.Connection_N` -> `<service>.netns.Connection_N`.
/// The stock D-Bus policies (nm-openvpn-service.conf, nm-openconnect-service.conf) let root own
/// anything below the service name.
pub fn stock_bus_name(ours: &str) -> Result<String, ShimError> {
    if WellKnownName::try_from(ours).is_err() {
        return Err(ShimError::BusName(ours.to_owned()));
    }
    let service = service_of(ours);
    Ok(format!("{service}.netns{}", &ours[service.len()..]))
}

/// `program=` of the registration among `files` (path and contents) whose `service=` is
/// `service`. A file that cannot be parsed may be that registration: it is the error when no
/// other file matches.
pub fn program_for(service: &str, files: &[(PathBuf, String)]) -> Result<PathBuf, ShimError> {
    let mut unparsed = None;
    for (path, text) in files {
        let key = |key| {
            keyfile::get_string(text, "VPN Connection", key).map_err(|error| ShimError::KeyFile {
                path: path.clone(),
                error,
            })
        };
        match key("service") {
            Ok(Some(found)) if found == service => {
                return key("program")?
                    .filter(|program| !program.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| ShimError::NoProgram { path: path.clone() });
            }
            Ok(_) => {}
            Err(e) => {
                unparsed.get_or_insert(e);
            }
        }
    }
    Err(unparsed.unwrap_or_else(|| ShimError::NotTakenOver {
        service: service.to_owned(),
        looked_in: Path::new(VPN_DIR).join(format!("*{DIVERTED_SUFFIX}")),
    }))
}

/// The stock program of `service`, from the registrations moved aside in `dir`, in file name
/// order.
pub fn stock_program(dir: &Path, service: &str) -> Result<PathBuf, ShimError> {
    let files = read_files(dir, DIVERTED_SUFFIX)
        .map_err(|(path, error)| ShimError::NameFile { path, error })?;
    program_for(service, &files)
}

/// The path and contents of every file in `dir` whose name ends with `suffix`, in file name
/// order, as NetworkManager reads its `.name` files within a directory; none if `dir` is missing.
/// The error names the directory or file that could not be read.
pub fn read_files(
    dir: &Path,
    suffix: &str,
) -> Result<Vec<(PathBuf, String)>, (PathBuf, io::Error)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err((dir.to_owned(), e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_str().is_some_and(|p| p.ends_with(suffix)))
        .collect();
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            // Removed since the listing, as by an upgrade of the stock plugin.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((path, e)),
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::chain;

    const OPENVPN: &str = "org.freedesktop.NetworkManager.openvpn";
    const OPENCONNECT: &str = "org.freedesktop.NetworkManager.openconnect";

    /// As Debian bookworm's network-manager-openconnect ships it.
    const OPENCONNECT_NAME: &str = "[VPN Connection]\nname=openconnect\n\
        service=org.freedesktop.NetworkManager.openconnect\n\
        program=/usr/lib/NetworkManager/nm-openconnect-service\n\
        supports-multiple-connections=true\n\n[libnm]\nplugin=libnm-vpn-plugin-openconnect.so\n";

    fn registration(service: &str, program: &str) -> String {
        format!("[VPN Connection]\nservice={service}\nprogram={program}\n")
    }

    #[test]
    fn services_of_bus_names() {
        for (bus_name, service) in [
            (
                "org.freedesktop.NetworkManager.openvpn.Connection_3",
                OPENVPN,
            ),
            (
                "org.freedesktop.NetworkManager.openconnect.Connection_12",
                OPENCONNECT,
            ),
            (OPENCONNECT, OPENCONNECT),
            ("org.example.Connections", "org.example.Connections"),
        ] {
            assert_eq!(service_of(bus_name), service, "{bus_name}");
        }
    }

    #[test]
    fn stock_names() {
        assert_eq!(
            stock_bus_name("org.freedesktop.NetworkManager.openvpn.Connection_3").unwrap(),
            "org.freedesktop.NetworkManager.openvpn.netns.Connection_3"
        );
        assert_eq!(
            stock_bus_name("org.freedesktop.NetworkManager.openconnect.Connection_1").unwrap(),
            "org.freedesktop.NetworkManager.openconnect.netns.Connection_1"
        );
        assert_eq!(
            stock_bus_name(OPENVPN).unwrap(),
            "org.freedesktop.NetworkManager.openvpn.netns"
        );
        for bad in ["", "openvpn", ":1.42", "org.example..vpn"] {
            assert!(
                matches!(stock_bus_name(bad), Err(ShimError::BusName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_registration_of_the_service_names_the_program() {
        let files = [
            (
                PathBuf::from("/v/nm-openconnect-service.name.distrib"),
                OPENCONNECT_NAME.to_owned(),
            ),
            (
                PathBuf::from("/v/nm-openvpn-service.name.distrib"),
                registration(OPENVPN, "/opt/nm openvpn/service;v2"),
            ),
        ];
        assert_eq!(
            program_for(OPENCONNECT, &files).unwrap(),
            PathBuf::from("/usr/lib/NetworkManager/nm-openconnect-service")
        );
        assert_eq!(
            program_for(OPENVPN, &files).unwrap(),
            PathBuf::from("/opt/nm openvpn/service;v2")
        );
    }

    #[test]
    fn a_service_not_taken_over_is_refused() {
        let files = [(
            PathBuf::from("/v/nm-openvpn-service.name.distrib"),
            registration(OPENVPN, "/x"),
        )];
        for files in [&files[..], &[]] {
            let e = program_for("org.freedesktop.NetworkManager.vpnc", files).unwrap_err();
            assert_eq!(
                chain(&e),
                "org.freedesktop.NetworkManager.vpnc was not taken over by nm-vpn-netns: \
                 no /usr/lib/NetworkManager/VPN/*.name.distrib has its service="
            );
        }
    }

    #[test]
    fn a_broken_registration_is_named() {
        let path = PathBuf::from("/v/nm-openvpn-service.name.distrib");
        let no_program = [(path.clone(), "[VPN Connection]\nservice=s.x\n".to_owned())];
        assert!(matches!(
            program_for("s.x", &no_program),
            Err(ShimError::NoProgram { .. })
        ));
        let empty = [(path.clone(), registration("s.x", ""))];
        assert!(matches!(
            program_for("s.x", &empty),
            Err(ShimError::NoProgram { .. })
        ));
        // It may be the one looked for; a later file that matches wins over it.
        let mut files = vec![(path.clone(), "program=/x\n".to_owned())];
        assert_eq!(
            chain(&program_for("s.x", &files).unwrap_err()),
            format!(
                "{}: line 1: a key comes before the first group",
                path.display()
            )
        );
        files.push((
            PathBuf::from("/v/z.name.distrib"),
            registration("s.x", "/y"),
        ));
        assert_eq!(program_for("s.x", &files).unwrap(), PathBuf::from("/y"));
    }

    #[test]
    fn only_diverted_registrations_are_read() {
        let dir =
            std::env::temp_dir().join(format!("nm-vpn-netns-registration-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        // Ours, at the stock path, names the shim: never the stock program.
        write("nm-openvpn-service.name", &registration(OPENVPN, "/shim"));
        write("nm-openconnect-service.name.distrib", OPENCONNECT_NAME);
        assert!(matches!(
            stock_program(&dir, OPENVPN),
            Err(ShimError::NotTakenOver { .. })
        ));
        write(
            "nm-openvpn-service.name.distrib",
            &registration(OPENVPN, "/stock"),
        );
        assert_eq!(
            stock_program(&dir, OPENVPN).unwrap(),
            PathBuf::from("/stock")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            stock_program(&dir, OPENVPN),
            Err(ShimError::NotTakenOver { .. })
        ));
    }
}
