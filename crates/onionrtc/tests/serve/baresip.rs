//! SIP over TLS (`[sip] listen = ["tls://…"]`, docs/sip.md) against
//! Debian's baresip, a softphone we did not write: two phones register
//! over TLS (verifying our certificate against a test CA), one calls the
//! other, the callee answers, and nothing the callee received names the
//! caller's address (127.0.0.2 in its Via and Contact; the caller's own
//! trace must contain it, so the grep can fail). A client that speaks
//! plain SIP to the TLS port is dropped and counted.

use super::sip_ws::{sip_config, users, DOMAIN};
use super::*;

const PASSWORD: &str = "baresip-password-1";
/// The caller's and the callee's SIP addresses.
const CALLER_IP: &str = "127.0.0.2";
const CALLEE_IP: &str = "127.0.0.3";

/// A baresip phone in its own config dir, stdout (with the SIP trace) in
/// `DIR/NAME.log`, killed by PID on drop.
struct Phone {
    _proc: Proc,
    log: std::path::PathBuf,
}

impl Phone {
    /// Starts `user`'s phone: SIP from `ip` over TLS to `sip`, trusting
    /// `ca`, auto-answering; `commands` run at start (`-e`).
    fn start(
        work: &Path,
        user: &str,
        ip: &str,
        sip: SocketAddr,
        ca: &Path,
        commands: &[&str],
    ) -> Phone {
        let dir = work.join(format!("baresip-{user}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config"),
            format!(
                "poll_method epoll\nsip_listen {ip}:0\nsip_cafile {}\n\
                 module_path /usr/lib/baresip/modules\nmodule g711.so\n\
                 module_app account.so\nmodule_app menu.so\n",
                ca.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{user}@{DOMAIN};transport=tls>;auth_pass={PASSWORD};\
                 outbound=\"sip:{sip};transport=tls\";regint=600;answermode=auto;\
                 audio_source=null,null;audio_player=null,null\n"
            ),
        )
        .unwrap();
        let log = work.join(format!("{user}.log"));
        let mut extra = Vec::new();
        for c in commands {
            extra.extend(["-e", c]);
        }
        Phone {
            _proc: super::sip_rtp::baresip(&dir, &log, &extra),
            log,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits (bounded) until the log contains `needle`.
    fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        testkit::wait_until(limit, Duration::from_millis(100), || {
            self.text().contains(needle).then_some(())
        })
        .is_some()
    }
}

#[test]
fn baresip_phones_register_and_call_over_tls() {
    if !testkit::require_tool("baresip", &["-h"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let ca = testkit::nginx::TestCa::new(work, &["127.0.0.1", DOMAIN]);
    let sip_port = testkit::free_port();
    let (config, _) = sip_config(
        work,
        &format!(
            "listen = [\"tls://127.0.0.1:{sip_port}\"]\ndigest_algorithms = [\"MD5\"]\n\
             tls_cert = {:?}\ntls_key = {:?}\n",
            ca.cert.display().to_string(),
            ca.key.display().to_string()
        ),
    );
    let data = work.join("data");
    for user in ["alice", "bob"] {
        let (ok, _, err) = users(&config, &data, &["add", user], &format!("{PASSWORD}\n"));
        assert!(ok, "{err}");
    }
    let server = Server::start(&config, &data);
    let sip = SocketAddr::from(([127, 0, 0, 1], sip_port));
    let ready = testkit::wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        TcpStream::connect(sip).ok()
    });
    assert!(ready.is_some(), "{}", server.stderr_tail());

    // A client that speaks plain SIP to the TLS port: dropped, counted.
    {
        let mut s = TcpStream::connect(sip).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = s.write_all(b"OPTIONS sip:sip.test SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(
            !String::from_utf8_lossy(&buf[..n]).contains("SIP/2.0"),
            "plain SIP answered on the TLS port"
        );
    }
    let counted = testkit::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let (_, m) = server.get_as_operator("/metrics", &data);
        (metric_sum(&m, "onionrtc_sip_tls_handshake_failures_total") >= 1).then_some(())
    });
    assert!(counted.is_some(), "{}", server.stderr_tail());

    let limit = Duration::from_secs(30);
    let bob = Phone::start(work, "bob", CALLEE_IP, sip, &ca.ca, &[]);
    assert!(
        bob.wait_for("200 OK () [1 binding]", limit),
        "bob did not register over TLS:\n{}\nserve:\n{}",
        bob.text(),
        server.stderr_tail()
    );
    let alice = Phone::start(
        work,
        "alice",
        CALLER_IP,
        sip,
        &ca.ca,
        &[&format!("/dial bob@{DOMAIN}")],
    );
    for (who, phone) in [("alice", &alice), ("bob", &bob)] {
        assert!(
            phone.wait_for("Call established", limit),
            "{who}'s call was not established:\nalice:\n{}\nbob:\n{}\nserve:\n{}",
            alice.text(),
            bob.text(),
            server.stderr_tail()
        );
    }
    let (_, m) = server.get_as_operator("/metrics", &data);
    assert!(
        metric_sum(&m, "onionrtc_sip_calls_answered_total") >= 1,
        "{m}"
    );

    // Both phones spoke TLS; the caller's own trace names its address (so
    // the grep below can fail), the callee's trace does not.
    let (a, b) = (alice.text(), bob.text());
    assert!(
        a.contains("SIP/2.0/TLS") && b.contains("SIP/2.0/TLS"),
        "{a}\n{b}"
    );
    assert!(a.contains(CALLER_IP), "{a}");
    let invite = b
        .find("INVITE sip:")
        .map(|i| &b[i..])
        .unwrap_or_else(|| panic!("bob received no INVITE:\n{b}"));
    assert!(
        !invite.contains(CALLER_IP),
        "the caller's address reached the callee:\n{invite}"
    );
}
