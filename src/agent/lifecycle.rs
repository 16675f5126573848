//! The agent's life on the bus: it takes back the leases of its records when it starts, follows
//! the callers that leave the bus, and exits after its last release once its binary was replaced.
//!
//! An agent may stop with leases held (a crash, an OOM kill, `systemctl restart`): the VPNs and
//! their namespaces live on, and so do their holders, the plugin processes, on a bus that keeps
//! their unique names. The next agent finds the leases in its records and asks the bus which
//! holders are still there. Only the decisions are here as pure functions ([`fate`],
//! [`replaced`]); the agent ([`Agent`]) carries them out.

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use log::{info, warn};
use zbus::names::BusName;
use zbus::{fdo, Connection};

use crate::agent::Agent;
use crate::contract::{BUS_NAME, OBJECT_PATH};

/// The running executable, which stays the same file after its path was given another.
const SELF_EXE: &str = "/proc/self/exe";
/// How long an exiting agent waits for the replies still on their way out (the last Release's).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a starting agent does with a lease that its records hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Its holder is still on the bus: the lease is taken back, so that the holder's Release and
    /// Reapply work, and its leaving the bus releases it.
    Adopt,
    /// Its holder left the bus while no agent watched: released, as it would have been then.
    HolderGone,
    /// It was leased over a peer-to-peer connection, which ended with the agent that served it.
    PeerToPeer,
}

/// The fate of a lease held by `owner`, given the unique names that have an owner on the bus now.
pub fn fate(owner: &str, live: &HashSet<String>) -> Fate {
    if owner.is_empty() {
        Fate::PeerToPeer
    } else if live.contains(owner) {
        Fate::Adopt
    } else {
        Fate::HolderGone
    }
}

/// Whether `caller`, a unique name on the bus of `conn`, still has an owner there. A caller on a
/// peer-to-peer connection (no name) is there as long as the connection that carries its call.
pub async fn on_the_bus(conn: &Connection, caller: &str) -> zbus::Result<bool> {
    if caller.is_empty() || conn.unique_name().is_none() {
        return Ok(true);
    }
    let name = BusName::try_from(caller)?;
    Ok(fdo::DBusProxy::new(conn)
        .await?
        .name_has_owner(name)
        .await?)
}

/// A file's identity: it stays with the file, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Whether the executable was replaced: the file `now` at its path is not the one it `started`
/// from. A package manager (and `make install`) writes a new file and renames it over the old
/// one, whose inode lives on while it runs (`/proc/self/exe` then reads "… (deleted)"). A binary
/// that is gone counts too: its package was removed, so there is no point in staying. A path
/// that cannot be checked for another reason does not count, and the agent runs on as before.
pub fn replaced(started: FileId, now: io::Result<FileId>) -> bool {
    match now {
        Ok(now) => now != started,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// The agent's executable: the path it was started from and the file that was there.
#[derive(Debug, Clone)]
pub struct Exe {
    pub path: PathBuf,
    pub started: FileId,
}

impl Exe {
    /// This process's executable.
    pub fn current() -> io::Result<Exe> {
        let started = FileId::of(&fs::metadata(SELF_EXE)?);
        Ok(Exe {
            path: fs::read_link(SELF_EXE)?,
            started,
        })
    }

    /// Whether the file at the path is no longer the one the agent started from.
    pub fn replaced(&self) -> bool {
        replaced(
            self.started,
            fs::metadata(&self.path).map(|m| FileId::of(&m)),
        )
    }
}

/// Serves `agent` on `conn`, a bus connection: takes back its leases, serves the contract under
/// its well-known name, releases the leases of callers that leave the bus, and returns when the
/// agent is to exit because `exe` was replaced (see [`Agent::exit_when_replaced`]).
pub async fn run(conn: Connection, mut agent: Agent, exe: Option<Exe>) -> zbus::Result<()> {
    let dbus = fdo::DBusProxy::new(&conn).await?;
    // Subscribed before the holders are asked for: one that leaves right after its answer is
    // still seen below, and released then.
    let mut changes = dbus.receive_name_owner_changed().await?;
    let mut live = HashSet::new();
    for holder in agent.holders_at_start() {
        // A name the bus would refuse to look up has no owner.
        let Ok(name) = BusName::try_from(holder.as_str()) else {
            continue;
        };
        if dbus.name_has_owner(name).await? {
            live.insert(holder);
        }
    }
    agent.adopt(&live).await;
    let exit = exe.map(|exe| agent.exit_when_replaced(exe));
    // The object is served only now and the name owned last, so every call finds the leases
    // decided. A call that started the agent is held by the bus until the name has its owner.
    conn.object_server().at(OBJECT_PATH, agent).await?;
    conn.request_name(BUS_NAME).await?;
    info!("serving {BUS_NAME} at {OBJECT_PATH}");
    let agent = conn
        .object_server()
        .interface::<_, Agent>(OBJECT_PATH)
        .await?;
    agent.get().await.watches.start_adopted(&conn);
    let exiting = async {
        match &exit {
            Some(exit) => exit.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exiting);
    loop {
        tokio::select! {
            signal = changes.next() => {
                let Some(signal) = signal else { return Ok(()) };
                let Ok(args) = signal.args() else { continue };
                if args.new_owner().is_none() && args.name().starts_with(':') {
                    // On a task of its own: each release may wait for its tun to go.
                    let (agent, owner) = (agent.clone(), args.name().to_string());
                    tokio::spawn(async move { agent.get().await.release_owner(&owner).await });
                }
            }
            () = &mut exiting => break,
        }
    }
    // Calls from now on wait for the new agent that the bus starts for them.
    if let Err(e) = conn.release_name(BUS_NAME).await {
        warn!("could not give up {BUS_NAME}: {e}");
    }
    drop((changes, dbus, agent));
    // The reply to the last Release may still be on its way out.
    if tokio::time::timeout(SHUTDOWN_GRACE, conn.graceful_shutdown())
        .await
        .is_err()
    {
        warn!("calls were still running after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_holders_are_adopted_and_the_others_released() {
        let live: HashSet<String> = [":1.42".to_owned()].into();
        assert_eq!(fate(":1.42", &live), Fate::Adopt);
        assert_eq!(fate(":1.43", &live), Fate::HolderGone);
        assert_eq!(fate("", &live), Fate::PeerToPeer);
        assert_eq!(fate("", &["".to_owned()].into()), Fate::PeerToPeer);
        assert_eq!(fate(":1.42", &HashSet::new()), Fate::HolderGone);
    }

    #[test]
    fn a_new_file_at_the_path_is_a_replacement() {
        let started = FileId { dev: 2049, ino: 77 };
        let err = |kind: io::ErrorKind| Err(io::Error::from(kind));
        assert!(!replaced(started, Ok(started)));
        assert!(replaced(started, Ok(FileId { dev: 2049, ino: 78 })));
        assert!(replaced(started, Ok(FileId { dev: 2050, ino: 77 })));
        assert!(replaced(started, err(io::ErrorKind::NotFound)));
        assert!(!replaced(started, err(io::ErrorKind::PermissionDenied)));
    }

    #[test]
    fn this_executable_is_not_replaced() {
        let exe = Exe::current().unwrap();
        assert!(exe.path.is_absolute(), "{exe:?}");
        assert!(!exe.replaced(), "{exe:?}");
    }
}
