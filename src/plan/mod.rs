//! The isolation planner: NetworkManager's `Config`/`Ip4Config`/`Ip6Config` dicts, as the stock
//! nm-openvpn helper sends them, plus the validated settings -> an [`IsolationPlan`].
//!
//! Pure: nothing here touches the system. The agent runs it on the raw inputs of every request, so
//! each value is checked here, once, and every error names the dict, the key and the value.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use zbus::{OwnedVariant, Variant};

pub mod settings;

use settings::NetnsName;

/// A D-Bus `a{sv}` as NetworkManager's VPN plugin interface carries it.
pub type VarDict = HashMap<String, OwnedVariant>;

/// A dict value. Plain values carry no file descriptors, so making one owned cannot fail.
pub fn owned<'a>(v: impl Into<Variant<'a>>) -> OwnedVariant {
    OwnedVariant::try_from(v.into()).expect("plain values never carry file descriptors")
}

/// A dict from its entries.
pub fn var_dict(entries: Vec<(&str, OwnedVariant)>) -> VarDict {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

// Key names from NetworkManager's libnm-core-public/nm-vpn-dbus-interface.h.
const TUNDEV: &str = "tundev";
const MTU: &str = "mtu";
const BANNER: &str = "banner";
const GATEWAY: &str = "gateway";
const HAS_IP4: &str = "has-ip4";
const HAS_IP6: &str = "has-ip6";
const CAN_PERSIST: &str = "can-persist";
const INTERNAL_GATEWAY: &str = "internal-gateway";
const ADDRESS: &str = "address";
const PTP: &str = "ptp";
const PREFIX: &str = "prefix";
const DNS: &str = "dns";
const DOMAIN: &str = "domain";
const DOMAINS: &str = "domains";
const ROUTES: &str = "routes";
const PRESERVE_ROUTES: &str = "preserve-routes";
const NEVER_DEFAULT: &str = "never-default";

const HOSTS_LINE: &str = "hosts: files dns";

/// Which of NetworkManager's three dicts a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictName {
    Config,
    Ip4Config,
    Ip6Config,
}

impl fmt::Display for DictName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DictName::Config => "Config",
            DictName::Ip4Config => "Ip4Config",
            DictName::Ip6Config => "Ip6Config",
        })
    }
}

/// Every way planning can fail. Each message names the dict, the key and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{dict} key \"{key}\" must be {expected}, got type {found}: {value}")]
    WrongType {
        dict: DictName,
        key: &'static str,
        expected: &'static str,
        found: String,
        value: String,
    },
    #[error("{dict} key \"{key}\" is missing: {reason}")]
    MissingKey {
        dict: DictName,
        key: &'static str,
        reason: String,
    },
    #[error("{dict} key \"{key}\" has an invalid value {value}: {reason}")]
    InvalidValue {
        dict: DictName,
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("Config key \"{key}\" is true but no {dict} was received")]
    MissingDict { dict: DictName, key: &'static str },
    #[error("an {dict} was received but Config key \"{key}\" is not true")]
    UnexpectedDict { dict: DictName, key: &'static str },
    #[error("invalid interface name {value:?}: {reason}")]
    InvalidIfName { value: String, reason: &'static str },
}

/// A valid Linux interface name, by the kernel's `dev_valid_name()` rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_ifname(s).map_err(|reason| PlanError::InvalidIfName {
            value: s.to_owned(),
            reason,
        })?;
        Ok(IfName(s.to_owned()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_ifname(s: &str) -> Result<(), &'static str> {
    // IFNAMSIZ is 16 including the terminating NUL.
    match s.len() {
        0 => return Err("it is empty"),
        16.. => return Err("it is longer than 15 bytes"),
        _ => {}
    }
    if s == "." || s == ".." {
        return Err("\".\" and \"..\" are not allowed");
    }
    // The kernel's isspace() works on Latin-1 bytes, so 0xa0 (no-break space) counts as well.
    if s.bytes().any(|b| {
        matches!(
            b,
            b'/' | b':' | b'\0' | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0
        )
    }) {
        return Err("'/', ':', NUL and whitespace are not allowed");
    }
    Ok(())
}

/// The raw inputs of one isolation, as the agent receives them.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub netns: NetnsName,
    /// The profile's `ipv4.never-default`.
    pub never_default_v4: bool,
    /// The profile's `ipv6.never-default`.
    pub never_default_v6: bool,
    pub config: &'a VarDict,
    pub ip4_config: Option<&'a VarDict>,
    pub ip6_config: Option<&'a VarDict>,
    /// The host's `/etc/nsswitch.conf`; empty if it has none.
    pub host_nsswitch: &'a str,
}

/// Everything the executor applies inside the namespace, all of it validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationPlan {
    pub netns: NetnsName,
    pub link: LinkPlan,
    /// `None`: the VPN configured no IPv4, so the namespace gets no IPv4 route at all.
    pub ipv4: Option<FamilyPlan<Ipv4Addr>>,
    /// `None`: the VPN configured no IPv6, so the namespace gets no IPv6 route at all.
    pub ipv6: Option<FamilyPlan<Ipv6Addr>>,
    /// Content of `/etc/netns/NAME/resolv.conf`.
    pub resolv_conf: String,
    /// Content of `/etc/netns/NAME/nsswitch.conf`.
    pub nsswitch_conf: String,
}

/// `ip link set NAME netns NETNS mtu MTU up`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    pub name: IfName,
    pub mtu: Option<u32>,
}

/// One address family on the tun: `ip addr add ADDRESS/PREFIX [peer PEER] dev TUN`, then the
/// routes, then the default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyPlan<A> {
    pub address: A,
    pub prefix: u8,
    /// The `ptp` peer; as with `ip addr add`, the prefix then belongs to the peer.
    pub peer: Option<A>,
    /// `ip route add DEST/PREFIX [via VIA] dev TUN [metric METRIC]`, in the order pushed, less a
    /// host route to the VPN server, any pushed default route and repeats.
    pub routes: Vec<Route<A>>,
    /// `ip route add default [via VIA] dev TUN`; `None` when never-default applies.
    pub default_route: Option<DefaultRoute<A>>,
    /// openvpn restarted (`--up-restart`) and sent no routes: keep the routes already in the
    /// namespace rather than flushing them. `routes` is then empty.
    pub preserve_routes: bool,
}

/// A pushed route. `dest` has its host bits cleared; `metric` 0 means the kernel's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<A> {
    pub dest: A,
    pub prefix: u8,
    /// A tun forwards without neighbours, yet the kernel still refuses a next hop that no
    /// link route covers unless the route is added `onlink`.
    pub via: Option<A>,
    pub metric: u32,
}

/// The default route through the tun; `via` is NetworkManager's `internal-gateway`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute<A> {
    pub via: Option<A>,
}

