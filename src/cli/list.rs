//! `nm-vpn-netns list` and `delete`: the namespaces the agent keeps, and the removal of one, both
//! through the agent's root-only `List` and `Delete` (see [`crate::contract`]), so that its records
//! stay true. What to print is decided apart from the calls, in [`Row`] and the `render_*`
//! functions.

use std::process::ExitCode;

use serde_json::{json, Value};
use zbus::Connection;

use crate::contract::{process_list, Agent1Proxy, AgentError, DeleteReport, NetnsEntry};
use crate::nmbus::{SettingsConnectionProxy, SettingsProxy};
use crate::plan::settings::ConnectionInfo;

const LIST_ABOUT: &str = "List the namespaces nm-vpn-netns keeps: connected, persistent, left over";

const LIST_LONG_ABOUT: &str = "\
List every network namespace nm-vpn-netns's agent keeps a record of: those of connected VPNs,
those kept by netns-persistent=yes after their VPN went down, and those a failed teardown left.
For each it shows the connection that isolated a VPN there last (its id then, and its uuid),
and whether that profile still exists in NetworkManager, so that a namespace whose profile was
renamed or deleted stands out; nm-vpn-netns delete removes such a namespace.

STATE is connected while a VPN runs in the namespace, persistent for one kept after its VPN
went down, and left for one that is neither, which a teardown that failed left behind.
CREATED says whether nm-vpn-netns created the namespace (delete then removes it) or was
given one that someone else made (delete then only puts back its DNS files).

Needs root: the agent answers only root.

EXIT STATUS
  0  the list was printed (it may be empty)
  1  it was not: not root, the agent missing, or another error; stderr says which";

const DELETE_ABOUT: &str = "Delete a namespace nm-vpn-netns keeps, such as a persistent one";

const DELETE_LONG_ABOUT: &str = "\
Delete a network namespace that nm-vpn-netns's agent keeps, as the VPN's disconnect would if
the namespace were not persistent: the namespace itself if nm-vpn-netns created it, the files
it wrote under /etc/netns/NAME (the files they replaced are put back), and its record. Use it for
a namespace kept by netns-persistent=yes that is no longer wanted, or one whose profile was
renamed or deleted; nm-vpn-netns list shows them.

It refuses while a VPN is connected in the namespace (take the VPN down first), and while
processes run in it: it names them (PID and command). With --force it ends them first, with
SIGTERM and, for those still running 2 seconds later, SIGKILL, then deletes the namespace.

Needs root: the agent answers only root.

EXIT STATUS
  0  the namespace was deleted
  1  it was not; stderr says why (see above for the refusals)";

/// `list [--json]`.
#[derive(Debug, clap::Args)]
#[command(about = LIST_ABOUT, long_about = LIST_LONG_ABOUT)]
pub struct ListArgs {
    /// Print a JSON array, one object per namespace, instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `delete NAME [--force]`.
#[derive(Debug, clap::Args)]
#[command(about = DELETE_ABOUT, long_about = DELETE_LONG_ABOUT)]
pub struct DeleteArgs {
    /// The namespace, as `nm-vpn-netns list` shows it.
    #[arg(value_name = "NAME")]
    pub netns: String,
    /// End the processes that run in the namespace (SIGTERM, then SIGKILL), then delete it.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{0} needs root: only root may ask nm-vpn-netns's agent; run it with sudo")]
    NotRoot(&'static str),
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot connect to the system bus")]
    Bus(#[source] zbus::Error),
    #[error(
        "the agent io.github.NmVpnNetns.Agent1 cannot be started: is nm-vpn-netns installed? \
         (nm-vpn-netns doctor checks the installation)"
    )]
    AgentMissing(#[source] AgentError),
    #[error(
        "the running agent is older than this command and has no {0}; it exits once its last \
         VPN goes down, and the next call starts the new one"
    )]
    AgentTooOld(&'static str),
    #[error("{0}; nm-vpn-netns list shows the namespaces it keeps")]
    UnknownNetns(String),
    /// The agent refused: its message says why.
    #[error("{0}")]
    Refused(String),
    #[error("the agent's {0} failed")]
    Agent(&'static str, #[source] AgentError),
}

/// What became of the profile that isolated a VPN in a namespace, by its uuid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// It exists under the id on record.
    Present,
    /// It exists under another id.
    Renamed(String),
    /// NetworkManager has no profile of that uuid.
    Deleted,
    /// NetworkManager could not be asked.
    Unknown,
}

/// One namespace as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub entry: NetnsEntry,
    pub profile: Profile,
}

