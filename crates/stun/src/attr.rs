//! STUN/TURN attributes: type codes, zero-copy decoding and value encoding.
//!
//! Sources: RFC 8489 §14 (STUN), RFC 8656 §18 (TURN), RFC 6062 §6.2
//! (CONNECTION-ID) and RFC 8445 §16.1 (ICE).

use std::net::SocketAddr;

use crate::addr::{self, AddressFamily};
use crate::error::{Error, Result};
use crate::message::TransactionId;

/// MAPPED-ADDRESS (RFC 8489).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME (RFC 8489).
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY (RFC 8489).
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE (RFC 8489).
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES (RFC 8489).
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// CHANNEL-NUMBER (RFC 8656).
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// LIFETIME (RFC 8656).
pub const LIFETIME: u16 = 0x000D;
/// XOR-PEER-ADDRESS (RFC 8656).
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA (RFC 8656).
pub const DATA: u16 = 0x0013;
/// REALM (RFC 8489).
pub const REALM: u16 = 0x0014;
/// NONCE (RFC 8489).
pub const NONCE: u16 = 0x0015;
/// XOR-RELAYED-ADDRESS (RFC 8656).
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// REQUESTED-ADDRESS-FAMILY (RFC 8656).
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// EVEN-PORT (RFC 8656).
pub const EVEN_PORT: u16 = 0x0018;
/// REQUESTED-TRANSPORT (RFC 8656).
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// DONT-FRAGMENT (RFC 8656).
pub const DONT_FRAGMENT: u16 = 0x001A;
/// MESSAGE-INTEGRITY-SHA256 (RFC 8489).
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// PASSWORD-ALGORITHM (RFC 8489).
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// USERHASH (RFC 8489).
pub const USERHASH: u16 = 0x001E;
/// XOR-MAPPED-ADDRESS (RFC 8489).
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RESERVATION-TOKEN (RFC 8656).
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// PRIORITY (RFC 8445).
pub const PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE (RFC 8445).
pub const USE_CANDIDATE: u16 = 0x0025;
/// CONNECTION-ID (RFC 6062).
pub const CONNECTION_ID: u16 = 0x002A;
/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// ADDRESS-ERROR-CODE (RFC 8656).
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
/// PASSWORD-ALGORITHMS (RFC 8489).
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// ALTERNATE-DOMAIN (RFC 8489).
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
/// ICMP (RFC 8656).
pub const ICMP: u16 = 0x8004;
/// SOFTWARE (RFC 8489).
pub const SOFTWARE: u16 = 0x8022;
/// ALTERNATE-SERVER (RFC 8489).
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// FINGERPRINT (RFC 8489).
pub const FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED (RFC 8445).
pub const ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING (RFC 8445).
pub const ICE_CONTROLLING: u16 = 0x802A;
/// MOBILITY-TICKET (RFC 8016): empty in an Allocate (the client asks for
/// mobility), an opaque ticket in responses and in a Refresh that moves
/// the allocation to a new 5-tuple.
pub const MOBILITY_TICKET: u16 = 0x8030;