/// Builds the plan, validating every input.
pub fn build(input: &PlanInput<'_>) -> Result<IsolationPlan, PlanError> {
    let config = Reader::new(DictName::Config, input.config);
    let gateway = config.gateway()?;
    let has_ip4 = config.bool(HAS_IP4)?.unwrap_or(false);
    let has_ip6 = config.bool(HAS_IP6)?.unwrap_or(false);

    // nm-openvpn's helper gives up without a device, so a Config without one never comes from
    // it; there is nothing to move into the namespace either way.
    let tundev = config.str(TUNDEV)?.ok_or_else(|| PlanError::MissingKey {
        dict: DictName::Config,
        key: TUNDEV,
        reason: format!(
            "no device to move into the namespace (has-ip4={has_ip4}, has-ip6={has_ip6})"
        ),
    })?;
    let name = check_ifname(tundev)
        .map(|()| IfName(tundev.to_owned()))
        .map_err(|reason| config.invalid(TUNDEV, format!("{tundev:?}"), reason))?;

    let ip4 = family_dict(has_ip4, input.ip4_config, DictName::Ip4Config, HAS_IP4)?;
    let ip6 = family_dict(has_ip6, input.ip6_config, DictName::Ip6Config, HAS_IP6)?;

    let mut nameservers = Vec::new();
    let mut search = Vec::new();
    let ipv4 = ip4
        .map(|r| {
            family::<Ipv4Addr>(
                &r,
                input.never_default_v4,
                gateway,
                &mut nameservers,
                &mut search,
            )
        })
        .transpose()?;
    let ipv6 = ip6
        .map(|r| {
            family::<Ipv6Addr>(
                &r,
                input.never_default_v6,
                gateway,
                &mut nameservers,
                &mut search,
            )
        })
        .transpose()?;

    let mtu = config.u32(MTU)?;
    if let Some(mtu) = mtu {
        // Below 68 the kernel drops a device's IPv4 setup, below 1280 its IPv6 setup, and a tun
        // takes no more than 65535.
        let (min, why) = if ipv6.is_some() {
            (1280, "with IPv6 on the tun it must be 1280-65535")
        } else {
            (68, "it must be 68-65535")
        };
        if !(min..=65535).contains(&mtu) {
            return Err(config.invalid(MTU, mtu, why));
        }
    }

    Ok(IsolationPlan {
        netns: input.netns.clone(),
        link: LinkPlan { name, mtu },
        ipv4,
        ipv6,
        resolv_conf: render_resolv_conf(&input.netns, &nameservers, &search),
        nsswitch_conf: render_nsswitch(input.host_nsswitch),
    })
}

/// The `Config` the shim reports to NetworkManager for an isolated connection: the external
/// gateway, `banner` and `can-persist` forwarded, `has-ip4`/`has-ip6` false, nothing else. NM
/// then reaches ACTIVATED without installing anything in the root namespace; a `tundev` would
/// make it look the tun up there, and any IP setting would land on the host.
pub fn isolated_nm_config(config: &VarDict) -> Result<VarDict, PlanError> {
    let reader = Reader::new(DictName::Config, config);
    let gateway = match reader.gateway()? {
        IpAddr::V4(a) => OwnedVariant::from(u32::from_ne_bytes(a.octets())),
        IpAddr::V6(a) => OwnedVariant::try_from(Variant::from(a.octets().to_vec()))
            .expect("a byte array holds no file descriptor"),
    };
    let mut out = VarDict::from([
        (GATEWAY.to_owned(), gateway),
        (HAS_IP4.to_owned(), OwnedVariant::from(false)),
        (HAS_IP6.to_owned(), OwnedVariant::from(false)),
    ]);
    if let Some(banner) = reader.str(BANNER)? {
        out.insert(
            BANNER.to_owned(),
            OwnedVariant::from(zbus::Str::from(banner.to_owned())),
        );
    }
    if let Some(can_persist) = reader.bool(CAN_PERSIST)? {
        out.insert(CAN_PERSIST.to_owned(), OwnedVariant::from(can_persist));
    }
    Ok(out)
}

fn family_dict<'a>(
    announced: bool,
    dict: Option<&'a VarDict>,
    name: DictName,
    key: &'static str,
) -> Result<Option<Reader<'a>>, PlanError> {
    // NM ignores an IP dict that Config did not announce; here that means the shim and the agent
    // disagree about the connection, which is a bug worth stopping on.
    match (announced, dict) {
        (true, Some(d)) => Ok(Some(Reader::new(name, d))),
        (true, None) => Err(PlanError::MissingDict { dict: name, key }),
        (false, Some(_)) => Err(PlanError::UnexpectedDict { dict: name, key }),
        (false, None) => Ok(None),
    }
}

fn family<A: Family>(
    r: &Reader<'_>,
    never_default_profile: bool,
    ext_gateway: IpAddr,
    nameservers: &mut Vec<IpAddr>,
    search: &mut Vec<String>,
) -> Result<FamilyPlan<A>, PlanError> {
    // NM would configure routes on a family with no address; nm-openvpn never sends that, and an
    // address-less tun in the namespace would only hide the mistake.
    let address = A::read(r, ADDRESS)?.ok_or_else(|| PlanError::MissingKey {
        dict: r.name,
        key: ADDRESS,
        reason: "the VPN announced this family without an address".to_owned(),
    })?;
    // Without `prefix`, use NM's own default so the namespace gets the address NM would set.
    let prefix = match r.u32(PREFIX)? {
        None => A::DEFAULT_PREFIX,
        Some(p) => u8::try_from(p)
            .ok()
            .filter(|p| (1..=A::MAX_PREFIX).contains(p))
            .ok_or_else(|| r.invalid(PREFIX, p, format!("must be 1-{}", A::MAX_PREFIX)))?,
    };
    let peer = A::read(r, PTP)?;
    let internal_gateway = A::read(r, INTERNAL_GATEWAY)?;

    let mut routes: Vec<Route<A>> = Vec::new();
    for route in A::read_routes(r)? {
        // NM drops host routes to the VPN server because it routes the server itself on the
        // uplink. Inside the namespace such a route (openvpn's `net_gateway`) names a gateway
        // that only exists on the uplink, so adding it would fail; the tun reaches the server.
        let to_server = route.prefix == A::MAX_PREFIX && route.dest.into() == ext_gateway;
        // A pushed default route would collide with `default_route` and bypass never-default.
        let default = route.prefix == 0;
        // The kernel refuses a second route with the same destination and metric.
        let duplicate = routes.iter().any(|kept| {
            (kept.dest, kept.prefix, kept.metric) == (route.dest, route.prefix, route.metric)
        });
        if !(to_server || default || duplicate) {
            routes.push(route);
        }
    }
    // NM ignores `routes` when told to preserve the previous ones.
    let preserve_routes = r.bool(PRESERVE_ROUTES)?.unwrap_or(false);
    if preserve_routes {
        routes.clear();
    }

    // A server-pushed `never-default` is honoured as NM honours it (nm-openvpn never sends one;
    // other plugins do for split tunnels). Dropping a default route inside the namespace cannot
    // leak: there is no other path out, so traffic the VPN does not route fails closed.
    let pushed_never_default = r.bool(NEVER_DEFAULT)?.unwrap_or(false);
    let default_route =
        (!(never_default_profile || pushed_never_default)).then_some(DefaultRoute {
            via: internal_gateway,
        });

    nameservers.extend(A::read_list(r, DNS)?.into_iter().map(Into::into));
    let domain = r.str(DOMAIN)?.map(|d| (DOMAIN, d));
    let domains = r.strs(DOMAINS)?.into_iter().map(|d| (DOMAINS, d));
    for (key, domain) in domain.into_iter().chain(domains) {
        check_domain(domain).map_err(|reason| r.invalid(key, format!("{domain:?}"), reason))?;
        if !search.iter().any(|d| d == domain) {
            search.push(domain.to_owned());
        }
    }

    Ok(FamilyPlan {
        address,
        prefix,
        peer,
        routes,
        default_route,
        preserve_routes,
    })
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    // The name goes on resolv.conf's `search` line: whitespace would split it and a newline
    // would let the server add a line of its own, such as another nameserver.
    if domain.is_empty() {
        Err("it is empty")
    } else if domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("whitespace and control characters are not allowed in a search domain")
    } else {
        Ok(())
    }
}

fn render_resolv_conf(netns: &NetnsName, nameservers: &[IpAddr], search: &[String]) -> String {
    let mut out = format!("# Written by nm-vpn-netns for the VPN in network namespace {netns}.\n");
    if nameservers.is_empty() {
        // With no nameserver line glibc asks 127.0.0.1, which is the namespace's own loopback,
        // not the host's resolver.
        out.push_str(
            "# The VPN pushed no DNS server. Lookups fail closed: they never reach the host's \
             resolver.\n",
        );
    }
    for ns in nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out
}

