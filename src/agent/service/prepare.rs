//! `Prepare`: the lease and the namespace taken at Connect, so that `Isolate` finds them ready;
//! and the undoing of a preparation that no `Isolate` took over before the connect timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info};
use zbus::message::Header;
use zbus::Connection;

use super::{Agent, ExecutorHandle};
use crate::agent::leases::{Lease, Leases, Preparation};
use crate::agent::request::{self, decode_prepare};
use crate::contract::{AgentError, PrepareReply};
use crate::plan::settings::NetnsName;
use crate::plan::VarDict;

/// NetworkManager's bound on a VPN's connect when the profile sets no `vpn.timeout` and no
/// `vpn.timeout` default is configured: "a configured value or 60 seconds", as
/// `_get_vpn_timeout()` of NM's src/core/vpn/nm-vpn-connection.c says. NM fails the connect
/// then and stops the plugin, which releases; the agent's own deadline only covers a plugin that
/// neither isolates nor releases nor leaves the bus.
const NM_VPN_TIMEOUT: Duration = Duration::from_secs(60);

impl Agent {
    pub(super) async fn prepare_checked(
        &self,
        request: VarDict,
        hdr: &Header<'_>,
        conn: &Connection,
    ) -> Result<PrepareReply, AgentError> {
        let (asker, _) = self.asker(conn, hdr, "Prepare").await?;
        let arrived = asker.arrived;
        let (req, connect_timeout) =
            request::off_the_loop(move || decode_prepare(&request, asker)).await?;
        let connect_deadline =
            arrived + connect_timeout.map_or(NM_VPN_TIMEOUT, |s| Duration::from_secs(s.into()));
        let (ns, owner) = (req.netns.clone(), req.owner.clone());
        let preparation = Preparation::fresh();
        let lease = Lease::prepared(&req, preparation);
        self.leases.take(&ns, lease, req.deadline).await?;
        let prepared = self
            .queue(conn, &ns, &owner, |executor| executor.prepare(req))
            .await;
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                self.leases.drop_prepared(&ns, preparation).await;
                return Err(e);
            }
        };
        let preparation = Preparation {
            created: prepared.created,
            ..preparation
        };
        // An `Isolate` that already took the lease over keeps it.
        if self.leases.prepared(&ns, preparation).await.is_some() {
            let (leases, executor) = (self.leases.clone(), self.executor.clone());
            tokio::spawn(unprepare_at(
                connect_deadline,
                ns.clone(),
                preparation,
                leases,
                executor,
            ));
        }
        Ok(PrepareReply {
            netns: ns.to_string(),
            created: prepared.created,
            elapsed_us: prepared.elapsed.as_micros() as u64,
        })
    }
}

/// Undoes `preparation` of `ns` at `deadline` if no `Isolate` took it over and it was not
/// released by then.
async fn unprepare_at(
    deadline: Instant,
    ns: NetnsName,
    preparation: Preparation,
    leases: Arc<Leases>,
    executor: ExecutorHandle,
) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
    let Some(lease) = leases.lock().await.start_unprepare(&ns, preparation) else {
        return;
    };
    info!(
        "namespace {ns} was prepared for {} but no Isolate came before the connect timeout; \
         undoing it",
        lease.owner
    );
    if let Err(e) = executor.release(ns.clone(), true).await {
        error!("undoing the preparation of {ns}: {e}");
    }
    leases.released(&ns).await;
}