/// Every attribute type this crate decodes, with its RFC name.
pub const KNOWN: [(u16, &str); 35] = [
    (MAPPED_ADDRESS, "MAPPED-ADDRESS"),
    (USERNAME, "USERNAME"),
    (MESSAGE_INTEGRITY, "MESSAGE-INTEGRITY"),
    (ERROR_CODE, "ERROR-CODE"),
    (UNKNOWN_ATTRIBUTES, "UNKNOWN-ATTRIBUTES"),
    (CHANNEL_NUMBER, "CHANNEL-NUMBER"),
    (LIFETIME, "LIFETIME"),
    (XOR_PEER_ADDRESS, "XOR-PEER-ADDRESS"),
    (DATA, "DATA"),
    (REALM, "REALM"),
    (NONCE, "NONCE"),
    (XOR_RELAYED_ADDRESS, "XOR-RELAYED-ADDRESS"),
    (REQUESTED_ADDRESS_FAMILY, "REQUESTED-ADDRESS-FAMILY"),
    (EVEN_PORT, "EVEN-PORT"),
    (REQUESTED_TRANSPORT, "REQUESTED-TRANSPORT"),
    (DONT_FRAGMENT, "DONT-FRAGMENT"),
    (MESSAGE_INTEGRITY_SHA256, "MESSAGE-INTEGRITY-SHA256"),
    (PASSWORD_ALGORITHM, "PASSWORD-ALGORITHM"),
    (USERHASH, "USERHASH"),
    (XOR_MAPPED_ADDRESS, "XOR-MAPPED-ADDRESS"),
    (RESERVATION_TOKEN, "RESERVATION-TOKEN"),
    (PRIORITY, "PRIORITY"),
    (USE_CANDIDATE, "USE-CANDIDATE"),
    (CONNECTION_ID, "CONNECTION-ID"),
    (ADDITIONAL_ADDRESS_FAMILY, "ADDITIONAL-ADDRESS-FAMILY"),
    (ADDRESS_ERROR_CODE, "ADDRESS-ERROR-CODE"),
    (PASSWORD_ALGORITHMS, "PASSWORD-ALGORITHMS"),
    (ALTERNATE_DOMAIN, "ALTERNATE-DOMAIN"),
    (ICMP, "ICMP"),
    (SOFTWARE, "SOFTWARE"),
    (ALTERNATE_SERVER, "ALTERNATE-SERVER"),
    (FINGERPRINT, "FINGERPRINT"),
    (ICE_CONTROLLED, "ICE-CONTROLLED"),
    (ICE_CONTROLLING, "ICE-CONTROLLING"),
    (MOBILITY_TICKET, "MOBILITY-TICKET"),
];

/// Whether this crate knows the attribute type.
pub fn is_known(typ: u16) -> bool {
    KNOWN.iter().any(|(t, _)| *t == typ)
}

/// The RFC name of an attribute type, or `"unknown"`.
pub fn name(typ: u16) -> &'static str {
    KNOWN
        .iter()
        .find(|(t, _)| *t == typ)
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

/// Maximum MOBILITY-TICKET length in bytes: tickets are opaque to clients,
/// ours are 64 bytes and coturn's a few hundred; anything longer is refused.
pub const MAX_MOBILITY_TICKET: usize = 1024;
/// Maximum USERNAME length in bytes (RFC 8489 §14.3: fewer than 509).
pub const MAX_USERNAME: usize = 508;
/// Maximum length in bytes of REALM, NONCE, SOFTWARE and reason phrases
/// (128 characters of up to 6 bytes; RFC 8489 §14).
pub const MAX_TEXT: usize = 763;
/// Maximum ALTERNATE-DOMAIN length (RFC 8489 §14.16).
pub const MAX_DOMAIN: usize = 255;

/// An attribute as it sits in a message: type, value (without padding) and
/// offset of its header in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Attribute type.
    pub typ: u16,
    /// Value, without padding.
    pub value: &'a [u8],
    /// Offset of the attribute header from the start of the message.
    pub offset: usize,
}

/// ERROR-CODE value (RFC 8489 §14.8): code 300–699 and a reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// The code, e.g. 401.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

/// ADDRESS-ERROR-CODE value (RFC 8656 §18.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressErrorCode<'a> {
    /// The family the error is about.
    pub family: AddressFamily,
    /// The code, e.g. 440.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

/// ICMP value (RFC 8656 §18.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    /// ICMP type (7 bits).
    pub icmp_type: u8,
    /// ICMP code (9 bits).
    pub icmp_code: u16,
    /// Error data (e.g. the next-hop MTU).
    pub error_data: u32,
}

/// One entry of PASSWORD-ALGORITHMS, or the value of PASSWORD-ALGORITHM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithmEntry<'a> {
    /// Algorithm number (0x0001 MD5, 0x0002 SHA-256).
    pub algorithm: u16,
    /// Parameters (empty for MD5 and SHA-256).
    pub params: &'a [u8],
}

/// PASSWORD-ALGORITHMS value: a validated list of entries, kept as wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithms<'a>(&'a [u8]);

