//! TURN URLs as `iceServers` gives them (RFC 7065): `turn:HOST:PORT?transport=udp|tcp`,
//! `turns:HOST:PORT?transport=tcp`.

use crate::RelayProtocol;

/// One TURN URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl {
    /// UDP, TCP or TLS to the relay.
    pub protocol: RelayProtocol,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Parses one URL; `None` for STUN URLs and anything malformed.
pub fn parse_turn_url(url: &str) -> Option<TurnUrl> {
    let (scheme, rest) = url.split_once(':')?;
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let transport = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("transport="))
        .unwrap_or(if scheme == "turns" { "tcp" } else { "udp" });
    let protocol = match (scheme, transport) {
        ("turn", "udp") => RelayProtocol::Udp,
        ("turn", "tcp") => RelayProtocol::Tcp,
        ("turns", "tcp") => RelayProtocol::Tls,
        _ => return None,
    };
    let default_port = if protocol == RelayProtocol::Tls {
        5349
    } else {
        3478
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        (
            h.to_owned(),
            p.strip_prefix(':')
                .map_or(Some(default_port), |p| p.parse().ok())?,
        )
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (hostport.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(TurnUrl {
        protocol,
        host,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls() {
        assert_eq!(
            parse_turn_url("turn:127.0.0.1:3478?transport=udp"),
            Some(TurnUrl {
                protocol: RelayProtocol::Udp,
                host: "127.0.0.1".into(),
                port: 3478
            })
        );
        assert_eq!(
            parse_turn_url("turns:relay.example:443?transport=tcp").map(|u| u.protocol),
            Some(RelayProtocol::Tls)
        );
        assert_eq!(
            parse_turn_url("turn:[::1]:3478?transport=tcp").map(|u| u.host),
            Some("::1".into())
        );
        assert_eq!(parse_turn_url("stun:127.0.0.1:3478"), None);
        assert_eq!(parse_turn_url("turn::1"), None);
    }
}
