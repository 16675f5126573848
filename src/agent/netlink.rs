//! The rtnetlink client ([`Rtnl`]) and the setup of a link inside a namespace ([`Configure`]).
//!
//! A netlink socket talks to the namespace it was created in, so each one is opened on the thread
//! that is already inside the namespace it is meant for. The messages come from
//! [`crate::agent::rtmsg`], which decides what to send; this module only sends it.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

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

use crate::agent::linux::{in_netns, RealSys};
use crate::agent::rtmsg::{self, FamilySetup};
use crate::agent::sys::{Link, NetnsSetup, Sys, SysError};

/// A minimal synchronous rtnetlink client: one request at a time, each acknowledged.
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

    /// Sends one request and returns what the kernel answered before its ACK or, for a dump,
    /// before NLMSG_DONE.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut packet = NetlinkMessage::from(msg);
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut rest = data.as_slice();
            while !rest.is_empty() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let len = (reply.header.length as usize).next_multiple_of(4);
                if len == 0 {
                    break;
                }
                rest = rest.get(len..).unwrap_or_default();
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

    /// Deletes the link with this index; one that is not there counts as done.
    pub fn link_del(&mut self, ifindex: u32) -> io::Result<()> {
        match self.request(RouteNetlinkMessage::DelLink(rtmsg::link_del(ifindex)), 0) {
            Err(e) if e.raw_os_error() != Some(Errno::ENODEV as i32) => Err(e),
            _ => Ok(()),
        }
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
    /// Returns the link's index.
    pub fn run(netns: &str, setup: &NetnsSetup<'_>) -> Result<u32, SysError> {
        let inside = format!("in namespace {netns}");
        let mut nl = Rtnl::open(&inside)?;
        nl.link_index("lo")
            .and_then(|lo| nl.link_set(rtmsg::link_set(lo, Vec::new(), true)))
            .map_err(|e| SysError::os("link_set lo up", &inside, e))?;
        debug!("set lo up in namespace {netns}");
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
        c.link_up(setup.mtu)?;
        let families = [
            (AddressFamily::Inet, setup.ipv4.map(FamilySetup::new)),
            (AddressFamily::Inet6, setup.ipv6.map(FamilySetup::new)),
        ];
        for (family, plan) in &families {
            if setup.reapply {
                c.flush(*family, plan.as_ref())?;
            }
            if let Some(plan) = plan {
                c.apply(plan, setup.reapply)?;
            }
        }
        if let Some(range) = setup.ping_group_range {
            let key = "net.ipv4.ping_group_range";
            std::fs::write(sysctl_path(key), range)
                .map_err(|e| SysError::os("sysctl_write", format!("{key} {inside}"), e))?;
            debug!("set {key} to {range:?} in namespace {netns}");
        }
        Ok(index)
    }

    fn on(&self, what: impl fmt::Display) -> String {
        format!("{what} dev {} in namespace {}", self.link, self.netns)
    }

    /// Called before each message: the kernel answers each one quickly, so checking between
    /// them bounds the whole step by the deadline plus one message.
    fn in_time(&self, op: &str, what: impl fmt::Display) -> Result<(), SysError> {
        self.setup.check_deadline(
            std::time::Instant::now(),
            format_args!("{op} {}", self.on(what)),
        )
    }

    fn link_up(&mut self, mtu: Option<u32>) -> Result<(), SysError> {
        self.in_time("link_set", "up")?;
        let gen_mode = rtmsg::link_set(self.index, vec![rtmsg::addrgenmode_none()], false);
        match self.nl.link_set(gen_mode) {
            Ok(()) => {}
            // No IPv6 on this device (IPv6 disabled, or an MTU below 1280): nothing to make.
            Err(e) if e.raw_os_error() == Some(Errno::EAFNOSUPPORT as i32) => {}
            Err(e) => return Err(SysError::os("link_set", self.on("addrgenmode none"), e)),
        }
        let attrs = mtu
            .map(netlink_packet_route::link::LinkAttribute::Mtu)
            .into_iter()
            .collect();
        self.nl
            .link_set(rtmsg::link_set(self.index, attrs, true))
            .map_err(|e| SysError::os("link_set", self.on(format!("mtu {mtu:?} up")), e))?;
        debug!("set {} up with mtu {mtu:?}", self.on("link"));
        Ok(())
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

    fn apply(&mut self, plan: &FamilySetup, reapply: bool) -> Result<(), SysError> {
        self.addr_add(plan)?;
        if reapply && plan.preserve_routes {
            return Ok(());
        }
        for &(dest, prefix, via, metric) in &plan.routes {
            self.route_add(plan, Some((dest, prefix)), via, metric)?;
        }
        if let Some(via) = plan.default_via {
            self.route_add(plan, None, via, 0)?;
        }
        Ok(())
    }

    fn addr_add(&mut self, plan: &FamilySetup) -> Result<(), SysError> {
        let (msg, what) = rtmsg::address_add(self.index, plan);
        self.in_time("addr_add", &what)?;
        self.nl
            .request(
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map_err(|e| SysError::os("addr_add", self.on(&what), e))?;
        debug!("added address {}", self.on(&what));
        Ok(())
    }

    fn route_add(
        &mut self,
        plan: &FamilySetup,
        dest: Option<(std::net::IpAddr, u8)>,
        via: Option<std::net::IpAddr>,
        metric: u32,
    ) -> Result<(), SysError> {
        let (msg, what) = rtmsg::route_add(self.index, plan, dest, via, metric);
        self.in_time("route_add", &what)?;
        let added = self.nl.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        match added {
            Ok(_) => debug!("added route {}", self.on(&what)),
            Err(e) if rtmsg::already_exists(&e) => {
                let routes = self
                    .route_dump(plan.family)
                    .map_err(|e| SysError::os("route_list", self.on(&what), e))?;
                if !rtmsg::route_on_link(&routes, plan.family, dest, metric, self.index) {
                    return Err(SysError::os("route_add", self.on(&what), e));
                }
                debug!("route {} already there", self.on(&what));
            }
            Err(e) => return Err(SysError::os("route_add", self.on(&what), e)),
        }
        Ok(())
    }
}

/// `RTNLGRP_LINK` of <linux/rtnetlink.h>: the multicast group of link changes.
const RTNLGRP_LINK: u32 = 1;

/// A socket in the namespace mounted at `path` that receives its link changes, and the index of
/// `link` there; `None` if the link is not there (any more). The socket is subscribed before the
/// link is looked up, so that no removal can fall between the two. Non-blocking, for the
/// service's event loop; it keeps the namespace alive until it is closed.
pub fn link_watch(path: &Path, link: &str) -> Result<Option<(OwnedFd, u32)>, SysError> {
    let Some(netns) = RealSys::new()?.netns_open(path)? else {
        return Ok(None);
    };
    let object = format!("{link} in namespace {}", netns.name());
    in_netns(&netns, || {
        let watch = || -> std::io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            socket.add_membership(RTNLGRP_LINK)?;
            socket.set_non_blocking(true)?;
            Ok(socket)
        };
        let socket = watch().map_err(|e| SysError::os("watch", &object, e))?;
        match Rtnl::open(&object)?.link_index(link) {
            Ok(ifindex) => {
                let fd = socket.as_fd().try_clone_to_owned();
                Ok(Some((
                    fd.map_err(|e| SysError::os("dup", &object, e))?,
                    ifindex,
                )))
            }
            Err(e) if e.raw_os_error() == Some(Errno::ENODEV as i32) => Ok(None),
            Err(e) => Err(SysError::os("link_index", &object, e)),
        }
    })
}
