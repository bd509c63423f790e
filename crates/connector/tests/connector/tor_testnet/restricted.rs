//! A network that lets only TCP to port 443 out (nftables in a client
//! namespace: loopback accepted first, then `tcp dport 443`, policy drop).
//! Inside it, coturn's client reaches the relay through the connector in
//! `--via direct` TLS mode to the relay's TLS listener on port 443, while a
//! direct UDP attempt to the relay fails. A second client namespace without
//! the firewall shows that the same direct attempt works otherwise.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use connector::Via;

use super::{
    allocations_since, assert_all_from, client_of, connector_config, log_lines, parse_report,
    uclient_args, uclient_report, RunningConnector, ServerSide, TURN_PORT,
};
use crate::support::require_coturn;

#[test]
fn only_tcp_443_out() {
    if !require_coturn() || !testkit::require_tool("nft", &["--version"]) {
        return;
    }
    if !testkit::netns::run_isolated("tor_testnet::restricted::only_tcp_443_out") {
        return;
    }
    let t0 = Instant::now();
    let side = ServerSide::start();
    let relay_udp = SocketAddr::from((side.topo.server_addr(), TURN_PORT));
    let restricted = side.topo.add_client().unwrap();
    restricted.install_firewall(&[443]).unwrap();
    let open = side.topo.add_client().unwrap();

    // TCP leaves only to port 443 (the relay also listens on TCP 3478).
    let relay_tcp = SocketAddr::from((side.topo.server_addr(), TURN_PORT));
    let relay_443 = SocketAddr::from((side.topo.server_addr(), 443));
    let probe = Duration::from_secs(3);
    assert!(restricted.tcp_probe(relay_443, probe));
    assert!(!restricted.tcp_probe(relay_tcp, probe));
    assert!(open.tcp_probe(relay_tcp, probe));

    // Control: without the firewall, direct UDP TURN works.
    let log_from = log_lines().lock().unwrap().len();
    let r = uclient_report(
        open.command("turnutils_uclient")
            .args(uclient_args(relay_udp, 1, 20)),
        Duration::from_secs(60),
    );
    assert_eq!((r.sent, r.received, r.lost), (20, 20, 0), "{r:?}");
    assert_all_from(&allocations_since(log_from), open.addr());

    // Behind the firewall the same attempt gets nowhere (sendto: EPERM).
    let log_from = log_lines().lock().unwrap().len();
    let t = Instant::now();
    let out = restricted.run(
        "turnutils_uclient",
        uclient_args(relay_udp, 1, 20),
        Duration::from_secs(20),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "direct UDP behind the firewall: {} after {:?}; last lines:\n{}",
        out.status,
        t.elapsed(),
        text.lines().rev().take(4).collect::<Vec<_>>().join("\n")
    );
    // uclient gives up at once: the output chain's drop makes sendto fail.
    let report = parse_report(&out);
    assert!(
        !out.status.success() && report.is_none_or(|r| r.received == 0),
        "direct UDP got through the firewall: {report:?}\n{text}"
    );
    assert!(text.contains("Operation not permitted"), "{text}");
    let leaked: Vec<_> = allocations_since(log_from)
        .into_iter()
        .filter(|l| client_of(l).ip() == restricted.addr())
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");

    // The connector in the restricted namespace, TLS to port 443 directly.
    let log_from = log_lines().lock().unwrap().len();
    let conn = RunningConnector::start(
        Some(&restricted),
        connector_config(side.relay_url("tls", 443), Via::Direct, &side.spki),
    );
    let r = uclient_report(
        restricted
            .command("turnutils_uclient")
            .args(uclient_args(conn.turn_addr(), 2, 100)),
        Duration::from_secs(60),
    );
    eprintln!("uclient behind the 443-only firewall, via the connector: {r:?}");
    assert_eq!((r.sent, r.received, r.lost), (200, 200, 0), "{r:?}");
    let allocations = allocations_since(log_from);
    assert_eq!(
        allocations.len(),
        4,
        "two per uclient client: {allocations:#?}"
    );
    assert_all_from(&allocations, restricted.addr());
    assert!(
        allocations.iter().all(|l| l.contains("transport=tls")),
        "{allocations:#?}"
    );
    drop(conn);
    eprintln!("only_tcp_443_out: {:?}", t0.elapsed());
}