fn render_nsswitch(host: &str) -> String {
    let mut out = String::with_capacity(host.len() + HOSTS_LINE.len() + 2);
    let mut replaced = false;
    for line in host.split_inclusive('\n') {
        if names_hosts_database(line) {
            // Every such line: glibc takes the last one, and all of them must go.
            replaced = true;
            out.push_str(HOSTS_LINE);
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(HOSTS_LINE);
        out.push('\n');
    }
    out
}

/// Whether glibc's nsswitch parser reads `line` as the `hosts` database: it skips leading
/// whitespace and ends the name at whitespace or ':', so `  hosts :` and `hosts files` count.
fn names_hosts_database(line: &str) -> bool {
    let rest = line.trim_start_matches(is_c_space);
    let end = rest
        .find(|c| is_c_space(c) || c == ':')
        .unwrap_or(rest.len());
    &rest[..end] == "hosts"
}

fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Typed, checked access to one of NM's dicts.
struct Reader<'a> {
    name: DictName,
    dict: &'a VarDict,
}

impl<'a> Reader<'a> {
    fn new(name: DictName, dict: &'a VarDict) -> Self {
        Reader { name, dict }
    }

    fn get(&self, key: &str) -> Option<&'a Variant<'static>> {
        self.dict.get(key).map(|v| &**v)
    }

    fn wrong_type(&self, key: &'static str, expected: &'static str, v: &Variant<'_>) -> PlanError {
        PlanError::WrongType {
            dict: self.name,
            key,
            expected,
            found: v.value_signature().to_string(),
            value: v.to_string(),
        }
    }

