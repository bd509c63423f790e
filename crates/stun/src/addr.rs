//! MAPPED-ADDRESS style address values, plain and XOR-ed (RFC 8489 §14.1, §14.2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{Error, Result};
use crate::message::TransactionId;
use crate::MAGIC_COOKIE;

/// An address family as carried in STUN/TURN attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// 0x01
    V4,
    /// 0x02
    V6,
}

impl AddressFamily {
    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            AddressFamily::V4 => 0x01,
            AddressFamily::V6 => 0x02,
        }
    }

    /// From the wire value.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0x01 => Some(AddressFamily::V4),
            0x02 => Some(AddressFamily::V6),
            _ => None,
        }
    }

    /// The family of an address.
    pub const fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddressFamily::V4,
            IpAddr::V6(_) => AddressFamily::V6,
        }
    }
}

/// Length of an encoded address value.
pub const fn encoded_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn xor_key(txid: &TransactionId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    k[4..].copy_from_slice(&txid.0);
    k
}

/// Decodes an address value; with `xor`, undoes the XOR with the magic cookie
/// and transaction ID.
pub fn decode(typ: u16, v: &[u8], xor: Option<&TransactionId>) -> Result<SocketAddr> {
    if v.len() < 4 {
        return Err(Error::InvalidAttribute(typ));
    }
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    let key = xor.map(xor_key);
    if key.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    match (AddressFamily::from_u8(v[1]), v.len()) {
        (Some(AddressFamily::V4), 8) => {
            let mut o = [v[4], v[5], v[6], v[7]];
            if let Some(k) = key {
                for (b, k) in o.iter_mut().zip(k.iter()) {
                    *b ^= k;
                }
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        (Some(AddressFamily::V6), 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[4..20]);
            if let Some(k) = key {
                for (b, k) in o.iter_mut().zip(k.iter()) {
                    *b ^= k;
                }
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => Err(Error::InvalidAttribute(typ)),
    }
}

/// Encodes an address value into `out` (which must be exactly
/// [`encoded_len`] bytes).
pub fn encode(addr: &SocketAddr, xor: Option<&TransactionId>, out: &mut [u8]) {
    let key = xor.map(xor_key);
    let mut port = addr.port();
    if key.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out[0] = 0;
    out[1] = AddressFamily::of(&addr.ip()).to_u8();
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => out[4..8].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out[4..20].copy_from_slice(&ip.octets()),
    }
    if let Some(k) = key {
        for (b, k) in out[4..].iter_mut().zip(k.iter()) {
            *b ^= k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_round_trip_v4_v6() {
        let txid = TransactionId([7; 12]);
        for a in [
            "192.0.2.1:32853",
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut buf = vec![0u8; encoded_len(&a)];
            encode(&a, Some(&txid), &mut buf);
            assert_eq!(decode(0x20, &buf, Some(&txid)).unwrap(), a);
            encode(&a, None, &mut buf);
            assert_eq!(decode(0x01, &buf, None).unwrap(), a);
        }
    }

    #[test]
    fn bad_family_or_length() {
        assert!(decode(1, &[0, 3, 0, 0, 1, 2, 3, 4], None).is_err());
        assert!(decode(1, &[0, 1, 0, 0, 1, 2, 3], None).is_err());
        assert!(decode(1, &[0, 2, 0, 0, 1, 2, 3, 4], None).is_err());
        assert!(decode(1, &[], None).is_err());
    }
}
