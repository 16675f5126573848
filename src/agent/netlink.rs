//! The rtnetlink client ([`Rtnl`]) and the setup of a link inside a namespace ([`Configure`]).
//!
//! A netlink socket talks to the namespace it was created in, so each one is opened on the thread
//! that is already inside the namespace it is meant for. The messages come from
//! [`crate::agent::rtmsg`], which decides what to send; this module only sends it.

use std::fmt;
use std::io;

use log::debug;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::agent::rtmsg::{self, FamilySetup};
use crate::agent::sys::{Link, NetnsSetup, SysError};

/// A minimal synchronous rtnetlink client: each request acknowledged, one at a time or a batch
/// at once.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in the calling thread's namespace; `object` names what it is for, in errors.
    pub fn open(object: &str) -> Result<Self, SysError> {
        let open = || -> io::Result<Self> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            socket.connect(&SocketAddr::new(0, 0))?;
            Ok(Rtnl { socket, seq: 0 })
        };
        open().map_err(|e| SysError::os("netlink socket", object, e))
    }

    /// Appends `msg` to `buf` as the next request, acknowledged.
    fn push(&mut self, buf: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16) {
        self.seq += 1;
        let mut packet = NetlinkMessage::from(msg);
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let start = buf.len();
        buf.resize(start + packet.buffer_len(), 0);
        packet.serialize(&mut buf[start..]);
    }

    /// Sends one request and returns what the kernel answered before its ACK or, for a dump,
    /// before NLMSG_DONE.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut buf = Vec::new();
        self.push(&mut buf, msg, flags);
        self.socket.send(&buf, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            for reply in rtmsg::messages(&data)? {
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) if !dump => return Ok(replies),
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Sends `requests` in one datagram, then collects their ACKs: each one's result, in order.
    ///
    /// The kernel handles the messages of a datagram one after the other, in the sender's
    /// `sendmsg`: `netlink_rcv_skb` (net/netlink/af_netlink.c) calls `rtnetlink_rcv_msg`
    /// (net/core/rtnetlink.c) on each in turn, and `netlink_ack` after each that asks for it or
    /// fails. So each request sees the effect of those before it, as if each had been awaited;
    /// one that fails does not stop those after it, which the caller's rollback undoes with the
    /// rest. One round trip instead of one per request.
    pub fn batch(
        &mut self,
        requests: Vec<(RouteNetlinkMessage, u16)>,
    ) -> io::Result<Vec<io::Result<()>>> {
        let mut acks = rtmsg::Acks::new(self.seq.wrapping_add(1), requests.len());
        let mut buf = Vec::new();
        for (msg, flags) in requests {
            self.push(&mut buf, msg, flags);
        }
        self.socket.send(&buf, 0)?;
        while !acks.complete() {
            let (data, _) = self.socket.recv_from_full()?;
            acks.read(&data)?;
        }
        Ok(acks.into_results())
    }

    /// Every link, address or route of one family, as `ip … show` lists them.
    pub fn dump(&mut self, query: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.request(query, NLM_F_DUMP)
    }

    /// The link with this index; `None` if there is none.
    pub fn link_get(&mut self, ifindex: u32) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(reply) => Ok(reply.into_iter().find_map(rtmsg::link_from)),
            Err(e) if e.raw_os_error() == Some(Errno::ENODEV as i32) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let msg = rtmsg::link_get_by_name(name);
        self.request(RouteNetlinkMessage::GetLink(msg), 0)?
            .into_iter()
            .find_map(rtmsg::link_from)
            .map(|l| l.ifindex)
            .ok_or_else(|| io::Error::from_raw_os_error(Errno::ENODEV as i32))
    }

    pub fn link_set(&mut self, msg: LinkMessage) -> io::Result<()> {
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }
}

/// Where the sysctl `key` is, in the namespace of the process that opens it.
pub(crate) fn sysctl_path(key: &str) -> std::path::PathBuf {
    std::path::Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// The work of [`crate::agent::sys::Sys::netns_setup`], on a thread inside the namespace.
pub struct Configure<'a> {
    nl: Rtnl,
    netns: &'a str,
    link: &'a str,
    index: u32,
    setup: &'a NetnsSetup<'a>,
}