/// `connected`, `persistent` or `left`: see the page.
pub fn state(entry: &NetnsEntry) -> &'static str {
    match (entry.connected, entry.persistent) {
        (true, _) => "connected",
        (false, true) => "persistent",
        (false, false) => "left",
    }
}

pub(crate) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn profile_text(row: &Row) -> String {
    match &row.profile {
        Profile::Present => row.entry.id.clone(),
        Profile::Renamed(now) => format!("{} (renamed {now})", row.entry.id),
        Profile::Deleted => format!("{} (deleted)", row.entry.id),
        Profile::Unknown => format!("{} (?)", row.entry.id),
    }
}

/// The table: a header and one line per namespace, in columns.
pub fn render_table(rows: &[Row]) -> String {
    if rows.is_empty() {
        return "nm-vpn-netns keeps no namespace\n".to_owned();
    }
    let header = [
        "NAMESPACE",
        "STATE",
        "CREATED",
        "USER",
        "CONNECTION",
        "UUID",
    ];
    let mut lines = vec![header.map(str::to_owned).to_vec()];
    for row in rows {
        let e = &row.entry;
        lines.push(vec![
            e.netns.clone(),
            state(e).to_owned(),
            yes_no(e.created).to_owned(),
            e.user.clone().unwrap_or_else(|| "-".to_owned()),
            profile_text(row),
            e.uuid.clone(),
        ]);
    }
    columns(&lines)
}

/// `lines` with each column as wide as its widest cell, two spaces apart.
pub(crate) fn columns(lines: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The JSON array of `list --json`.
pub fn render_json(rows: &[Row]) -> Value {
    let profile = |p: &Profile| match p {
        Profile::Present => json!("present"),
        Profile::Renamed(_) => json!("renamed"),
        Profile::Deleted => json!("deleted"),
        Profile::Unknown => Value::Null,
    };
    rows.iter()
        .map(
            |Row {
                 entry: e,
                 profile: p,
             }| {
                json!({
                    "netns": e.netns,
                    "uuid": e.uuid,
                    "id": e.id,
                    "user": e.user,
                    "state": state(e),
                    "persistent": e.persistent,
                    "created": e.created,
                    "connected": e.connected,
                    "link": e.link,
                    "profile": profile(p),
                    "profile_id": match p { Profile::Renamed(now) => Some(now), _ => None },
                })
            },
        )
        .collect()
}

/// What `delete` prints once the namespace is gone.
pub fn render_deleted(netns: &str, report: &DeleteReport) -> String {
    let mut out = format!("deleted namespace {netns}\n");
    if let Some(ended) = report.ended.as_deref().filter(|e| !e.is_empty()) {
        out.push_str(&format!("ended: {}\n", process_list(ended)));
    }
    if let Some(left) = report.stranded.as_deref().filter(|s| !s.is_empty()) {
        out.push_str(&format!(
            "still running, without network, after SIGKILL: {}\n",
            process_list(left)
        ));
    }
    out
}

/// What an error of the agent's `method` means to the command.
pub fn classify(method: &'static str, e: AgentError) -> ListError {
    match e {
        AgentError::UnknownNetns(m) => ListError::UnknownNetns(m),
        AgentError::InUse(m) | AgentError::InvalidArgs(m) => ListError::Refused(m),
        AgentError::AccessDenied(_) => ListError::NotRoot(method_command(method)),
        AgentError::ZBus(zbus::Error::MethodError(ref name, _, _)) => match name.as_str() {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.Spawn.ServiceNotFound"
            | "org.freedesktop.DBus.Error.Spawn.ExecFailed" => ListError::AgentMissing(e),
            "org.freedesktop.DBus.Error.AccessDenied" => ListError::NotRoot(method_command(method)),
            "org.freedesktop.DBus.Error.UnknownMethod" => ListError::AgentTooOld(method),
            _ => ListError::Agent(method, e),
        },
        e => ListError::Agent(method, e),
    }
}

fn method_command(method: &str) -> &'static str {
    match method {
        "Delete" => "nm-vpn-netns delete",
        _ => "nm-vpn-netns list",
    }
}

