//! What differs between IPv4 and IPv6 in NM's dicts: how an address, a list of them and a route
//! are encoded, and the prefix bounds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zbus::Variant;

use super::nm::{DictName, Expected, Reader, GATEWAY, ROUTES};
use super::{check_cap, PlanError, Route, MAX_ROUTES};

/// A reader of one of the planner's dicts.
pub type NmReader<'a> = Reader<'a, DictName>;

const IP4: Expected = Expected::new("u", "an IPv4 address as uint32 (u)");
const IP4_LIST: Expected = Expected::new("au", "an array of IPv4 addresses as uint32 (au)");
const IP4_ROUTES: Expected = Expected::new(
    "aau",
    "an array of [dest, prefix, next-hop, metric] uint32 arrays (aau)",
);
const IP4_ROUTE: Expected = Expected::new("au", "a uint32 array (au)");
const IP6: Expected = Expected::new("ay", "an IPv6 address as bytes (ay)");
const IP6_LIST: Expected = Expected::new("aay", "an array of IPv6 addresses as bytes (aay)");
const IP6_ROUTES: Expected = Expected::new(
    "a(ayuayu)",
    "an array of (dest, prefix, next-hop, metric) structs (a(ayuayu))",
);
const IP6_ROUTE: Expected = Expected::new("(ayuayu)", "a (dest, prefix, next-hop, metric) struct");
const GATEWAY_ADDRESS: Expected = Expected::new(
    "u or ay",
    "an IPv4 address as uint32 (u) or an IPv6 address as bytes (ay)",
);

/// What differs between IPv4 and IPv6 in NM's dicts.
pub trait Family: Copy + Eq + Into<IpAddr> + Sized {
    const MAX_PREFIX: u8;
    /// What NetworkManager assumes when the dict has no `prefix`.
    const DEFAULT_PREFIX: u8;
    /// The type of a list of addresses, as `dns`.
    const LIST_TYPE: Expected;
    /// The type of `routes`.
    const ROUTES_TYPE: Expected;
    /// `routes` as an error names it.
    const ROUTES_LIST: &'static str;

    /// One address, never the unspecified one.
    fn decode(r: &NmReader<'_>, key: &'static str, v: &Variant<'_>) -> Result<Self, PlanError>;
    /// One entry of `routes`.
    fn decode_route(r: &NmReader<'_>, entry: &Variant<'_>) -> Result<Route<Self>, PlanError>;

    fn read(r: &NmReader<'_>, key: &'static str) -> Result<Option<Self>, PlanError> {
        r.get(key).map(|v| Self::decode(r, key, v)).transpose()
    }

    fn read_list(r: &NmReader<'_>, key: &'static str) -> Result<Vec<Self>, PlanError> {
        let items = r.array(key, Self::LIST_TYPE)?;
        items
            .unwrap_or_default()
            .iter()
            .map(|item| Self::decode(r, key, item))
            .collect()
    }

    fn read_routes(r: &NmReader<'_>) -> Result<Vec<Route<Self>>, PlanError> {
        let entries = r.array(ROUTES, Self::ROUTES_TYPE)?.unwrap_or_default();
        check_cap(Self::ROUTES_LIST, entries.len(), MAX_ROUTES)?;
        entries
            .iter()
            .map(|entry| Self::decode_route(r, entry))
            .collect()
    }
}

impl NmReader<'_> {
    /// The external VPN gateway: `u` for IPv4, `ay` for IPv6. NM fails a VPN without one.
    pub fn gateway(&self) -> Result<IpAddr, PlanError> {
        let v = self.get(GATEWAY).ok_or_else(|| {
            self.missing(
                GATEWAY,
                "NetworkManager fails a VPN without its external gateway",
            )
        })?;
        match v {
            Variant::U32(_) => Ipv4Addr::decode(self, GATEWAY, v).map(IpAddr::V4),
            Variant::Array(_) => Ipv6Addr::decode(self, GATEWAY, v).map(IpAddr::V6),
            _ => Err(self.wrong_type(GATEWAY, GATEWAY_ADDRESS, v)),
        }
    }
}

fn route_prefix(
    r: &NmReader<'_>,
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
    const LIST_TYPE: Expected = IP4_LIST;
    const ROUTES_TYPE: Expected = IP4_ROUTES;
    const ROUTES_LIST: &'static str = "ipv4 routes";

    fn decode(r: &NmReader<'_>, key: &'static str, v: &Variant<'_>) -> Result<Self, PlanError> {
        let Variant::U32(n) = v else {
            return Err(r.wrong_type(key, IP4, v));
        };
        nonzero_ip4(r, key, *n)
    }

    /// One `[dest, prefix, next-hop, metric]` entry of an IPv4 `routes`.
    fn decode_route(r: &NmReader<'_>, entry: &Variant<'_>) -> Result<Route<Self>, PlanError> {
        let Variant::Array(fields) = entry else {
            return Err(r.wrong_type(ROUTES, IP4_ROUTE, entry));
        };
        let [Variant::U32(dest), Variant::U32(prefix), Variant::U32(via), Variant::U32(metric)] =
            fields.inner()
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
    }
}

/// NM's dicts carry an IPv4 address as the u32 whose native-endian bytes are the octets.
fn ip4(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(n.to_ne_bytes())
}

fn nonzero_ip4(r: &NmReader<'_>, key: &'static str, n: u32) -> Result<Ipv4Addr, PlanError> {
    let a = ip4(n);
    if a.is_unspecified() {
        return Err(r.invalid(key, a, "the address 0.0.0.0 is not usable"));
    }
    Ok(a)
}

impl Family for Ipv6Addr {
    const MAX_PREFIX: u8 = 128;
    const DEFAULT_PREFIX: u8 = 128;
    const LIST_TYPE: Expected = IP6_LIST;
    const ROUTES_TYPE: Expected = IP6_ROUTES;
    const ROUTES_LIST: &'static str = "ipv6 routes";

    fn decode(r: &NmReader<'_>, key: &'static str, v: &Variant<'_>) -> Result<Self, PlanError> {
        nonzero_ip6(r, key, v, v)
    }

    /// One `(dest, prefix, next-hop, metric)` entry of an IPv6 `routes`.
    fn decode_route(r: &NmReader<'_>, entry: &Variant<'_>) -> Result<Route<Self>, PlanError> {
        let wrong = || r.wrong_type(ROUTES, IP6_ROUTE, entry);
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
    }
}

/// An `ay` IPv6 address; `whole` is what an error shows: the value, or the route it sits in.
fn ip6(
    r: &NmReader<'_>,
    key: &'static str,
    whole: &Variant<'_>,
    v: &Variant<'_>,
) -> Result<Ipv6Addr, PlanError> {
    let wrong = || r.wrong_type(key, IP6, whole);
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
    r: &NmReader<'_>,
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
