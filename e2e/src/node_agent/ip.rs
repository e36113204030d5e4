//! Pod addresses. Every Pod gets its own loopback address so two Pods can listen on the same
//! port, as they would with real pod networking. Linux routes all of 127.0.0.0/8 to `lo`, so
//! nothing has to be configured; this module only hands addresses out and takes them back.
//! It must never hand out an address outside 127.0.0.0/8.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The first address handed to a Pod (127.0.0.1 stays the node's own address).
pub const FIRST_POD_IP: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 2);
/// The last address that may be handed out.
const LAST_POD_IP: Ipv4Addr = Ipv4Addr::new(127, 254, 255, 254);

/// The node's address (status.hostIP of every Pod).
pub const HOST_IP: &str = "127.0.0.1";

/// Addresses in use by live Pods.
#[derive(Debug, Default)]
pub struct IpPool {
    used: BTreeSet<u32>,
}

impl IpPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the lowest free address from 127.1.0.2 upward (skipping `.0` and `.255`).
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let mut candidate = u32::from(FIRST_POD_IP);
        while candidate <= u32::from(LAST_POD_IP) {
            let last_octet = candidate & 0xff;
            if last_octet != 0 && last_octet != 255 && !self.used.contains(&candidate) {
                self.used.insert(candidate);
                return Some(Ipv4Addr::from(candidate));
            }
            candidate += 1;
        }
        None
    }

    /// Takes `ip` if it is a pod address and free (a Pod that already had it before the agent
    /// restarted keeps it). Returns whether it was taken.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        let raw = u32::from(ip);
        let in_range = (u32::from(FIRST_POD_IP)..=u32::from(LAST_POD_IP)).contains(&raw);
        in_range && self.used.insert(raw)
    }

    /// Gives `ip` back.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_and_reused_after_release() {
        let mut pool = IpPool::new();
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(a, Ipv4Addr::new(127, 1, 0, 2));
        assert_eq!(b, Ipv4Addr::new(127, 1, 0, 3));
        pool.release(a);
        assert_eq!(pool.allocate().unwrap(), a);
        assert_eq!(pool.used.len(), 2);
    }

    #[test]
    fn skips_network_and_broadcast_looking_octets() {
        let mut pool = IpPool::new();
        let ips: Vec<_> = (0..300).map(|_| pool.allocate().unwrap()).collect();
        assert!(
            ips.iter()
                .all(|ip| ip.octets()[3] != 0 && ip.octets()[3] != 255)
        );
        assert!(ips.iter().all(|ip| ip.is_loopback()));
        assert_eq!(ips[253], Ipv4Addr::new(127, 1, 1, 1));
    }

    #[test]
    fn reserve_keeps_a_previous_address_but_not_foreign_ones() {
        let mut pool = IpPool::new();
        assert!(pool.reserve(Ipv4Addr::new(127, 1, 0, 2)));
        assert!(!pool.reserve(Ipv4Addr::new(127, 1, 0, 2)));
        assert!(!pool.reserve(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!pool.reserve(HOST_IP.parse().unwrap()));
        assert_eq!(pool.allocate().unwrap(), Ipv4Addr::new(127, 1, 0, 3));
    }
}