/// The agent on the system bus.
pub async fn agent(conn: &Connection) -> Result<Agent1Proxy<'static>, ListError> {
    Agent1Proxy::new(conn).await.map_err(ListError::Bus)
}

/// Every namespace the agent keeps ([`crate::contract::Agent1Proxy::list`]).
pub async fn entries(conn: &Connection) -> Result<Vec<NetnsEntry>, ListError> {
    agent(conn)
        .await?
        .list()
        .await
        .map_err(|e| classify("List", e))
}

/// The profile of `uuid` now, against `id`, the one on record.
async fn profile(settings: Option<&SettingsProxy<'_>>, uuid: &str, id: &str) -> Profile {
    let Some(settings) = settings else {
        return Profile::Unknown;
    };
    let path = match settings.get_connection_by_uuid(uuid).await {
        Ok(path) => path,
        // NM's Settings.InvalidConnection: no such profile (nm-settings.c).
        Err(zbus::Error::MethodError(name, _, _)) if name.ends_with(".InvalidConnection") => {
            return Profile::Deleted
        }
        Err(_) => return Profile::Unknown,
    };
    let now = async {
        let conn = SettingsConnectionProxy::builder(settings.inner().connection())
            .path(path)
            .build()
            .await?;
        let settings = conn.get_settings().await?;
        Ok::<_, zbus::Error>(ConnectionInfo::from_nm(&settings).ok().map(|info| info.id))
    };
    match now.await {
        Ok(Some(now)) if now == id => Profile::Present,
        Ok(Some(now)) => Profile::Renamed(now),
        _ => Profile::Unknown,
    }
}

fn require_root(what: &'static str) -> Result<(), ListError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(ListError::NotRoot(what))
    }
}

