//! coturn's `turnutils_uclient` → connector (UDP or TCP) → our relay over
//! TLS or TCP (direct) → `turnutils_peer` on loopback: nothing is lost.

use crate::support::*;

#[test]
fn udp_clients_over_tls() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start();
    let (_peer, pport) = start_peer();
    let rt = runtime();
    let h = start(&rt, tls_config(&relay));
    rt.block_on(h.probe_relay()).unwrap();
    let port = h.turn_addr().port();
    assert_clean(
        uclient(port, pport, &["-c", "-n", "100", "-l", "120", "-z", "5"]),
        100,
    );
    assert_clean(
        uclient(
            port,
            pport,
            &["-c", "-m", "10", "-n", "50", "-l", "120", "-z", "5"],
        ),
        500,
    );
    // Without -c: an RTP and an RTCP allocation (EVEN-PORT, RESERVATION-TOKEN).
    assert_clean(
        uclient(port, pport, &["-n", "50", "-l", "120", "-z", "5"]),
        100,
    );
    let [udp, tcp, tls] = allocations(&relay);
    assert_eq!((udp, tcp), (0, 0), "everything came over TLS");
    assert!(tls >= 13, "{tls} TLS allocations");
    let s = h.stats();
    assert!(s.flows_total >= 13, "{s:?}");
    assert_eq!(s.redials, 0, "{s:?}");
    assert_eq!(s.upstream_failures, 0, "{s:?}");
    // TLS records cost bytes: the wire carries more than the TURN bytes.
    assert!(s.bytes_up > s.payload_up && s.payload_up > 0, "{s:?}");
    assert!(s.bytes_down > s.payload_down && s.payload_down > 0, "{s:?}");
    stop(&rt, h);
}

#[test]
fn udp_clients_over_tcp() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start();
    let (_peer, pport) = start_peer();
    let rt = runtime();
    let h = start(&rt, config(relay.tcp_endpoint()));
    let port = h.turn_addr().port();
    assert_clean(
        uclient(port, pport, &["-c", "-n", "100", "-l", "120", "-z", "5"]),
        100,
    );
    assert_clean(
        uclient(
            port,
            pport,
            &["-c", "-m", "10", "-n", "50", "-l", "120", "-z", "5"],
        ),
        500,
    );
    // Send indications instead of channels.
    assert_clean(
        uclient(
            port,
            pport,
            &["-c", "-s", "-n", "50", "-l", "120", "-z", "5"],
        ),
        50,
    );
    let [udp, tcp, tls] = allocations(&relay);
    assert_eq!((udp, tls), (0, 0));
    assert!(tcp >= 12, "{tcp} TCP allocations");
    let s = h.stats();
    // Over plain TCP the wire carries the TURN bytes plus ChannelData
    // padding (120-byte payloads: 124-byte frames, already aligned).
    assert!(s.bytes_up >= s.payload_up, "{s:?}");
    assert!(s.bytes_down >= s.payload_down, "{s:?}");
    stop(&rt, h);
}

#[test]
fn tcp_clients_over_tls() {
    if !require_coturn() {
        return;
    }
    let relay = TestRelay::start();
    let (_peer, pport) = start_peer();
    let rt = runtime();
    let h = start(&rt, tls_config(&relay));
    let port = h.turn_addr().port();
    assert_clean(
        uclient(
            port,
            pport,
            &["-t", "-c", "-m", "5", "-n", "50", "-l", "120", "-z", "5"],
        ),
        250,
    );
    let [udp, tcp, tls] = allocations(&relay);
    assert_eq!((udp, tcp), (0, 0));
    assert!(tls >= 5, "{tls} TLS allocations");
    stop(&rt, h);
}

#[test]
fn odd_payloads_are_padded_and_trimmed() {
    if !require_coturn() {
        return;
    }
    // 121-byte payloads: ChannelData is padded to 128 on the stream and
    // must reach uclient as exactly 125 bytes (it checks the content).
    let relay = TestRelay::start();
    let (_peer, pport) = start_peer();
    let rt = runtime();
    let h = start(&rt, config(relay.tcp_endpoint()));
    let port = h.turn_addr().port();
    assert_clean(
        uclient(port, pport, &["-c", "-n", "100", "-l", "121", "-z", "5"]),
        100,
    );
    let s = h.stats();
    assert!(s.bytes_up > s.payload_up, "padding on the stream: {s:?}");
    stop(&rt, h);
}
