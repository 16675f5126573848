//! A fake of NetworkManager's settings and active connections on a private bus, as far as the
//! shim's restore of the `netns-*` keys calls them: one profile and one active connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zbus::{fdo, interface, Connection, OwnedObjectPath};

use super::VarDict;

pub type NmConnection = HashMap<String, VarDict>;

const NM_PATH: &str = "/org/freedesktop/NetworkManager";
const ACTIVE_PATH: &str = "/org/freedesktop/NetworkManager/ActiveConnection/1";
const SETTINGS_PATH: &str = "/org/freedesktop/NetworkManager/Settings";
const PROFILE_PATH: &str = "/org/freedesktop/NetworkManager/Settings/1";

/// What the fake holds and records; the test changes it as it goes.
#[derive(Debug, Default)]
pub struct NmState {
    pub uuid: String,
    /// The profile as `GetSettings` returns it.
    pub profile: NmConnection,
    /// `NMActiveConnectionState` of the active connection.
    pub state: u32,
    /// `Update2` fails when set.
    pub refuse_updates: bool,
    /// Each `Update2`: the settings and the flags.
    pub updates: Vec<(NmConnection, u32)>,
}

pub type SharedNm = Arc<Mutex<NmState>>;

struct Root;

#[interface(name = "org.freedesktop.NetworkManager")]
impl Root {
    #[zbus(property)]
    fn active_connections(&self) -> Vec<OwnedObjectPath> {
        vec![OwnedObjectPath::try_from(ACTIVE_PATH).unwrap()]
    }
}

struct Active(SharedNm);

#[interface(name = "org.freedesktop.NetworkManager.Connection.Active")]
impl Active {
    #[zbus(property)]
    fn uuid(&self) -> String {
        self.0.lock().unwrap().uuid.clone()
    }

    #[zbus(property)]
    fn state(&self) -> u32 {
        self.0.lock().unwrap().state
    }
}

struct Settings(SharedNm);

#[interface(name = "org.freedesktop.NetworkManager.Settings")]
impl Settings {
    fn get_connection_by_uuid(&self, uuid: String) -> fdo::Result<OwnedObjectPath> {
        match self.0.lock().unwrap().uuid == uuid {
            true => Ok(OwnedObjectPath::try_from(PROFILE_PATH).unwrap()),
            false => Err(fdo::Error::Failed(format!("no connection {uuid}"))),
        }
    }
}

struct Profile(SharedNm);

#[interface(name = "org.freedesktop.NetworkManager.Settings.Connection")]
impl Profile {
    fn get_settings(&self) -> NmConnection {
        self.0.lock().unwrap().profile.clone()
    }

    fn update2(&self, settings: NmConnection, flags: u32, _args: VarDict) -> fdo::Result<VarDict> {
        let mut nm = self.0.lock().unwrap();
        if nm.refuse_updates {
            return Err(fdo::Error::AccessDenied("the fake refuses".into()));
        }
        nm.updates.push((settings.clone(), flags));
        nm.profile = settings;
        Ok(VarDict::new())
    }
}

/// Serves the fake as `org.freedesktop.NetworkManager` on the bus at `address`.
pub async fn serve(address: &str, nm: SharedNm) -> Connection {
    zbus::connection::Builder::address(address)
        .serve_at(NM_PATH, Root)
        .serve_at(ACTIVE_PATH, Active(nm.clone()))
        .serve_at(SETTINGS_PATH, Settings(nm.clone()))
        .serve_at(PROFILE_PATH, Profile(nm))
        .name("org.freedesktop.NetworkManager")
        .build()
        .await
        .unwrap()
}