    fn invalid(
        &self,
        key: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> PlanError {
        PlanError::InvalidValue {
            dict: self.name,
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn bool(&self, key: &'static str) -> Result<Option<bool>, PlanError> {
        self.get(key)
            .map(|v| match v {
                Variant::Bool(b) => Ok(*b),
                _ => Err(self.wrong_type(key, "a boolean (b)", v)),
            })
            .transpose()
    }

    fn u32(&self, key: &'static str) -> Result<Option<u32>, PlanError> {
        self.get(key)
            .map(|v| match v {
                Variant::U32(n) => Ok(*n),
                _ => Err(self.wrong_type(key, "a uint32 (u)", v)),
            })
            .transpose()
    }

    fn str(&self, key: &'static str) -> Result<Option<&'a str>, PlanError> {
        self.get(key)
            .map(|v| match v {
                Variant::Str(s) => Ok(s.as_str()),
                _ => Err(self.wrong_type(key, "a string (s)", v)),
            })
            .transpose()
    }

    fn strs(&self, key: &'static str) -> Result<Vec<&'a str>, PlanError> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let wrong = || self.wrong_type(key, "an array of strings (as)", v);
        let Variant::Array(items) = v else {
            return Err(wrong());
        };
        items
            .iter()
            .map(|item| match item {
                Variant::Str(s) => Ok(s.as_str()),
                _ => Err(wrong()),
            })
            .collect()
    }

    /// The external VPN gateway: `u` for IPv4, `ay` for IPv6. NM fails a VPN without one.
    fn gateway(&self) -> Result<IpAddr, PlanError> {
        let v = self.get(GATEWAY).ok_or_else(|| PlanError::MissingKey {
            dict: self.name,
            key: GATEWAY,
            reason: "NetworkManager fails a VPN without its external gateway".to_owned(),
        })?;
        match v {
            Variant::U32(_) => Ipv4Addr::decode(self, GATEWAY, v).map(IpAddr::V4),
            Variant::Array(_) => Ipv6Addr::decode(self, GATEWAY, v).map(IpAddr::V6),
            _ => Err(self.wrong_type(
                GATEWAY,
                "an IPv4 address as uint32 (u) or an IPv6 address as bytes (ay)",
                v,
            )),
        }
    }
}

/// What differs between IPv4 and IPv6 in NM's dicts.
trait Family: Copy + Eq + Into<IpAddr> + Sized {
    const MAX_PREFIX: u8;
    /// What NetworkManager assumes when the dict has no `prefix`.
    const DEFAULT_PREFIX: u8;

    /// One address, never the unspecified one.
    fn decode(r: &Reader<'_>, key: &'static str, v: &Variant<'_>) -> Result<Self, PlanError>;
    fn read_list(r: &Reader<'_>, key: &'static str) -> Result<Vec<Self>, PlanError>;
    fn read_routes(r: &Reader<'_>) -> Result<Vec<Route<Self>>, PlanError>;

    fn read(r: &Reader<'_>, key: &'static str) -> Result<Option<Self>, PlanError> {
        r.get(key).map(|v| Self::decode(r, key, v)).transpose()
    }
}

impl<'a> Reader<'a> {
    /// The items of the array `key` (`None` when absent), refused unless the whole value has
    /// D-Bus type `signature`, so that an empty array of the wrong type is refused too.
    fn array(
        &self,
        key: &'static str,
        signature: &str,
        expected: &'static str,
    ) -> Result<Option<&'a [Variant<'static>]>, PlanError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v {
            Variant::Array(items) if v.value_signature() == signature => Ok(Some(items.inner())),
            _ => Err(self.wrong_type(key, expected, v)),
        }
    }
}

fn route_prefix(
    r: &Reader<'_>,
    entry: &Variant<'_>,
    prefix: u32,
    max: u8,
) -> Result<u8, PlanError> {
    u8::try_from(prefix)
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| r.invalid(ROUTES, entry, format!("prefix {prefix} is over {max}")))
}

impl Family for Ipv4Addr {
    const MAX_PREFIX: u8 = 32;
    const DEFAULT_PREFIX: u8 = 24;

    fn decode(r: &Reader<'_>, key: &'static str, v: &Variant<'_>) -> Result<Self, PlanError> {
        let Variant::U32(n) = v else {
            return Err(r.wrong_type(key, "an IPv4 address as uint32 (u)", v));
        };
        nonzero_ip4(r, key, *n)
    }

    fn read_list(r: &Reader<'_>, key: &'static str) -> Result<Vec<Self>, PlanError> {
        let items = r.array(key, "au", "an array of IPv4 addresses as uint32 (au)")?;
        items
            .unwrap_or_default()
            .iter()
            .map(|item| match item {
                Variant::U32(n) => nonzero_ip4(r, key, *n),
                other => Err(r.wrong_type(key, "an IPv4 address as uint32 (u)", other)),
            })
            .collect()
    }

    fn read_routes(r: &Reader<'_>) -> Result<Vec<Route<Self>>, PlanError> {
        let entries = r.array(
            ROUTES,
            "aau",
            "an array of [dest, prefix, next-hop, metric] uint32 arrays (aau)",
        )?;
        entries
            .unwrap_or_default()
            .iter()
            .map(|entry| {
                let Variant::Array(fields) = entry else {
                    return Err(r.wrong_type(ROUTES, "a uint32 array (au)", entry));
                };
                let [
                    Variant::U32(dest),
                    Variant::U32(prefix),
                    Variant::U32(via),
                    Variant::U32(metric),
                ] = fields.inner()
                else {
                    return Err(r.invalid(
                        ROUTES,
                        entry,
                        format!(
                            "a route is [dest, prefix, next-hop, metric], got {} items",
                            fields.len()
                        ),
                    ));
                };
                let prefix = route_prefix(r, entry, *prefix, Self::MAX_PREFIX)?;
                // NM clears host bits before adding a route, and the kernel refuses them.
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                let dest = Ipv4Addr::from(u32::from(ip4(*dest)) & mask);
                Ok(Route {
                    dest,
                    prefix,
                    via: Some(ip4(*via)).filter(|a| !a.is_unspecified()),
                    metric: *metric,
                })
            })
            .collect()
    }
}

/// NM's dicts carry an IPv4 address as the u32 whose native-endian bytes are the octets.
fn ip4(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(n.to_ne_bytes())
}

fn nonzero_ip4(r: &Reader<'_>, key: &'static str, n: u32) -> Result<Ipv4Addr, PlanError> {
    let a = ip4(n);
    if a.is_unspecified() {
        return Err(r.invalid(key, a, "the address 0.0.0.0 is not usable"));
    }
    Ok(a)
}

impl Family for Ipv6Addr {
    const MAX_PREFIX: u8 = 128;
    const DEFAULT_PREFIX: u8 = 128;

    fn decode(r: &Reader<'_>, key: &'static str, v: &Variant<'_>) -> Result<Self, PlanError> {
        nonzero_ip6(r, key, v, v)
    }

    fn read_list(r: &Reader<'_>, key: &'static str) -> Result<Vec<Self>, PlanError> {
        let items = r.array(key, "aay", "an array of IPv6 addresses as bytes (aay)")?;
        items
            .unwrap_or_default()
            .iter()
            .map(|item| nonzero_ip6(r, key, item, item))
            .collect()
    }

    fn read_routes(r: &Reader<'_>) -> Result<Vec<Route<Self>>, PlanError> {
        let entries = r.array(
            ROUTES,
            "a(ayuayu)",
            "an array of (dest, prefix, next-hop, metric) structs (a(ayuayu))",
        )?;
        entries
            .unwrap_or_default()
            .iter()
            .map(|entry| {
                let wrong =
                    || r.wrong_type(ROUTES, "a (dest, prefix, next-hop, metric) struct", entry);
                let Variant::Structure(s) = entry else {
                    return Err(wrong());
                };
                let [dest, Variant::U32(prefix), via, Variant::U32(metric)] = s.fields() else {
                    return Err(wrong());
                };
                let prefix = route_prefix(r, entry, *prefix, Self::MAX_PREFIX)?;
                // NM clears host bits before adding a route, and the kernel refuses them.
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                let dest = Ipv6Addr::from(u128::from(ip6(r, ROUTES, entry, dest)?) & mask);
                let via = ip6(r, ROUTES, entry, via)?;
                Ok(Route {
                    dest,
                    prefix,
                    via: Some(via).filter(|a| !a.is_unspecified()),
                    metric: *metric,
                })
            })
            .collect()
    }
}

/// An `ay` IPv6 address; `whole` is what an error shows: the value, or the route it sits in.
fn ip6(
    r: &Reader<'_>,
    key: &'static str,
    whole: &Variant<'_>,
    v: &Variant<'_>,
) -> Result<Ipv6Addr, PlanError> {
    let wrong = || r.wrong_type(key, "an IPv6 address as bytes (ay)", whole);
    let Variant::Array(items) = v else {
        return Err(wrong());
    };
    let bytes = items
        .iter()
        .map(|b| match b {
            Variant::U8(b) => Ok(*b),
            _ => Err(wrong()),
        })
        .collect::<Result<Vec<u8>, _>>()?;
    let octets = <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| {
        r.invalid(
            key,
            whole,
            format!("an IPv6 address needs 16 bytes, got {}", bytes.len()),
        )
    })?;
    Ok(Ipv6Addr::from(octets))
}

fn nonzero_ip6(
    r: &Reader<'_>,
    key: &'static str,
    whole: &Variant<'_>,
    v: &Variant<'_>,
) -> Result<Ipv6Addr, PlanError> {
    let a = ip6(r, key, whole, v)?;
    if a.is_unspecified() {
        return Err(r.invalid(key, a, "the address :: is not usable"));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How nm-openvpn's helper encodes an IPv4 address: `inet_pton` into a `u32`, sent as is.
    fn v4(s: &str) -> u32 {
        u32::from_ne_bytes(s.parse::<Ipv4Addr>().unwrap().octets())
    }

    fn ay(s: &str) -> Vec<u8> {
        s.parse::<Ipv6Addr>().unwrap().octets().to_vec()
    }

    use super::{owned as ov, var_dict as dict};

    fn a4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn a6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const HOST_NSSWITCH: &str = "\
# /etc/nsswitch.conf
#
# Example configuration of GNU Name Service Switch functionality.

passwd:         files systemd
group:          files systemd
shadow:         files
gshadow:        files

hosts:          files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns myhostname
networks:       files

protocols:      db files
services:       db files
netgroup:       nis
";

    const NETNS_NSSWITCH: &str = "\
# /etc/nsswitch.conf
#
# Example configuration of GNU Name Service Switch functionality.

passwd:         files systemd
group:          files systemd
shadow:         files
gshadow:        files

hosts: files dns
networks:       files

protocols:      db files
services:       db files
netgroup:       nis
";

    /// Config as nm-openvpn 1.10 sends it (helper key order: gateway, can-persist, tundev, mtu,
    /// has-ip4, has-ip6).
    fn config(has_ip6: bool) -> VarDict {
        let mut d = dict(vec![
            (GATEWAY, ov(v4("198.18.0.1"))),
            (CAN_PERSIST, ov(true)),
            (TUNDEV, ov("tun0")),
            (MTU, ov(1500u32)),
            (HAS_IP4, ov(true)),
        ]);
        if has_ip6 {
            d.insert(HAS_IP6.to_owned(), ov(true));
        }
        d
    }

    /// `topology subnet`: ifconfig_local 198.19.0.2, ifconfig_netmask 255.255.255.0,
    /// route_vpn_gateway 198.19.0.1, `push "route 198.18.64.0 255.255.192.0"`.
    fn ip4_subnet() -> VarDict {
        dict(vec![
            (INTERNAL_GATEWAY, ov(v4("198.19.0.1"))),
            (ADDRESS, ov(v4("198.19.0.2"))),
            (PREFIX, ov(24u32)),
            (
                ROUTES,
                ov(vec![vec![v4("198.18.64.0"), 18, v4("198.19.0.1"), 0]]),
            ),
            (DNS, ov(vec![v4("198.19.0.1")])),
            (DOMAINS, ov(vec!["vpn.test"])),
        ])
    }

    /// `topology net30`: ifconfig_local 198.19.0.6, ifconfig_remote 198.19.0.5 and no netmask,
    /// so the helper sends `ptp` and a /32; the server pushes a route to its own tun address.
    fn ip4_net30() -> VarDict {
        dict(vec![
            (INTERNAL_GATEWAY, ov(v4("198.19.0.5"))),
            (ADDRESS, ov(v4("198.19.0.6"))),
            (PTP, ov(v4("198.19.0.5"))),
            (PREFIX, ov(32u32)),
            (
                ROUTES,
                ov(vec![vec![v4("198.19.0.1"), 32, v4("198.19.0.5"), 0]]),
            ),
            (DNS, ov(vec![v4("198.19.0.1")])),
            (DOMAINS, ov(vec!["vpn.test"])),
        ])
    }

    /// `server-ipv6 fd00:198:19::/64`: ifconfig_ipv6_local fd00:198:19::1000/64, remote
    /// fd00:198:19::1 (the helper's next hop for routes without one),
    /// `push "route-ipv6 fd00:198:19:1::/64"`, `push "dhcp-option DNS fd00:198:19::1"`.
    fn ip6() -> VarDict {
        dict(vec![
            (ADDRESS, ov(ay("fd00:198:19::1000"))),
            (PREFIX, ov(64u32)),
            (
                ROUTES,
                ov(vec![(
                    ay("fd00:198:19:1::"),
                    64u32,
                    ay("fd00:198:19::1"),
                    0u32,
                )]),
            ),
            (DNS, ov(vec![ay("fd00:198:19::1")])),
            (DOMAINS, ov(vec!["vpn.test"])),
        ])
    }

    fn netns() -> NetnsName {
        "work".parse().unwrap()
    }

    fn input<'a>(
        config: &'a VarDict,
        ip4: Option<&'a VarDict>,
        ip6: Option<&'a VarDict>,
    ) -> PlanInput<'a> {
        PlanInput {
            netns: netns(),
            never_default_v4: false,
            never_default_v6: false,
            config,
            ip4_config: ip4,
            ip6_config: ip6,
            host_nsswitch: HOST_NSSWITCH,
        }
    }

    fn tun0() -> LinkPlan {
        LinkPlan {
            name: "tun0".parse().unwrap(),
            mtu: Some(1500),
        }
    }

    fn subnet_v4_plan() -> FamilyPlan<Ipv4Addr> {
        FamilyPlan {
            address: a4("198.19.0.2"),
            prefix: 24,
            peer: None,
            routes: vec![Route {
                dest: a4("198.18.64.0"),
                prefix: 18,
                via: Some(a4("198.19.0.1")),
                metric: 0,
            }],
            default_route: Some(DefaultRoute {
                via: Some(a4("198.19.0.1")),
            }),
            preserve_routes: false,
        }
    }

    fn net30_v4_plan() -> FamilyPlan<Ipv4Addr> {
        FamilyPlan {
            address: a4("198.19.0.6"),
            prefix: 32,
            peer: Some(a4("198.19.0.5")),
            routes: vec![Route {
                dest: a4("198.19.0.1"),
                prefix: 32,
                via: Some(a4("198.19.0.5")),
                metric: 0,
            }],
            default_route: Some(DefaultRoute {
                via: Some(a4("198.19.0.5")),
            }),
            preserve_routes: false,
        }
    }

    fn v6_plan() -> FamilyPlan<Ipv6Addr> {
        FamilyPlan {
            address: a6("fd00:198:19::1000"),
            prefix: 64,
            peer: None,
            routes: vec![Route {
                dest: a6("fd00:198:19:1::"),
                prefix: 64,
                via: Some(a6("fd00:198:19::1")),
                metric: 0,
            }],
            default_route: Some(DefaultRoute { via: None }),
            preserve_routes: false,
        }
    }

    const RESOLV_V4: &str = "\
# Written by nm-vpn-netns for the VPN in network namespace work.
nameserver 198.19.0.1
search vpn.test
";

    const RESOLV_V4_V6: &str = "\
# Written by nm-vpn-netns for the VPN in network namespace work.
nameserver 198.19.0.1
nameserver fd00:198:19::1
search vpn.test
";

    const RESOLV_NO_DNS: &str = "\
# Written by nm-vpn-netns for the VPN in network namespace work.
# The VPN pushed no DNS server. Lookups fail closed: they never reach the host's resolver.
";

    #[test]
    fn golden_subnet() {
        let (c, i4) = (config(false), ip4_subnet());
        assert_eq!(
            build(&input(&c, Some(&i4), None)).unwrap(),
            IsolationPlan {
                netns: netns(),
                link: tun0(),
                ipv4: Some(subnet_v4_plan()),
                ipv6: None,
                resolv_conf: RESOLV_V4.to_owned(),
                nsswitch_conf: NETNS_NSSWITCH.to_owned(),
            }
        );
    }

    #[test]
    fn golden_subnet_ipv6() {
        let (c, i4, i6) = (config(true), ip4_subnet(), ip6());
        assert_eq!(
            build(&input(&c, Some(&i4), Some(&i6))).unwrap(),
            IsolationPlan {
                netns: netns(),
                link: tun0(),
                ipv4: Some(subnet_v4_plan()),
                ipv6: Some(v6_plan()),
                resolv_conf: RESOLV_V4_V6.to_owned(),
                nsswitch_conf: NETNS_NSSWITCH.to_owned(),
            }
        );
    }

    #[test]
    fn golden_net30() {
        let (c, i4) = (config(false), ip4_net30());
        assert_eq!(
            build(&input(&c, Some(&i4), None)).unwrap(),
            IsolationPlan {
                netns: netns(),
                link: tun0(),
                ipv4: Some(net30_v4_plan()),
                ipv6: None,
                resolv_conf: RESOLV_V4.to_owned(),
                nsswitch_conf: NETNS_NSSWITCH.to_owned(),
            }
        );
    }

    #[test]
    fn golden_net30_ipv6() {
        let (c, i4, i6) = (config(true), ip4_net30(), ip6());
        assert_eq!(
            build(&input(&c, Some(&i4), Some(&i6))).unwrap(),
            IsolationPlan {
                netns: netns(),
                link: tun0(),
                ipv4: Some(net30_v4_plan()),
                ipv6: Some(v6_plan()),
                resolv_conf: RESOLV_V4_V6.to_owned(),
                nsswitch_conf: NETNS_NSSWITCH.to_owned(),
            }
        );
    }

    #[test]
    fn ipv4_is_decoded_in_native_byte_order() {
        let raw = u32::from_ne_bytes([198, 19, 0, 2]);
        let d = dict(vec![(ADDRESS, ov(raw))]);
        let r = Reader::new(DictName::Ip4Config, &d);
        assert_eq!(Ipv4Addr::read(&r, ADDRESS), Ok(Some(a4("198.19.0.2"))));
    }

    #[test]
    fn ipv6_only() {
        let mut c = config(true);
        c.remove(HAS_IP4);
        let i6 = ip6();
        let plan = build(&input(&c, None, Some(&i6))).unwrap();
        assert_eq!(plan.ipv4, None);
        assert_eq!(plan.ipv6, Some(v6_plan()));
        assert_eq!(
            plan.resolv_conf,
            "# Written by nm-vpn-netns for the VPN in network namespace work.\n\
             nameserver fd00:198:19::1\n\
             search vpn.test\n"
        );
    }

    #[test]
    fn tap_without_ip_config_gets_no_family_and_no_dns() {
        let c = dict(vec![
            (GATEWAY, ov(v4("198.18.0.1"))),
            (CAN_PERSIST, ov(true)),
            (TUNDEV, ov("tap0")),
            (MTU, ov(1500u32)),
        ]);
        let plan = build(&input(&c, None, None)).unwrap();
        assert_eq!(plan.link.name.as_str(), "tap0");
        assert_eq!((plan.ipv4, plan.ipv6), (None, None));
        assert_eq!(plan.resolv_conf, RESOLV_NO_DNS);
    }

    #[test]
    fn never_default_v4_from_profile() {
        let (c, i4, i6) = (config(true), ip4_subnet(), ip6());
        let plan = build(&PlanInput {
            never_default_v4: true,
            ..input(&c, Some(&i4), Some(&i6))
        })
        .unwrap();
        let v4 = plan.ipv4.unwrap();
        assert_eq!(v4.default_route, None);
        assert_eq!(v4.routes, subnet_v4_plan().routes);
        assert_eq!(
            plan.ipv6.unwrap().default_route,
            Some(DefaultRoute { via: None })
        );
    }

    #[test]
    fn never_default_v6_from_profile() {
        let (c, i4, i6) = (config(true), ip4_subnet(), ip6());
        let plan = build(&PlanInput {
            never_default_v6: true,
            ..input(&c, Some(&i4), Some(&i6))
        })
        .unwrap();
        assert_eq!(
            plan.ipv4.unwrap().default_route,
            subnet_v4_plan().default_route
        );
        let v6 = plan.ipv6.unwrap();
        assert_eq!(v6.default_route, None);
        assert_eq!(v6.routes, v6_plan().routes);
    }

    #[test]
    fn never_default_pushed_by_the_server_is_honoured() {
        let c = config(true);
        let mut i4 = ip4_subnet();
        i4.insert(NEVER_DEFAULT.to_owned(), ov(true));
        let mut i6 = ip6();
        i6.insert(NEVER_DEFAULT.to_owned(), ov(false));
        let plan = build(&input(&c, Some(&i4), Some(&i6))).unwrap();
        assert_eq!(plan.ipv4.unwrap().default_route, None);
        assert_eq!(
            plan.ipv6.unwrap().default_route,
            Some(DefaultRoute { via: None })
        );
    }

    #[test]
    fn no_dns_pushed() {
        let c = config(false);
        let mut i4 = ip4_subnet();
        i4.remove(DNS);
        i4.remove(DOMAINS);
        let plan = build(&input(&c, Some(&i4), None)).unwrap();
        assert_eq!(plan.resolv_conf, RESOLV_NO_DNS);
        assert!(!plan.resolv_conf.contains("nameserver"));
    }

    #[test]
    fn search_domains_are_merged_in_order_without_repeats() {
        let c = config(true);
        let mut i4 = ip4_subnet();
        i4.insert(DOMAIN.to_owned(), ov("corp.test"));
        i4.insert(DOMAINS.to_owned(), ov(vec!["vpn.test", "corp.test"]));
        let mut i6 = ip6();
        i6.insert(DOMAINS.to_owned(), ov(vec!["vpn.test", "lab.test"]));
        let plan = build(&input(&c, Some(&i4), Some(&i6))).unwrap();
        assert!(plan
            .resolv_conf
            .ends_with("\nsearch corp.test vpn.test lab.test\n"));
    }

    #[test]
    fn routes_are_cleaned_up_like_nm_does() {
        let c = config(false);
        let mut i4 = ip4_subnet();
        i4.insert(
            ROUTES.to_owned(),
            ov(vec![
                // host bits set: becomes 198.18.64.0/18
                vec![v4("198.18.64.7"), 18, v4("198.19.0.1"), 0],
                // the same route again
                vec![v4("198.18.64.0"), 18, v4("198.19.0.1"), 0],
                // the same destination with another metric is another route
                vec![v4("198.18.64.0"), 18, v4("198.19.0.1"), 50],
                // host route to the VPN server through the uplink (`net_gateway`)
                vec![v4("198.18.0.1"), 32, v4("198.18.255.254"), 0],
                // a pushed default route
                vec![0, 0, v4("198.19.0.1"), 0],
                // no next hop
                vec![v4("198.18.128.0"), 24, 0, 0],
            ]),
        );
        let plan = build(&input(&c, Some(&i4), None)).unwrap();
        let v4 = plan.ipv4.unwrap();
        assert_eq!(
            v4.routes,
            vec![
                Route {
                    dest: a4("198.18.64.0"),
                    prefix: 18,
                    via: Some(a4("198.19.0.1")),
                    metric: 0,
                },
                Route {
                    dest: a4("198.18.64.0"),
                    prefix: 18,
                    via: Some(a4("198.19.0.1")),
                    metric: 50,
                },
                Route {
                    dest: a4("198.18.128.0"),
                    prefix: 24,
                    via: None,
                    metric: 0,
                },
            ]
        );
        assert_eq!(v4.default_route, subnet_v4_plan().default_route);
    }

    #[test]
    fn ipv6_route_host_bits_and_missing_next_hop() {
        let c = config(true);
        let i4 = ip4_subnet();
        let mut i6 = ip6();
        i6.insert(
            ROUTES.to_owned(),
            ov(vec![(ay("fd00:198:19:2::99"), 64u32, ay("::"), 0u32)]),
        );
        let plan = build(&input(&c, Some(&i4), Some(&i6))).unwrap();
        assert_eq!(
            plan.ipv6.unwrap().routes,
            vec![Route {
                dest: a6("fd00:198:19:2::"),
                prefix: 64,
                via: None,
                metric: 0,
            }]
        );
    }

    #[test]
    fn preserve_routes_on_restart() {
        let c = config(false);
        let mut i4 = ip4_subnet();
        i4.remove(ROUTES);
        i4.insert(PRESERVE_ROUTES.to_owned(), ov(true));
        let v4 = build(&input(&c, Some(&i4), None)).unwrap().ipv4.unwrap();
        assert!(v4.preserve_routes);
        assert_eq!(v4.routes, vec![]);
        assert_eq!(v4.default_route, subnet_v4_plan().default_route);
    }

    #[test]
    fn missing_prefix_uses_nm_defaults() {
        let c = config(true);
        let mut i4 = ip4_subnet();
        i4.remove(PREFIX);
        let mut i6 = ip6();
        i6.remove(PREFIX);
        let plan = build(&input(&c, Some(&i4), Some(&i6))).unwrap();
        assert_eq!(plan.ipv4.unwrap().prefix, 24);
        assert_eq!(plan.ipv6.unwrap().prefix, 128);
    }

    #[test]
    fn no_mtu_leaves_the_link_mtu_alone() {
        let mut c = config(false);
        c.remove(MTU);
        let i4 = ip4_subnet();
        assert_eq!(build(&input(&c, Some(&i4), None)).unwrap().link.mtu, None);
    }

    /// Builds with one key of one dict replaced (or removed with `None`).
    fn build_with(
        dict: DictName,
        key: &str,
        value: Option<OwnedVariant>,
    ) -> Result<IsolationPlan, PlanError> {
        let (mut c, mut i4, mut i6) = (config(true), ip4_subnet(), ip6());
        let target = match dict {
            DictName::Config => &mut c,
            DictName::Ip4Config => &mut i4,
            DictName::Ip6Config => &mut i6,
        };
        match value {
            Some(v) => target.insert(key.to_owned(), v),
            None => target.remove(key),
        };
        build(&input(&c, Some(&i4), Some(&i6)))
    }

    fn wrong_type(
        dict: DictName,
        key: &'static str,
        expected: &'static str,
        found: &str,
        value: &str,
    ) -> PlanError {
        PlanError::WrongType {
            dict,
            key,
            expected,
            found: found.to_owned(),
            value: value.to_owned(),
        }
    }

    fn invalid(dict: DictName, key: &'static str, value: &str, reason: &str) -> PlanError {
        PlanError::InvalidValue {
            dict,
            key,
            value: value.to_owned(),
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn wrong_types() {
        use DictName::*;
        let cases = [
            (
                build_with(Config, TUNDEV, Some(ov(5u32))),
                wrong_type(Config, TUNDEV, "a string (s)", "u", "uint32 5"),
            ),
            (
                build_with(Config, HAS_IP4, Some(ov("yes"))),
                wrong_type(Config, HAS_IP4, "a boolean (b)", "s", "\"yes\""),
            ),
            (
                build_with(Config, MTU, Some(ov(1500i32))),
                wrong_type(Config, MTU, "a uint32 (u)", "i", "1500"),
            ),
            (
                build_with(Config, GATEWAY, Some(ov("198.18.0.1"))),
                wrong_type(
                    Config,
                    GATEWAY,
                    "an IPv4 address as uint32 (u) or an IPv6 address as bytes (ay)",
                    "s",
                    "\"198.18.0.1\"",
                ),
            ),
            (
                build_with(Ip4Config, ADDRESS, Some(ov("198.19.0.2"))),
                wrong_type(
                    Ip4Config,
                    ADDRESS,
                    "an IPv4 address as uint32 (u)",
                    "s",
                    "\"198.19.0.2\"",
                ),
            ),
            (
                build_with(Ip4Config, PREFIX, Some(ov(24u8))),
                wrong_type(Ip4Config, PREFIX, "a uint32 (u)", "y", "byte 0x18"),
            ),
            (
                build_with(Ip4Config, DNS, Some(ov(vec![ay("fd00:198:19::1")]))),
                wrong_type(
                    Ip4Config,
                    DNS,
                    "an array of IPv4 addresses as uint32 (au)",
                    "aay",
                    &ov(vec![ay("fd00:198:19::1")]).to_string(),
                ),
            ),
            (
                build_with(Ip4Config, ROUTES, Some(ov(vec![v4("198.18.64.0"), 18]))),
                wrong_type(
                    Ip4Config,
                    ROUTES,
                    "an array of [dest, prefix, next-hop, metric] uint32 arrays (aau)",
                    "au",
                    &ov(vec![v4("198.18.64.0"), 18]).to_string(),
                ),
            ),
            (
                build_with(Ip4Config, DOMAINS, Some(ov("vpn.test"))),
                wrong_type(
                    Ip4Config,
                    DOMAINS,
                    "an array of strings (as)",
                    "s",
                    "\"vpn.test\"",
                ),
            ),
            (
                build_with(Ip4Config, NEVER_DEFAULT, Some(ov(1u32))),
                wrong_type(Ip4Config, NEVER_DEFAULT, "a boolean (b)", "u", "uint32 1"),
            ),
            (
                build_with(Ip6Config, ADDRESS, Some(ov(v4("198.19.0.2")))),
                wrong_type(
                    Ip6Config,
                    ADDRESS,
                    "an IPv6 address as bytes (ay)",
                    "u",
                    &ov(v4("198.19.0.2")).to_string(),
                ),
            ),
            (
                build_with(Ip6Config, ROUTES, Some(ov(vec![vec![1u32, 2, 3, 4]]))),
                wrong_type(
                    Ip6Config,
                    ROUTES,
                    "an array of (dest, prefix, next-hop, metric) structs (a(ayuayu))",
                    "aau",
                    "[[uint32 1, 2, 3, 4]]",
                ),
            ),
            (
                build_with(Ip6Config, DNS, Some(ov(vec![v4("198.19.0.1")]))),
                wrong_type(
                    Ip6Config,
                    DNS,
                    "an array of IPv6 addresses as bytes (aay)",
                    "au",
                    &ov(vec![v4("198.19.0.1")]).to_string(),
                ),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, Err(want));
        }
    }

    #[test]
    fn ipv4_zero_is_refused() {
        use DictName::*;
        for (dict, key, value) in [
            (Config, GATEWAY, ov(0u32)),
            (Ip4Config, ADDRESS, ov(0u32)),
            (Ip4Config, PTP, ov(0u32)),
            (Ip4Config, INTERNAL_GATEWAY, ov(0u32)),
            (Ip4Config, DNS, ov(vec![v4("198.19.0.1"), 0])),
        ] {
            assert_eq!(
                build_with(dict, key, Some(value)),
                Err(invalid(
                    dict,
                    key,
                    "0.0.0.0",
                    "the address 0.0.0.0 is not usable"
                ))
            );
        }
        assert_eq!(
            build_with(Ip6Config, ADDRESS, Some(ov(ay("::")))),
            Err(invalid(
                Ip6Config,
                ADDRESS,
                "::",
                "the address :: is not usable"
            ))
        );
    }

    #[test]
    fn prefixes_out_of_range_are_refused() {
        use DictName::*;
        for (dict, p, range) in [
            (Ip4Config, 33u32, "must be 1-32"),
            (Ip4Config, 0, "must be 1-32"),
            (Ip6Config, 129, "must be 1-128"),
            (Ip6Config, 0, "must be 1-128"),
            (Ip6Config, 4096, "must be 1-128"),
        ] {
            assert_eq!(
                build_with(dict, PREFIX, Some(ov(p))),
                Err(invalid(dict, PREFIX, &p.to_string(), range))
            );
        }

        let route4 = ov(vec![vec![v4("198.18.64.0"), 33, v4("198.19.0.1"), 0]]);
        let entry = match &*route4 {
            Variant::Array(a) => a.inner()[0].to_string(),
            _ => unreachable!(),
        };
        assert_eq!(
            build_with(Ip4Config, ROUTES, Some(route4)),
            Err(invalid(Ip4Config, ROUTES, &entry, "prefix 33 is over 32"))
        );

        let route6 = (ay("fd00:198:19:1::"), 129u32, ay("::"), 0u32);
        let entry = ov(route6.clone()).to_string();
        assert_eq!(
            build_with(Ip6Config, ROUTES, Some(ov(vec![route6]))),
            Err(invalid(Ip6Config, ROUTES, &entry, "prefix 129 is over 128"))
        );
    }

    #[test]
    fn ipv4_route_of_the_wrong_length_is_refused() {
        let routes = ov(vec![vec![v4("198.18.64.0"), 18, v4("198.19.0.1")]]);
        let entry = match &*routes {
            Variant::Array(a) => a.inner()[0].to_string(),
            _ => unreachable!(),
        };
        assert_eq!(
            build_with(DictName::Ip4Config, ROUTES, Some(routes)),
            Err(invalid(
                DictName::Ip4Config,
                ROUTES,
                &entry,
                "a route is [dest, prefix, next-hop, metric], got 3 items"
            ))
        );
    }

    #[test]
    fn truncated_ipv6_is_refused() {
        use DictName::*;
        let short = ay("fd00:198:19::1000")[..8].to_vec();
        let got8 = "an IPv6 address needs 16 bytes, got 8";
        assert_eq!(
            build_with(Ip6Config, ADDRESS, Some(ov(short.clone()))),
            Err(invalid(
                Ip6Config,
                ADDRESS,
                &ov(short.clone()).to_string(),
                got8
            ))
        );
        assert_eq!(
            build_with(Ip6Config, PTP, Some(ov(short.clone()))),
            Err(invalid(
                Ip6Config,
                PTP,
                &ov(short.clone()).to_string(),
                got8
            ))
        );
        assert_eq!(
            build_with(Config, GATEWAY, Some(ov(short.clone()))),
            Err(invalid(
                Config,
                GATEWAY,
                &ov(short.clone()).to_string(),
                got8
            ))
        );
        assert_eq!(
            build_with(Ip6Config, DNS, Some(ov(vec![short.clone()]))),
            Err(invalid(
                Ip6Config,
                DNS,
                &ov(short.clone()).to_string(),
                got8
            ))
        );
        let route = (short.clone(), 64u32, ay("::"), 0u32);
        assert_eq!(
            build_with(Ip6Config, ROUTES, Some(ov(vec![route.clone()]))),
            Err(invalid(Ip6Config, ROUTES, &ov(route).to_string(), got8))
        );
    }

    #[test]
    fn missing_tundev_is_refused() {
        let err = build_with(DictName::Config, TUNDEV, None).unwrap_err();
        assert_eq!(
            err,
            PlanError::MissingKey {
                dict: DictName::Config,
                key: TUNDEV,
                reason: "no device to move into the namespace (has-ip4=true, has-ip6=true)"
                    .to_owned(),
            }
        );
        assert_eq!(
            err.to_string(),
            "Config key \"tundev\" is missing: no device to move into the namespace \
             (has-ip4=true, has-ip6=true)"
        );
    }

    #[test]
    fn missing_gateway_or_address_is_refused() {
        assert!(matches!(
            build_with(DictName::Config, GATEWAY, None),
            Err(PlanError::MissingKey {
                dict: DictName::Config,
                key: GATEWAY,
                ..
            })
        ));
        assert!(matches!(
            build_with(DictName::Ip4Config, ADDRESS, None),
            Err(PlanError::MissingKey {
                dict: DictName::Ip4Config,
                key: ADDRESS,
                ..
            })
        ));
        assert!(matches!(
            build_with(DictName::Ip6Config, ADDRESS, None),
            Err(PlanError::MissingKey {
                dict: DictName::Ip6Config,
                key: ADDRESS,
                ..
            })
        ));
    }

    #[test]
    fn ip_dicts_must_match_has_ip() {
        let (c, i4, i6) = (config(true), ip4_subnet(), ip6());
        assert_eq!(
            build(&input(&c, Some(&i4), None)),
            Err(PlanError::MissingDict {
                dict: DictName::Ip6Config,
                key: HAS_IP6,
            })
        );
        let c = config(false);
        assert_eq!(
            build(&input(&c, Some(&i4), Some(&i6))),
            Err(PlanError::UnexpectedDict {
                dict: DictName::Ip6Config,
                key: HAS_IP6,
            })
        );
        let mut c = config(false);
        c.insert(HAS_IP4.to_owned(), ov(false));
        assert_eq!(
            build(&input(&c, Some(&i4), None)),
            Err(PlanError::UnexpectedDict {
                dict: DictName::Ip4Config,
                key: HAS_IP4,
            })
        );
    }

    #[test]
    fn bad_tundev_is_refused() {
        assert_eq!(
            build_with(DictName::Config, TUNDEV, Some(ov("../tun0"))),
            Err(invalid(
                DictName::Config,
                TUNDEV,
                "\"../tun0\"",
                "'/', ':', NUL and whitespace are not allowed"
            ))
        );
    }

    #[test]
    fn ifname_rules() {
        for ok in ["tun0", "tap-vpn.1", "a", "abcdefghijklmno", "tün0"] {
            assert_eq!(ok.parse::<IfName>().unwrap().as_str(), ok);
        }
        for (bad, reason) in [
            ("", "it is empty"),
            ("abcdefghijklmnop", "it is longer than 15 bytes"),
            ("tünnelnummer000", "it is longer than 15 bytes"),
            (".", "\".\" and \"..\" are not allowed"),
            ("..", "\".\" and \"..\" are not allowed"),
            ("tun/0", "'/', ':', NUL and whitespace are not allowed"),
            ("tun:0", "'/', ':', NUL and whitespace are not allowed"),
            ("tun 0", "'/', ':', NUL and whitespace are not allowed"),
            ("tun\t0", "'/', ':', NUL and whitespace are not allowed"),
            ("tun\n", "'/', ':', NUL and whitespace are not allowed"),
            ("tun\0", "'/', ':', NUL and whitespace are not allowed"),
            ("tun\u{a0}", "'/', ':', NUL and whitespace are not allowed"),
        ] {
            assert_eq!(
                bad.parse::<IfName>(),
                Err(PlanError::InvalidIfName {
                    value: bad.to_owned(),
                    reason,
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn search_domain_that_would_break_resolv_conf_is_refused() {
        let reason = "whitespace and control characters are not allowed in a search domain";
        assert_eq!(
            build_with(
                DictName::Ip4Config,
                DOMAINS,
                Some(ov(vec!["vpn.test\nnameserver 198.18.0.53"]))
            ),
            Err(invalid(
                DictName::Ip4Config,
                DOMAINS,
                "\"vpn.test\\nnameserver 198.18.0.53\"",
                reason
            ))
        );
        assert_eq!(
            build_with(DictName::Ip6Config, DOMAIN, Some(ov("a b"))),
            Err(invalid(DictName::Ip6Config, DOMAIN, "\"a b\"", reason))
        );
        assert_eq!(
            build_with(DictName::Ip4Config, DOMAIN, Some(ov(""))),
            Err(invalid(DictName::Ip4Config, DOMAIN, "\"\"", "it is empty"))
        );
    }

    #[test]
    fn mtu_out_of_range_is_refused() {
        let (mut c, i4) = (config(false), ip4_subnet());
        for mtu in [0u32, 67, 65536] {
            c.insert(MTU.to_owned(), ov(mtu));
            assert_eq!(
                build(&input(&c, Some(&i4), None)),
                Err(invalid(
                    DictName::Config,
                    MTU,
                    &mtu.to_string(),
                    "it must be 68-65535"
                ))
            );
        }
        c.insert(MTU.to_owned(), ov(1200u32));
        assert!(build(&input(&c, Some(&i4), None)).is_ok());
        assert_eq!(
            build_with(DictName::Config, MTU, Some(ov(1200u32))),
            Err(invalid(
                DictName::Config,
                MTU,
                "1200",
                "with IPv6 on the tun it must be 1280-65535"
            ))
        );
    }

    #[test]
    fn error_messages_name_dict_key_and_value() {
        assert_eq!(
            build_with(DictName::Ip4Config, ADDRESS, Some(ov(0u32)))
                .unwrap_err()
                .to_string(),
            "Ip4Config key \"address\" has an invalid value 0.0.0.0: the address 0.0.0.0 is not \
             usable"
        );
        assert_eq!(
            build_with(DictName::Config, TUNDEV, Some(ov(5u32)))
                .unwrap_err()
                .to_string(),
            "Config key \"tundev\" must be a string (s), got type u: uint32 5"
        );
        assert_eq!(
            build_with(DictName::Ip6Config, PREFIX, Some(ov(129u32)))
                .unwrap_err()
                .to_string(),
            "Ip6Config key \"prefix\" has an invalid value 129: must be 1-128"
        );
    }

    #[test]
    fn nsswitch_hosts_line_is_replaced_and_the_rest_kept() {
        assert_eq!(render_nsswitch(HOST_NSSWITCH), NETNS_NSSWITCH);
        // glibc skips leading blanks, allows blanks before ':' and takes the last `hosts` line.
        assert_eq!(
            render_nsswitch("  hosts : resolve\npasswd: files\r\nhosts\tfiles myhostname"),
            "hosts: files dns\npasswd: files\r\nhosts: files dns"
        );
        // Comments and other databases that start with "hosts" are not the hosts database.
        assert_eq!(
            render_nsswitch("#hosts: resolve\nhostsfoo: x\n"),
            "#hosts: resolve\nhostsfoo: x\nhosts: files dns\n"
        );
    }

    #[test]
    fn nsswitch_without_hosts_line_gets_one() {
        assert_eq!(render_nsswitch(""), "hosts: files dns\n");
        assert_eq!(
            render_nsswitch("passwd: files"),
            "passwd: files\nhosts: files dns\n"
        );
        assert_eq!(
            render_nsswitch("passwd: files\n"),
            "passwd: files\nhosts: files dns\n"
        );
    }

    #[test]
    fn isolated_nm_config_keeps_only_what_nm_needs() {
        let mut c = config(true);
        c.insert(BANNER.to_owned(), ov("Welcome to vpn.test"));
        c.insert("pac".to_owned(), ov("http://198.18.0.80/proxy.pac"));
        assert_eq!(
            isolated_nm_config(&c).unwrap(),
            dict(vec![
                (GATEWAY, ov(v4("198.18.0.1"))),
                (HAS_IP4, ov(false)),
                (HAS_IP6, ov(false)),
                (BANNER, ov("Welcome to vpn.test")),
                (CAN_PERSIST, ov(true)),
            ])
        );
    }

    #[test]
    fn isolated_nm_config_with_ipv6_gateway_and_nothing_optional() {
        let c = dict(vec![
            (GATEWAY, ov(ay("fd00:198:19:ffff::1"))),
            (TUNDEV, ov("tun0")),
            (MTU, ov(1500u32)),
            (HAS_IP6, ov(true)),
        ]);
        assert_eq!(
            isolated_nm_config(&c).unwrap(),
            dict(vec![
                (GATEWAY, ov(ay("fd00:198:19:ffff::1"))),
                (HAS_IP4, ov(false)),
                (HAS_IP6, ov(false)),
            ])
        );
    }

    #[test]
    fn isolated_nm_config_refuses_bad_values() {
        let mut c = config(false);
        c.insert(BANNER.to_owned(), ov(1u32));
        assert_eq!(
            isolated_nm_config(&c),
            Err(wrong_type(
                DictName::Config,
                BANNER,
                "a string (s)",
                "u",
                "uint32 1"
            ))
        );
        let mut c = config(false);
        c.insert(CAN_PERSIST.to_owned(), ov("yes"));
        assert_eq!(
            isolated_nm_config(&c),
            Err(wrong_type(
                DictName::Config,
                CAN_PERSIST,
                "a boolean (b)",
                "s",
                "\"yes\""
            ))
        );
        let mut c = config(false);
        c.remove(GATEWAY);
        assert!(matches!(
            isolated_nm_config(&c),
            Err(PlanError::MissingKey { key: GATEWAY, .. })
        ));
        let mut c = config(false);
        c.insert(GATEWAY.to_owned(), ov(0u32));
        assert_eq!(
            isolated_nm_config(&c),
            Err(invalid(
                DictName::Config,
                GATEWAY,
                "0.0.0.0",
                "the address 0.0.0.0 is not usable"
            ))
        );
    }
}
