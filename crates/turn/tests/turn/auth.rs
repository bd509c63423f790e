//! Credentials and quotas end to end: stale nonces, TURN REST credentials,
//! the per-user allocation quota.

use std::time::Duration;

use turn::auth::{rest_password, rest_username};
use turn::client::{ClientState, Event};
use turn::server::AuthFailure;
use turn::Transport;

use crate::net::{peer, server_config, Net, REST_SECRET, UNIX0};

#[test]
fn stale_nonce_is_recovered_transparently() {
    let mut config = server_config();
    config.nonce_lifetime = Duration::from_secs(60);
    let mut net = Net::with_config(config);
    let c = net.add_client(Transport::Udp, "alice", "alice-pw");
    net.allocate(c).unwrap();

    // Past the nonce lifetime between two requests: each one meets 438,
    // takes the new nonce and is resent, and the caller sees only success.
    let p = peer(1, 5000);
    net.run(Duration::from_secs(61));
    net.bind(c, p).unwrap();
    assert_eq!(
        net.server
            .stats()
            .auth_failures_for(AuthFailure::StaleNonce),
        1
    );
    net.run(Duration::from_secs(61));
    let p2 = peer(2, 5000);
    net.bind(c, p2).unwrap();
    net.run(Duration::from_secs(61));
    let now = net.now;
    net.client(c).deallocate(now).unwrap();
    let e = net.wait_event(c, Duration::from_secs(5), |e| {
        matches!(e, Event::Deallocated | Event::RefreshFailed { .. })
    });
    assert_eq!(e, Some(Event::Deallocated));
    assert_eq!(net.server.allocation_count(), 0);

    let s = net.server.stats();
    assert!(s.auth_failures_for(AuthFailure::StaleNonce) >= 3);
    let others: u64 = AuthFailure::ALL
        .iter()
        .filter(|f| **f != AuthFailure::StaleNonce)
        .map(|f| s.auth_failures_for(*f))
        .sum();
    assert_eq!(others, 0);
    assert!(net.failures(c).is_empty(), "{:?}", net.failures(c));
}

#[test]
fn rest_credentials() {
    let mut net = Net::new();
    let user = rest_username(UNIX0 + 3600, Some("carol"));
    let pass = rest_password(REST_SECRET, &user);
    let c = net.add_client(Transport::Udp, &user, &pass);
    let relayed = net.allocate(c).unwrap();
    assert_eq!(relayed.len(), 1);
    net.bind(c, peer(3, 3000)).unwrap();

    // Expired an hour ago: the retry with credentials gets 401 again and
    // the client reports it.
    let old = rest_username(UNIX0 - 3600, Some("carol"));
    let old_pass = rest_password(REST_SECRET, &old);
    let d = net.add_client(Transport::Udp, &old, &old_pass);
    assert_eq!(net.allocate(d), Err(401));
    assert_eq!(net.client(d).state(), ClientState::Failed);
    let s = net.server.stats();
    assert!(s.auth_failures_for(AuthFailure::Expired) >= 1);

    // Signed with another secret.
    let forged = rest_password(b"not-the-secret", &user);
    let e = net.add_client(Transport::Udp, &user, &forged);
    assert_eq!(net.allocate(e), Err(401));
    assert!(
        net.server
            .stats()
            .auth_failures_for(AuthFailure::BadIntegrity)
            >= 1
    );
    assert_eq!(net.server.allocation_count(), 1);
}

#[test]
fn per_user_quota() {
    let mut config = server_config();
    config.limits.allocations_per_static_user = 2;
    let mut net = Net::with_config(config);
    let clients: Vec<usize> = (0..3)
        .map(|_| net.add_client(Transport::Udp, "alice", "alice-pw"))
        .collect();
    assert!(net.allocate(clients[0]).is_ok());
    assert!(net.allocate(clients[1]).is_ok());
    assert_eq!(net.allocate(clients[2]), Err(486));
    assert_eq!(net.server.stats().quota_refused, 1);

    // Another user is not affected.
    let bob = net.add_client(Transport::Udp, "bob", "bob-pw");
    assert!(net.allocate(bob).is_ok());

    // Once alice deletes one, the third client gets in.
    let now = net.now;
    net.client(clients[0]).deallocate(now).unwrap();
    net.wait_event(clients[0], Duration::from_secs(5), |e| {
        matches!(e, Event::Deallocated)
    })
    .unwrap();
    assert!(net.allocate(clients[2]).is_ok());
    assert_eq!(net.server.allocation_count(), 3);
}
