//! RFC 8016: tickets kept, moves reported; against the scripted server and
//! against our own sans-IO server, in simulated time.

use std::net::SocketAddr;
use std::time::Instant;

use stun::attr::{self, Attribute};
use stun::{Message, Method};

use super::*;
use crate::server::{RelayAddresses, Server, ServerConfig};
use crate::{FiveTuple, Transport};

fn ticket_in(req: &[u8]) -> Option<Vec<u8>> {
    match Message::parse(req).unwrap().get(attr::MOBILITY_TICKET) {
        Some(Ok(Attribute::MobilityTicket(t))) => Some(t.to_vec()),
        _ => None,
    }
}

fn mobile(transport: Transport) -> ClientConfig {
    let mut c = config(transport);
    c.mobility = true;
    c
}

#[test]
fn asks_for_a_ticket_keeps_the_latest_and_moves_with_it() {
    let srv = FakeServer::new();
    let t0 = Instant::now();
    let mut c = Client::new(mobile(Transport::Udp), t0);
    c.allocate(t0).unwrap();
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    assert_eq!(
        ticket_in(&req),
        Some(vec![]),
        "an empty ticket asks for one"
    );
    deliver(&mut c, t0, &srv.challenge(&req));
    let req = srv.expect_request(&mut c, Method::ALLOCATE);
    let ok = srv.success(
        &req,
        &[
            Attribute::XorRelayedAddress(relayed_addr()),
            Attribute::Lifetime(600),
            Attribute::MobilityTicket(b"ticket-1"),
        ],
    );
    deliver(&mut c, t0, &ok);
    assert_eq!(c.mobility_ticket(), Some(&b"ticket-1"[..]));
    // The refresh carries it and the answer's ticket replaces it.
    let t1 = t0 + secs(480);
    c.handle_timeout(t1);
    let req = srv.expect_request(&mut c, Method::REFRESH);
    assert_eq!(ticket_in(&req).as_deref(), Some(&b"ticket-1"[..]));
    let ok = srv.success(
        &req,
        &[
            Attribute::Lifetime(600),
            Attribute::MobilityTicket(b"ticket-2"),
        ],
    );
    deliver(&mut c, t1, &ok);
    assert_eq!(c.mobility_ticket(), Some(&b"ticket-2"[..]));
    events(&mut c);
    // Move: a Refresh with the latest ticket on the new transport.
    c.move_to(t1, server_addr(), Transport::Tcp).unwrap();
    let req = srv.expect_request(&mut c, Method::REFRESH);
    assert_eq!(ticket_in(&req).as_deref(), Some(&b"ticket-2"[..]));
    srv.check_authenticated(&req);
    let ok = srv.success(
        &req,
        &[
            Attribute::Lifetime(300),
            Attribute::MobilityTicket(b"ticket-3"),
        ],
    );
    deliver(&mut c, t1, &ok);
    assert_eq!(
        events(&mut c),
        vec![Event::Moved {
            lifetime: secs(300)
        }]
    );
    assert_eq!(c.mobility_ticket(), Some(&b"ticket-3"[..]));
    assert_eq!(c.config().transport, Transport::Tcp);
    assert_eq!(c.relayed_addresses(), &[relayed_addr()]);
}

#[test]
fn refused_or_unanswered_moves_are_reported_and_the_allocation_stays() {
    let srv = FakeServer::new();
    let mut cfg = mobile(Transport::Udp);
    cfg.mobility = false;
    let (mut c, t0) = allocated(cfg, &srv);
    assert_eq!(
        c.move_to(t0, server_addr(), Transport::Udp),
        Err(ClientError::NoTicket)
    );
    // With a ticket: 441, then a move that gets no answer at all.
    let (mut c, t0) = allocated(mobile(Transport::Udp), &srv);
    assert!(c.mobility_ticket().is_none(), "the fake server gave none");
    c.ticket = Some(b"t".to_vec());
    c.move_to(t0, server_addr(), Transport::Udp).unwrap();
    let req = srv.expect_request(&mut c, Method::REFRESH);
    deliver(&mut c, t0, &srv.error(&req, 441, Mi::Valid));
    assert_eq!(events(&mut c), vec![Event::MoveFailed { code: 441 }]);
    assert_eq!(c.state(), ClientState::Allocated);
    c.move_to(t0, server_addr(), Transport::Udp).unwrap();
    let mut now = t0;
    for _ in 0..100 {
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        while c.poll_transmit().is_some() {}
        if c.outstanding_transactions() == 0 {
            break;
        }
    }
    let ev = events(&mut c);
    assert!(ev.contains(&Event::MoveFailed {
        code: LOCAL_FAILURE
    }));
    assert!(now - t0 < secs(60), "Rc transmissions, not forever");
    assert_eq!(c.state(), ClientState::Allocated);
}

