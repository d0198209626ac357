//! Who a request comes from. Behind a load balancer every connection's peer
//! is the balancer, so per-address budgets (failed verifications, connections)
//! would lump every client — Meta included — into one. Peers listed as trusted
//! proxies are believed about the client in `X-Forwarded-For`; nobody else is,
//! since any client can write that header.

use std::{net::IpAddr, str::FromStr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::Error;

/// The networks whose connections come from our own proxies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// At most this many `X-Forwarded-For` hops are read: a client cannot make
/// the edge walk a header of thousands.
const MAX_HOPS: usize = 32;

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// A network (`10.0.0.0/8`) or a single address (`10.0.0.7`).
    pub fn parse_net(s: &str) -> Result<IpNet, Error> {
        let s = s.trim();
        IpNet::from_str(s)
            .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
            .map_err(|_| {
                Error::Config(format!(
                    "trusted proxy {s:?} is neither an address nor a network (CIDR)"
                ))
            })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy;
    /// then the right-most `X-Forwarded-For` entry that is not one (entries
    /// left of it were written by the client and prove nothing). An entry
    /// that is not an address stops the walk at the last proxy reached.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("?").rsplit(','))
            .take(MAX_HOPS);
        for hop in hops {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// `1.2.3.4`, `2001:db8::1`, `1.2.3.4:567` or `[2001:db8::1]:567`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    IpAddr::from_str(hop)
        .ok()
        .or_else(|| std::net::SocketAddr::from_str(hop).ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter()
                .map(|n| TrustedProxies::parse_net(n).expect("net"))
                .collect(),
        )
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.client_ip(ip("203.0.113.9"), &xff(&["198.51.100.1"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &xff(&["198.51.100.1"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8", "192.0.2.7"]);
        // The client wrote 1.1.1.1 itself; the balancer appended what it saw.
        let h = xff(&["1.1.1.1, 203.0.113.9, 192.0.2.7"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &h), ip("203.0.113.9"));
        // Several header lines read as one list, in order.
        let h = xff(&["1.1.1.1", "203.0.113.9:4711", "10.0.0.2"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &h), ip("203.0.113.9"));
        let h = xff(&["[2001:db8::5]:443"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &h), ip("2001:db8::5"));
    }

    #[test]
    fn a_missing_or_broken_header_leaves_the_last_proxy_reached() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.client_ip(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        let h = xff(&["203.0.113.9, junk, 10.0.0.2"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &h), ip("10.0.0.2"));
        // Only proxies all the way: the left-most is as far as we can see.
        let h = xff(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &h), ip("10.0.0.3"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks_and_bad_networks_are_named() {
        let p = proxies(&["127.0.0.1"]);
        assert!(p.contains(ip("::ffff:127.0.0.1")));
        let e = TrustedProxies::parse_net("10.0.0.0/33").expect_err("bad");
        assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
    }
}