pub fn run_list(args: ListArgs) -> Result<ExitCode, ListError> {
    require_root("nm-vpn-netns list")?;
    let rows = super::block_on(async {
        let conn = Connection::system().await.map_err(ListError::Bus)?;
        let settings = SettingsProxy::new(&conn).await.ok();
        let mut rows = Vec::new();
        for entry in entries(&conn).await? {
            let profile = profile(settings.as_ref(), &entry.uuid, &entry.id).await;
            rows.push(Row { entry, profile });
        }
        Ok::<_, ListError>(rows)
    })
    .map_err(ListError::Runtime)??;
    if args.json {
        println!("{:#}", render_json(&rows));
    } else {
        print!("{}", render_table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_delete(args: DeleteArgs) -> Result<ExitCode, ListError> {
    require_root("nm-vpn-netns delete")?;
    let report = super::block_on(async {
        let conn = Connection::system().await.map_err(ListError::Bus)?;
        agent(&conn)
            .await?
            .delete(&args.netns, args.force)
            .await
            .map_err(|e| classify("Delete", e))
    })
    .map_err(ListError::Runtime)??;
    print!("{}", render_deleted(&args.netns, &report));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(netns: &str, connected: bool, persistent: bool) -> NetnsEntry {
        NetnsEntry {
            netns: netns.into(),
            uuid: "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b".into(),
            id: "work vpn".into(),
            user: None,
            persistent,
            created: true,
            connected,
            link: connected.then(|| "tun0".into()),
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            Row {
                entry: entry("work", true, false),
                profile: Profile::Present,
            },
            Row {
                entry: NetnsEntry {
                    user: Some("alice".into()),
                    created: false,
                    ..entry("u1000-lab", false, true)
                },
                profile: Profile::Renamed("lab".into()),
            },
            Row {
                entry: entry("old", false, false),
                profile: Profile::Deleted,
            },
        ]
    }

    #[test]
    fn the_table_has_a_column_for_each_field() {
        let want = "\
NAMESPACE  STATE       CREATED  USER   CONNECTION              UUID
work       connected   yes      -      work vpn                8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b
u1000-lab  persistent  no       alice  work vpn (renamed lab)  8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b
old        left        yes      -      work vpn (deleted)      8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b
";
        let got = render_table(&rows());
        assert_eq!(got, want, "expected:\n{want}got:\n{got}");
        assert_eq!(render_table(&[]), "nm-vpn-netns keeps no namespace\n");
    }

    #[test]
    fn the_json_has_every_field() {
        let got = render_json(&rows());
        assert_eq!(
            got[1],
            json!({
                "netns": "u1000-lab",
                "uuid": "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b",
                "id": "work vpn",
                "user": "alice",
                "state": "persistent",
                "persistent": true,
                "created": false,
                "connected": false,
                "link": null,
                "profile": "renamed",
                "profile_id": "lab",
            })
        );
        assert_eq!(got[0]["link"], "tun0");
        assert_eq!(got[2]["profile"], "deleted");
        assert_eq!(render_json(&[]), json!([]));
    }

    #[test]
    fn a_deletion_names_what_it_ended() {
        let report = DeleteReport {
            ended: Some(vec![(4242, "sleep".into())]),
            stranded: Some(Vec::new()),
        };
        assert_eq!(
            render_deleted("kept", &report),
            "deleted namespace kept\nended: 4242 (sleep)\n"
        );
        let report = DeleteReport {
            ended: Some(vec![(7, "d".into())]),
            stranded: Some(vec![(7, "d".into())]),
        };
        assert!(render_deleted("kept", &report)
            .ends_with("still running, without network, after SIGKILL: 7 (d)\n"));
        assert_eq!(
            render_deleted("kept", &DeleteReport::default()),
            "deleted namespace kept\n"
        );
    }

    #[test]
    fn agent_errors_become_the_commands() {
        let method_error = |name: &str| {
            AgentError::ZBus(zbus::Error::MethodError(
                name.try_into().unwrap(),
                Some("m".into()),
                zbus::message::Message::method_call("/", "M")
                    .build(&())
                    .unwrap(),
            ))
        };
        let cases = [
            (
                AgentError::UnknownNetns("nm-vpn-netns keeps no namespace named x".into()),
                "nm-vpn-netns keeps no namespace named x; nm-vpn-netns list shows the namespaces \
                 it keeps",
            ),
            (
                AgentError::InUse("processes still run in namespace x: 1 (a)".into()),
                "processes still run in namespace x: 1 (a)",
            ),
            (
                AgentError::AccessDenied("only root".into()),
                "nm-vpn-netns delete needs root: only root may ask nm-vpn-netns's agent; run it \
                 with sudo",
            ),
            (
                method_error("org.freedesktop.DBus.Error.AccessDenied"),
                "nm-vpn-netns delete needs root: only root may ask nm-vpn-netns's agent; run it \
                 with sudo",
            ),
            (
                method_error("org.freedesktop.DBus.Error.ServiceUnknown"),
                "the agent io.github.NmVpnNetns.Agent1 cannot be started: is nm-vpn-netns \
                 installed? (nm-vpn-netns doctor checks the installation)",
            ),
            (
                method_error("org.freedesktop.DBus.Error.UnknownMethod"),
                "the running agent is older than this command and has no Delete; it exits once \
                 its last VPN goes down, and the next call starts the new one",
            ),
        ];
        for (e, want) in cases {
            let got = classify("Delete", e).to_string();
            assert_eq!(got, want);
        }
        let other = classify("List", AgentError::Failed("disk full".into()));
        assert_eq!(
            crate::report::chain(&other),
            "the agent's List failed: io.github.NmVpnNetns.Agent1.Error.Failed: disk full"
        );
    }
}