/// Client and our server, wired in memory: the client's transmits go to
/// the server on `ft`, the server's to the client.
struct Wire {
    c: Client,
    s: Server,
    ft: FiveTuple,
    now: Instant,
}

impl Wire {
    fn pump(&mut self) {
        for _ in 0..20 {
            let mut moved = false;
            while let Some(t) = self.c.poll_transmit() {
                moved = true;
                assert!(self
                    .s
                    .handle_client_packet(self.now, self.ft, &t.payload)
                    .is_none());
            }
            while let Some(o) = self.s.poll_output() {
                moved = true;
                match o {
                    crate::server::Output::Transmit {
                        five_tuple,
                        payload,
                    } if five_tuple == self.ft => {
                        if self.ft.transport.is_stream() {
                            self.c.handle_stream_bytes(self.now, &payload).unwrap();
                        } else {
                            self.c.handle_datagram(self.now, self.ft.server, &payload);
                        }
                    }
                    crate::server::Output::BindRelay { token, .. } => {
                        self.s.relay_bound(self.now, token, Ok(()));
                    }
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
    }
}

#[test]
fn our_client_moves_its_allocation_on_our_server() {
    let creds =
        crate::auth::Credentials::new(REALM, [(USER, PASS)], Vec::<Vec<u8>>::new()).unwrap();
    let relay = RelayAddresses {
        ipv4: Some("192.0.2.10".parse().unwrap()),
        ..Default::default()
    };
    let now = Instant::now();
    let server: SocketAddr = server_addr();
    let ft = |client: &str, transport| FiveTuple {
        client: client.parse().unwrap(),
        server,
        transport,
    };
    let mut w = Wire {
        c: Client::new(mobile(Transport::Udp), now),
        s: Server::new(ServerConfig::new(creds, relay), now, 1_800_000_000),
        ft: ft("203.0.113.5:40000", Transport::Udp),
        now,
    };
    w.c.allocate(now).unwrap();
    w.pump();
    assert_eq!(w.c.state(), ClientState::Allocated);
    let relayed = w.c.relayed_addresses().to_vec();
    let first = w.c.mobility_ticket().unwrap().to_vec();
    // An address the default peer policy allows.
    let peer: SocketAddr = "93.184.216.34:5000".parse().unwrap();
    w.c.bind_channel(now, peer).unwrap();
    w.pump();
    assert!(events(&mut w.c).contains(&Event::ChannelBound {
        peer,
        channel: 0x4000
    }));
    // A new circuit: another address and a stream. The nonce is bound to
    // the old address, so the move goes through a 438 and a retry.
    w.ft = ft("198.51.100.99:1234", Transport::Tcp);
    w.c.move_to(now, server, Transport::Tcp).unwrap();
    w.pump();
    let ev = events(&mut w.c);
    assert!(matches!(ev[..], [Event::Moved { .. }]), "{ev:?}");
    assert_ne!(w.c.mobility_ticket().unwrap(), &first[..]);
    assert_eq!(w.c.relayed_addresses(), &relayed[..]);
    assert!(w.s.has_allocation(&w.ft));
    assert_eq!(w.s.stats().mobility_moves, 1);
    // The channel still carries data from the new flow.
    w.c.send_to(now, peer, b"hi").unwrap();
    let t = w.c.poll_transmit().unwrap();
    let sent =
        w.s.handle_client_packet(now, w.ft, &t.payload)
            .expect("relayed");
    assert_eq!((sent.peer, sent.data), (peer, &b"hi"[..]));
}