impl Configure<'_> {
    pub fn run(netns: &str, setup: &NetnsSetup<'_>) -> Result<(), SysError> {
        let inside = format!("in namespace {netns}");
        let mut nl = Rtnl::open(&inside)?;
        let lo = nl
            .link_index("lo")
            .map_err(|e| SysError::os("link_set lo up", &inside, e))?;
        let index = nl
            .link_index(setup.link)
            .map_err(|e| SysError::os("link_get", format!("{} {inside}", setup.link), e))?;
        let mut c = Configure {
            nl,
            netns,
            link: setup.link,
            index,
            setup,
        };
        // Everything up to the first flush goes in one batch: the kernel applies a batch in
        // order (`Rtnl::batch`), so the link is up with its address before the routes through
        // it are added, as when each request was awaited.
        let mut batch = vec![Step {
            msg: RouteNetlinkMessage::SetLink(rtmsg::link_set(lo, Vec::new(), true)),
            flags: 0,
            op: "link_set lo up",
            object: inside.clone(),
            on_error: OnError::Fail,
        }];
        batch.extend(c.link_up(setup.mtu));
        let families = [
            (AddressFamily::Inet, setup.ipv4.map(FamilySetup::new)),
            (AddressFamily::Inet6, setup.ipv6.map(FamilySetup::new)),
        ];
        for (family, plan) in &families {
            if setup.reapply {
                // A flush reads what is there: what was asked before it must be done.
                c.send(std::mem::take(&mut batch))?;
                c.flush(*family, plan.as_ref())?;
            }
            if let Some(plan) = plan {
                batch.extend(c.apply(plan, setup.reapply));
            }
        }
        c.send(batch)?;
        if let Some(range) = setup.ping_group_range {
            let key = "net.ipv4.ping_group_range";
            std::fs::write(sysctl_path(key), range)
                .map_err(|e| SysError::os("sysctl_write", format!("{key} {inside}"), e))?;
            debug!("set {key} to {range:?} in namespace {netns}");
        }
        Ok(())
    }

    fn on(&self, what: impl fmt::Display) -> String {
        format!("{what} dev {} in namespace {}", self.link, self.netns)
    }

    /// Called before each deletion of a flush: the kernel answers each one quickly, so checking
    /// between them bounds the whole step by the deadline plus one message.
    fn in_time(&self, op: &str, what: impl fmt::Display) -> Result<(), SysError> {
        self.setup.check_deadline(
            std::time::Instant::now(),
            format_args!("{op} {}", self.on(what)),
        )
    }

    /// Sends `steps` as one batch, and fails with the first of them that failed, named as if it
    /// had been sent alone.
    fn send(&mut self, steps: Vec<Step>) -> Result<(), SysError> {
        let Some(first) = steps.first() else {
            return Ok(());
        };
        // The kernel answers a batch quickly: checking before each (and before each deletion of
        // a flush) bounds the whole step by the deadline plus one batch.
        let first = (first.op, first.object.clone());
        self.setup.check_deadline(
            std::time::Instant::now(),
            format_args!("{} {}", first.0, first.1),
        )?;
        let (requests, steps): (Vec<_>, Vec<_>) = steps
            .into_iter()
            .map(|s| ((s.msg, s.flags), (s.op, s.object, s.on_error)))
            .unzip();
        let results = self
            .nl
            .batch(requests)
            .map_err(|e| SysError::os(first.0, &first.1, e))?;
        for ((op, object, on_error), result) in steps.into_iter().zip(results) {
            match (result, on_error) {
                (Ok(()), _) => debug!("{op} {object}: done"),
                // No IPv6 on this device (IPv6 disabled, or an MTU below 1280): nothing to make.
                (Err(e), OnError::NoIpv6)
                    if e.raw_os_error() == Some(Errno::EAFNOSUPPORT as i32) => {}
                (Err(e), OnError::Route(family, dest, metric)) if rtmsg::already_exists(&e) => {
                    let routes = self
                        .route_dump(family)
                        .map_err(|e| SysError::os("route_list", &object, e))?;
                    if !rtmsg::route_on_link(&routes, family, dest, metric, self.index) {
                        return Err(SysError::os(op, &object, e));
                    }
                    debug!("{op} {object}: already there");
                }
                (Err(e), _) => return Err(SysError::os(op, &object, e)),
            }
        }
        Ok(())
    }

    fn link_up(&self, mtu: Option<u32>) -> [Step; 2] {
        let gen_mode = rtmsg::link_set(self.index, vec![rtmsg::addrgenmode_none()], false);
        let attrs = mtu
            .map(netlink_packet_route::link::LinkAttribute::Mtu)
            .into_iter()
            .collect();
        let up = rtmsg::link_set(self.index, attrs, true);
        [
            Step {
                msg: RouteNetlinkMessage::SetLink(gen_mode),
                flags: 0,
                op: "link_set",
                object: self.on("addrgenmode none"),
                on_error: OnError::NoIpv6,
            },
            Step {
                msg: RouteNetlinkMessage::SetLink(up),
                flags: 0,
                op: "link_set",
                object: self.on(format!("mtu {mtu:?} up")),
                on_error: OnError::Fail,
            },
        ]
    }

    /// Removes the link's addresses that the plan does not have, and the routes the agent added
    /// (proto static), so that a re-applied plan replaces the previous one.
    fn flush(&mut self, family: AddressFamily, plan: Option<&FamilySetup>) -> Result<(), SysError> {
        self.flush_addresses(family, plan)?;
        if plan.is_some_and(|p| p.preserve_routes) {
            return Ok(());
        }
        self.flush_routes(family)
    }

    fn flush_addresses(
        &mut self,
        family: AddressFamily,
        plan: Option<&FamilySetup>,
    ) -> Result<(), SysError> {
        let mut query = AddressMessage::default();
        query.header.family = family;
        let addresses = self
            .nl
            .dump(RouteNetlinkMessage::GetAddress(query))
            .map_err(|e| SysError::os("addr_list", self.on(""), e))?;
        let index = self.index;
        self.delete("addr_del", "address", addresses, |msg| match msg {
            RouteNetlinkMessage::NewAddress(msg) => rtmsg::stale_address(&msg, index, plan)
                .map(|what| (RouteNetlinkMessage::DelAddress(msg), what)),
            _ => None,
        })
    }

    fn flush_routes(&mut self, family: AddressFamily) -> Result<(), SysError> {
        let routes = self
            .route_dump(family)
            .map_err(|e| SysError::os("route_list", self.on(""), e))?;
        let index = self.index;
        self.delete("route_del", "route", routes, |msg| match msg {
            RouteNetlinkMessage::NewRoute(msg) => rtmsg::stale_route(&msg, index)
                .map(|what| (RouteNetlinkMessage::DelRoute(msg), what)),
            _ => None,
        })
    }

    /// Sends the deletion that `stale` makes of each message of a dump, if it makes one.
    fn delete(
        &mut self,
        op: &'static str,
        noun: &str,
        dump: Vec<RouteNetlinkMessage>,
        stale: impl Fn(RouteNetlinkMessage) -> Option<(RouteNetlinkMessage, String)>,
    ) -> Result<(), SysError> {
        for (del, what) in dump.into_iter().filter_map(stale) {
            self.in_time(op, &what)?;
            self.nl
                .request(del, 0)
                .map_err(|e| SysError::os(op, self.on(&what), e))?;
            debug!("deleted {noun} {}", self.on(&what));
        }
        Ok(())
    }

    fn route_dump(&mut self, family: AddressFamily) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        self.nl.dump(RouteNetlinkMessage::GetRoute(query))
    }

    /// The address, then the routes through it, of one family.
    fn apply(&self, plan: &FamilySetup, reapply: bool) -> Vec<Step> {
        let (msg, what) = rtmsg::address_add(self.index, plan);
        let mut steps = vec![Step {
            msg: RouteNetlinkMessage::NewAddress(msg),
            flags: NLM_F_CREATE | NLM_F_REPLACE,
            op: "addr_add",
            object: self.on(&what),
            on_error: OnError::Fail,
        }];
        if reapply && plan.preserve_routes {
            return steps;
        }
        let routes = plan
            .routes
            .iter()
            .map(|&(dest, prefix, via, metric)| (Some((dest, prefix)), via, metric));
        let default = plan.default_via.map(|via| (None, via, 0));
        for (dest, via, metric) in routes.chain(default) {
            let (msg, what) = rtmsg::route_add(self.index, plan, dest, via, metric);
            steps.push(Step {
                msg: RouteNetlinkMessage::NewRoute(msg),
                flags: NLM_F_CREATE | NLM_F_EXCL,
                op: "route_add",
                object: self.on(&what),
                on_error: OnError::Route(plan.family, dest, metric),
            });
        }
        steps
    }
}

/// One request of a batch, and what its failure means.
struct Step {
    msg: RouteNetlinkMessage,
    flags: u16,
    op: &'static str,
    /// What the request is about, in errors: `OP OBJECT`.
    object: String,
    on_error: OnError,
}

enum OnError {
    Fail,
    /// EAFNOSUPPORT means the device has no IPv6, and nothing to do.
    NoIpv6,
    /// EEXIST is no failure if the route with this family, destination and metric is on the
    /// link: the kernel added it with the address (a peer's route), or an earlier apply did.
    Route(AddressFamily, Option<(std::net::IpAddr, u8)>, u32),
}