impl<'a> PasswordAlgorithms<'a> {
    /// Validates wire bytes.
    pub fn from_wire(v: &'a [u8]) -> Result<Self> {
        let mut it = PasswordAlgorithmsIter { rest: v };
        for e in &mut it {
            e?;
        }
        Ok(PasswordAlgorithms(v))
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The entries.
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithmEntry<'a>> + 'a {
        PasswordAlgorithmsIter { rest: self.0 }.filter_map(|e| e.ok())
    }
}

struct PasswordAlgorithmsIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PasswordAlgorithmsIter<'a> {
    type Item = Result<PasswordAlgorithmEntry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = decode_password_algorithm(PASSWORD_ALGORITHMS, self.rest);
        match r {
            Ok((e, used)) => {
                self.rest = self.rest.get(used..).unwrap_or(&[]);
                Some(Ok(e))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Decodes one algorithm entry; returns it and the bytes it used (padded).
fn decode_password_algorithm(typ: u16, v: &[u8]) -> Result<(PasswordAlgorithmEntry<'_>, usize)> {
    if v.len() < 4 {
        return Err(Error::InvalidAttribute(typ));
    }
    let algorithm = u16::from_be_bytes([v[0], v[1]]);
    let plen = usize::from(u16::from_be_bytes([v[2], v[3]]));
    let params = v.get(4..4 + plen).ok_or(Error::InvalidAttribute(typ))?;
    let used = (4 + plen + 3) & !3;
    Ok((
        PasswordAlgorithmEntry { algorithm, params },
        used.min(v.len()),
    ))
}

/// UNKNOWN-ATTRIBUTES value: a list of 16-bit types, kept as wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAttributes<'a>(&'a [u8]);

impl<'a> UnknownAttributes<'a> {
    /// Validates wire bytes (an even number of them).
    pub fn from_wire(v: &'a [u8]) -> Result<Self> {
        if !v.len().is_multiple_of(2) {
            return Err(Error::InvalidAttribute(UNKNOWN_ATTRIBUTES));
        }
        Ok(UnknownAttributes(v))
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The attribute types listed.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.0
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }
}

/// A decoded attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute<'a> {
    /// MAPPED-ADDRESS.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS.
    XorMappedAddress(SocketAddr),
    /// USERNAME (UTF-8, at most 508 bytes).
    Username(&'a str),
    /// USERHASH: SHA-256(username ":" realm).
    UserHash([u8; 32]),
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    MessageIntegrity([u8; 20]),
    /// MESSAGE-INTEGRITY-SHA256 (16 to 32 bytes, a multiple of 4).
    MessageIntegritySha256(&'a [u8]),
    /// FINGERPRINT.
    Fingerprint(u32),
    /// ERROR-CODE.
    ErrorCode(ErrorCode<'a>),
    /// REALM.
    Realm(&'a str),
    /// NONCE.
    Nonce(&'a str),
    /// PASSWORD-ALGORITHMS.
    PasswordAlgorithms(PasswordAlgorithms<'a>),
    /// PASSWORD-ALGORITHM.
    PasswordAlgorithm(PasswordAlgorithmEntry<'a>),
    /// UNKNOWN-ATTRIBUTES.
    UnknownAttributes(UnknownAttributes<'a>),
    /// SOFTWARE.
    Software(&'a str),
    /// ALTERNATE-SERVER.
    AlternateServer(SocketAddr),
    /// ALTERNATE-DOMAIN.
    AlternateDomain(&'a str),
    /// CHANNEL-NUMBER.
    ChannelNumber(u16),
    /// LIFETIME in seconds.
    Lifetime(u32),
    /// XOR-PEER-ADDRESS.
    XorPeerAddress(SocketAddr),
    /// DATA.
    Data(&'a [u8]),
    /// XOR-RELAYED-ADDRESS.
    XorRelayedAddress(SocketAddr),
    /// REQUESTED-ADDRESS-FAMILY.
    RequestedAddressFamily(AddressFamily),
    /// EVEN-PORT with its R (reserve next port) bit.
    EvenPort(bool),
    /// REQUESTED-TRANSPORT: an IP protocol number (17 UDP, 6 TCP).
    RequestedTransport(u8),
    /// DONT-FRAGMENT.
    DontFragment,
    /// RESERVATION-TOKEN.
    ReservationToken([u8; 8]),
    /// ADDITIONAL-ADDRESS-FAMILY (must be IPv6).
    AdditionalAddressFamily(AddressFamily),
    /// ADDRESS-ERROR-CODE.
    AddressErrorCode(AddressErrorCode<'a>),
    /// ICMP.
    Icmp(Icmp),
    /// CONNECTION-ID.
    ConnectionId(u32),
    /// PRIORITY.
    Priority(u32),
    /// USE-CANDIDATE.
    UseCandidate,
    /// ICE-CONTROLLED tie-breaker.
    IceControlled(u64),
    /// ICE-CONTROLLING tie-breaker.
    IceControlling(u64),
    /// MOBILITY-TICKET (RFC 8016): opaque, empty when requesting one.
    MobilityTicket(&'a [u8]),
    /// Any other type, undecoded.
    Unknown {
        /// The type.
        typ: u16,
        /// The value.
        value: &'a [u8],
    },
}

fn text(typ: u16, v: &[u8], max: usize) -> Result<&str> {
    if v.len() > max {
        return Err(Error::InvalidAttribute(typ));
    }
    std::str::from_utf8(v).map_err(|_| Error::InvalidAttribute(typ))
}

fn fixed<const N: usize>(typ: u16, v: &[u8]) -> Result<[u8; N]> {
    v.try_into().map_err(|_| Error::InvalidAttribute(typ))
}

fn decode_error_code(typ: u16, v: &[u8]) -> Result<(u16, &str)> {
    if v.len() < 4 {
        return Err(Error::InvalidAttribute(typ));
    }
    let class = u16::from(v[2] & 0x07);
    let number = u16::from(v[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(Error::InvalidAttribute(typ));
    }
    Ok((class * 100 + number, text(typ, &v[4..], MAX_TEXT)?))
}

fn family_attr(typ: u16, v: &[u8]) -> Result<AddressFamily> {
    let b = fixed::<4>(typ, v)?;
    AddressFamily::from_u8(b[0]).ok_or(Error::InvalidAttribute(typ))
}

impl<'a> Attribute<'a> {
    /// Decodes a raw attribute. `txid` is needed for XOR-ed IPv6 addresses.
    pub fn decode(raw: RawAttribute<'a>, txid: &TransactionId) -> Result<Self> {
        let v = raw.value;
        let t = raw.typ;
        Ok(match t {
            MAPPED_ADDRESS => Attribute::MappedAddress(addr::decode(t, v, None)?),
            XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(addr::decode(t, v, Some(txid))?),
            USERNAME => Attribute::Username(text(t, v, MAX_USERNAME)?),
            USERHASH => Attribute::UserHash(fixed(t, v)?),
            MESSAGE_INTEGRITY => Attribute::MessageIntegrity(fixed(t, v)?),
            MESSAGE_INTEGRITY_SHA256 => {
                if !(16..=32).contains(&v.len()) || !v.len().is_multiple_of(4) {
                    return Err(Error::InvalidAttribute(t));
                }
                Attribute::MessageIntegritySha256(v)
            }
            FINGERPRINT => Attribute::Fingerprint(u32::from_be_bytes(fixed(t, v)?)),
            ERROR_CODE => {
                let (code, reason) = decode_error_code(t, v)?;
                Attribute::ErrorCode(ErrorCode { code, reason })
            }
            REALM => Attribute::Realm(text(t, v, MAX_TEXT)?),
            NONCE => Attribute::Nonce(text(t, v, MAX_TEXT)?),
            PASSWORD_ALGORITHMS => Attribute::PasswordAlgorithms(PasswordAlgorithms::from_wire(v)?),
            PASSWORD_ALGORITHM => {
                let (e, _) = decode_password_algorithm(t, v)?;
                if 4 + e.params.len() != v.len() {
                    return Err(Error::InvalidAttribute(t));
                }
                Attribute::PasswordAlgorithm(e)
            }
            UNKNOWN_ATTRIBUTES => Attribute::UnknownAttributes(UnknownAttributes::from_wire(v)?),
            SOFTWARE => Attribute::Software(text(t, v, MAX_TEXT)?),
            ALTERNATE_SERVER => Attribute::AlternateServer(addr::decode(t, v, None)?),
            ALTERNATE_DOMAIN => Attribute::AlternateDomain(text(t, v, MAX_DOMAIN)?),
            CHANNEL_NUMBER => {
                let b = fixed::<4>(t, v)?;
                Attribute::ChannelNumber(u16::from_be_bytes([b[0], b[1]]))
            }
            LIFETIME => Attribute::Lifetime(u32::from_be_bytes(fixed(t, v)?)),
            XOR_PEER_ADDRESS => Attribute::XorPeerAddress(addr::decode(t, v, Some(txid))?),
            DATA => Attribute::Data(v),
            XOR_RELAYED_ADDRESS => Attribute::XorRelayedAddress(addr::decode(t, v, Some(txid))?),
            REQUESTED_ADDRESS_FAMILY => Attribute::RequestedAddressFamily(family_attr(t, v)?),
            EVEN_PORT => {
                if v.len() != 1 {
                    return Err(Error::InvalidAttribute(t));
                }
                Attribute::EvenPort(v[0] & 0x80 != 0)
            }
            REQUESTED_TRANSPORT => Attribute::RequestedTransport(fixed::<4>(t, v)?[0]),
            DONT_FRAGMENT => {
                if !v.is_empty() {
                    return Err(Error::InvalidAttribute(t));
                }
                Attribute::DontFragment
            }
            RESERVATION_TOKEN => Attribute::ReservationToken(fixed(t, v)?),
            ADDITIONAL_ADDRESS_FAMILY => Attribute::AdditionalAddressFamily(family_attr(t, v)?),
            ADDRESS_ERROR_CODE => {
                let family = AddressFamily::from_u8(*v.first().ok_or(Error::InvalidAttribute(t))?)
                    .ok_or(Error::InvalidAttribute(t))?;
                let (code, reason) = decode_error_code(t, v)?;
                Attribute::AddressErrorCode(AddressErrorCode {
                    family,
                    code,
                    reason,
                })
            }
            ICMP => {
                let b = fixed::<8>(t, v)?;
                let tc = u16::from_be_bytes([b[2], b[3]]);
                Attribute::Icmp(Icmp {
                    icmp_type: (tc >> 9) as u8,
                    icmp_code: tc & 0x01FF,
                    error_data: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                })
            }
            CONNECTION_ID => Attribute::ConnectionId(u32::from_be_bytes(fixed(t, v)?)),
            PRIORITY => Attribute::Priority(u32::from_be_bytes(fixed(t, v)?)),
            USE_CANDIDATE => {
                if !v.is_empty() {
                    return Err(Error::InvalidAttribute(t));
                }
                Attribute::UseCandidate
            }
            ICE_CONTROLLED => Attribute::IceControlled(u64::from_be_bytes(fixed(t, v)?)),
            ICE_CONTROLLING => Attribute::IceControlling(u64::from_be_bytes(fixed(t, v)?)),
            MOBILITY_TICKET => {
                if v.len() > MAX_MOBILITY_TICKET {
                    return Err(Error::InvalidAttribute(t));
                }
                Attribute::MobilityTicket(v)
            }
            _ => Attribute::Unknown { typ: t, value: v },
        })
    }

    /// The attribute type.
    pub fn typ(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Attribute::Username(_) => USERNAME,
            Attribute::UserHash(_) => USERHASH,
            Attribute::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Attribute::MessageIntegritySha256(_) => MESSAGE_INTEGRITY_SHA256,
            Attribute::Fingerprint(_) => FINGERPRINT,
            Attribute::ErrorCode(_) => ERROR_CODE,
            Attribute::Realm(_) => REALM,
            Attribute::Nonce(_) => NONCE,
            Attribute::PasswordAlgorithms(_) => PASSWORD_ALGORITHMS,
            Attribute::PasswordAlgorithm(_) => PASSWORD_ALGORITHM,
            Attribute::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Attribute::Software(_) => SOFTWARE,
            Attribute::AlternateServer(_) => ALTERNATE_SERVER,
            Attribute::AlternateDomain(_) => ALTERNATE_DOMAIN,
            Attribute::ChannelNumber(_) => CHANNEL_NUMBER,
            Attribute::Lifetime(_) => LIFETIME,
            Attribute::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Attribute::Data(_) => DATA,
            Attribute::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Attribute::RequestedAddressFamily(_) => REQUESTED_ADDRESS_FAMILY,
            Attribute::EvenPort(_) => EVEN_PORT,
            Attribute::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Attribute::DontFragment => DONT_FRAGMENT,
            Attribute::ReservationToken(_) => RESERVATION_TOKEN,
            Attribute::AdditionalAddressFamily(_) => ADDITIONAL_ADDRESS_FAMILY,
            Attribute::AddressErrorCode(_) => ADDRESS_ERROR_CODE,
            Attribute::Icmp(_) => ICMP,
            Attribute::ConnectionId(_) => CONNECTION_ID,
            Attribute::Priority(_) => PRIORITY,
            Attribute::UseCandidate => USE_CANDIDATE,
            Attribute::IceControlled(_) => ICE_CONTROLLED,
            Attribute::IceControlling(_) => ICE_CONTROLLING,
            Attribute::MobilityTicket(_) => MOBILITY_TICKET,
            Attribute::Unknown { typ, .. } => *typ,
        }
    }

    /// Length of the encoded value (without header and padding), or an error
    /// if the value cannot be encoded.
    pub fn value_len(&self) -> Result<usize> {
        let n = match self {
            Attribute::MappedAddress(a)
            | Attribute::XorMappedAddress(a)
            | Attribute::AlternateServer(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => addr::encoded_len(a),
            Attribute::Username(s) => check_len(s.len(), MAX_USERNAME)?,
            Attribute::UserHash(_) => 32,
            Attribute::MessageIntegrity(_) => 20,
            Attribute::MessageIntegritySha256(v) => {
                if !(16..=32).contains(&v.len()) || v.len() % 4 != 0 {
                    return Err(Error::ValueTooLong);
                }
                v.len()
            }
            Attribute::Fingerprint(_)
            | Attribute::ChannelNumber(_)
            | Attribute::Lifetime(_)
            | Attribute::RequestedAddressFamily(_)
            | Attribute::RequestedTransport(_)
            | Attribute::AdditionalAddressFamily(_)
            | Attribute::ConnectionId(_)
            | Attribute::Priority(_) => 4,
            Attribute::ErrorCode(e) => {
                check_code(e.code)?;
                4 + check_len(e.reason.len(), MAX_TEXT)?
            }
            Attribute::AddressErrorCode(e) => {
                check_code(e.code)?;
                4 + check_len(e.reason.len(), MAX_TEXT)?
            }
            Attribute::Realm(s) | Attribute::Nonce(s) | Attribute::Software(s) => {
                check_len(s.len(), MAX_TEXT)?
            }
            Attribute::AlternateDomain(s) => check_len(s.len(), MAX_DOMAIN)?,
            Attribute::PasswordAlgorithms(p) => p.as_bytes().len(),
            Attribute::PasswordAlgorithm(e) => 4 + e.params.len(),
            Attribute::UnknownAttributes(u) => u.as_bytes().len(),
            Attribute::Data(d) => d.len(),
            Attribute::MobilityTicket(t) => check_len(t.len(), MAX_MOBILITY_TICKET)?,
            Attribute::EvenPort(_) => 1,
            Attribute::DontFragment | Attribute::UseCandidate => 0,
            Attribute::ReservationToken(_) | Attribute::IceControlled(_) => 8,
            Attribute::IceControlling(_) | Attribute::Icmp(_) => 8,
            Attribute::Unknown { value, .. } => value.len(),
        };
        if n > usize::from(u16::MAX) - 4 {
            return Err(Error::ValueTooLong);
        }
        Ok(n)
    }

    /// Writes the value into `out`, which is exactly [`Attribute::value_len`] bytes.
    pub fn encode_value(&self, txid: &TransactionId, out: &mut [u8]) {
        match self {
            Attribute::MappedAddress(a) | Attribute::AlternateServer(a) => {
                addr::encode(a, None, out)
            }
            Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => addr::encode(a, Some(txid), out),
            Attribute::Username(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s)
            | Attribute::Software(s)
            | Attribute::AlternateDomain(s) => out.copy_from_slice(s.as_bytes()),
            Attribute::UserHash(h) => out.copy_from_slice(h),
            Attribute::MessageIntegrity(h) => out.copy_from_slice(h),
            Attribute::MessageIntegritySha256(h) => out.copy_from_slice(h),
            Attribute::Fingerprint(v)
            | Attribute::Lifetime(v)
            | Attribute::ConnectionId(v)
            | Attribute::Priority(v) => out.copy_from_slice(&v.to_be_bytes()),
            Attribute::ErrorCode(e) => write_error_code(0, e.code, e.reason, out),
            Attribute::AddressErrorCode(e) => {
                write_error_code(e.family.to_u8(), e.code, e.reason, out)
            }
            Attribute::PasswordAlgorithms(p) => out.copy_from_slice(p.as_bytes()),
            Attribute::PasswordAlgorithm(e) => {
                out[0..2].copy_from_slice(&e.algorithm.to_be_bytes());
                out[2..4].copy_from_slice(&(e.params.len() as u16).to_be_bytes());
                out[4..].copy_from_slice(e.params);
            }
            Attribute::UnknownAttributes(u) => out.copy_from_slice(u.as_bytes()),
            Attribute::ChannelNumber(n) => {
                out[0..2].copy_from_slice(&n.to_be_bytes());
                out[2..4].fill(0);
            }
            Attribute::Data(d) | Attribute::MobilityTicket(d) => out.copy_from_slice(d),
            Attribute::RequestedAddressFamily(f) | Attribute::AdditionalAddressFamily(f) => {
                out.copy_from_slice(&[f.to_u8(), 0, 0, 0])
            }
            Attribute::EvenPort(r) => out[0] = if *r { 0x80 } else { 0 },
            Attribute::RequestedTransport(p) => out.copy_from_slice(&[*p, 0, 0, 0]),
            Attribute::DontFragment | Attribute::UseCandidate => {}
            Attribute::ReservationToken(t) => out.copy_from_slice(t),
            Attribute::Icmp(i) => {
                out[0..2].fill(0);
                let tc = (u16::from(i.icmp_type & 0x7F) << 9) | (i.icmp_code & 0x01FF);
                out[2..4].copy_from_slice(&tc.to_be_bytes());
                out[4..8].copy_from_slice(&i.error_data.to_be_bytes());
            }
            Attribute::IceControlled(v) | Attribute::IceControlling(v) => {
                out.copy_from_slice(&v.to_be_bytes())
            }
            Attribute::Unknown { value, .. } => out.copy_from_slice(value),
        }
    }
}

fn check_len(n: usize, max: usize) -> Result<usize> {
    if n > max {
        Err(Error::ValueTooLong)
    } else {
        Ok(n)
    }
}

fn check_code(code: u16) -> Result<()> {
    if (300..=699).contains(&code) {
        Ok(())
    } else {
        Err(Error::ValueTooLong)
    }
}

fn write_error_code(first: u8, code: u16, reason: &str, out: &mut [u8]) {
    out[0] = first;
    out[1] = 0;
    out[2] = (code / 100) as u8;
    out[3] = (code % 100) as u8;
    out[4..].copy_from_slice(reason.as_bytes());
}

/// The reason phrase RFC 8489 / RFC 8656 / RFC 6062 suggest for an error code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthenticated",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        405 => "Mobility Forbidden",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_bad_lengths() {
        let txid = TransactionId([0; 12]);
        let cases: &[(u16, &[u8])] = &[
            (LIFETIME, &[0, 0, 1]),
            (CHANNEL_NUMBER, &[0x40]),
            (EVEN_PORT, &[]),
            (DONT_FRAGMENT, &[1]),
            (USERHASH, &[0; 31]),
            (MESSAGE_INTEGRITY, &[0; 19]),
            (MESSAGE_INTEGRITY_SHA256, &[0; 12]),
            (MESSAGE_INTEGRITY_SHA256, &[0; 18]),
            (ERROR_CODE, &[0, 0, 2, 0]),
            (ERROR_CODE, &[0, 0, 4, 100]),
            (UNKNOWN_ATTRIBUTES, &[0, 1, 2]),
            (PASSWORD_ALGORITHMS, &[0, 1, 0, 8, 1]),
            (REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]),
            (ADDRESS_ERROR_CODE, &[9, 0, 4, 40]),
            (USERNAME, &[0xff, 0xfe]),
            (ICMP, &[0; 7]),
            (MOBILITY_TICKET, &[0; MAX_MOBILITY_TICKET + 1]),
        ];
        for (t, v) in cases {
            let raw = RawAttribute {
                typ: *t,
                value: v,
                offset: 20,
            };
            assert!(
                Attribute::decode(raw, &txid).is_err(),
                "{} {:?}",
                name(*t),
                v
            );
        }
    }

    #[test]
    fn names() {
        assert_eq!(name(XOR_PEER_ADDRESS), "XOR-PEER-ADDRESS");
        assert_eq!(name(0x7777), "unknown");
        assert!(is_known(CONNECTION_ID));
    }
}
