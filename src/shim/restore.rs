//! Puts the `netns-*` keys that the shim read from the mirror in `user.data` back into the
//! profile's `vpn.data` ([`crate::plan::mirror`]), once NetworkManager has activated the VPN.
//!
//! The profile is written with `Settings.Connection.Update2` (`TO_DISK | NO_REAPPLY`): on disk,
//! and without touching the active connection. NM spawns the shim as root, and NM authorizes
//! root to modify any profile without asking polkit. The settings come from `GetSettings`, which
//! holds no secrets, and NM keeps a profile's secrets when an update carries none
//! (nm-settings-connection.c, `update_auth_cb`), so no secret passes through here. A failure is
//! logged and changes nothing else: the VPN stays up, and the mirror still isolates it next time.
//!
//! `GetSettings` then `Update2` is a read, an edit and a write, and NM has no version check on a
//! profile: an editor's save that lands between the two is overwritten. The window is two calls
//! right after activation; `enable` and `disable` have the same one.

use std::time::Duration;

use log::{error, info};
use zbus::proxy::CacheProperties;
use zbus::Connection;

use crate::nmbus::{
    self, active_state, ActiveConnectionProxy, NetworkManagerProxy, SettingsConnectionProxy,
    SettingsProxy,
};
use crate::plan::mirror;
use crate::report::chain;

use super::error::{bus_call_within, Peer, ShimError};
use super::CALL_TIMEOUT;

/// How long NM gets to report the VPN activated after our Config, and how often it is asked.
const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Restores the keys of the profile `uuid`, logging the outcome.
pub(super) async fn restore_keys(conn: Connection, uuid: String) {
    match restore(&conn, &uuid).await {
        Ok(true) => info!("put the netns-* keys back into vpn.data of connection {uuid}"),
        Ok(false) => info!("vpn.data of connection {uuid} has netns-* keys again; left as it is"),
        Err(e) => error!(
            "cannot put the netns-* keys back into vpn.data of connection {uuid} (the VPN stays \
             up, and the copy in user.data still isolates it): {}",
            chain(&e)
        ),
    }
}

async fn restore(conn: &Connection, uuid: &str) -> Result<bool, ShimError> {
    activated(conn, uuid).await?;
    let settings = SettingsProxy::new(conn).await?;
    let path = nm("GetConnectionByUuid", settings.get_connection_by_uuid(uuid)).await?;
    let profile = SettingsConnectionProxy::builder(conn)
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    let current = nm("GetSettings", profile.get_settings()).await?;
    let Some(restored) = mirror::restore(current).map_err(ShimError::Profile)? else {
        return Ok(false);
    };
    nm("Update2", nmbus::save_to_disk(&profile, &restored)).await?;
    Ok(true)
}

/// Waits until NM reports the active connection of profile `uuid` activated.
async fn activated(conn: &Connection, uuid: &str) -> Result<(), ShimError> {
    let nm_proxy = NetworkManagerProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    let poll = async {
        loop {
            for path in nm("ActiveConnections", nm_proxy.active_connections()).await? {
                let active = ActiveConnectionProxy::builder(conn)
                    .path(path)
                    .cache_properties(CacheProperties::No)
                    .build()
                    .await?;
                // An active connection may go away between the two reads.
                let state =
                    async { Ok::<_, zbus::Error>((active.uuid().await?, active.state().await?)) };
                if let Ok((u, active_state::ACTIVATED)) = state.await {
                    if u == uuid {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    tokio::time::timeout(ACTIVATION_TIMEOUT, poll)
        .await
        .map_err(|_| ShimError::NotActivated {
            uuid: uuid.to_owned(),
            timeout: ACTIVATION_TIMEOUT,
        })?
}

/// A call to NM, bounded as NM bounds its own calls.
async fn nm<T>(
    method: &'static str,
    call: impl std::future::Future<Output = zbus::Result<T>>,
) -> Result<T, ShimError> {
    bus_call_within(Peer::NetworkManager, method, CALL_TIMEOUT, call).await
}
