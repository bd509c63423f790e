//! Debian's nginx as the HTTPS reverse proxy in front of a test server (as
//! docs/deployment.md deploys `onionrtc serve`), with a certificate from a
//! private test CA, so clients check a real certificate chain (`--ca`).
//!
//! ```no_run
//! let dir = tempfile::tempdir().unwrap();
//! let ca = testkit::nginx::TestCa::new(dir.path(), &["127.0.0.1"]);
//! let conf = testkit::nginx::proxy_config(
//!     dir.path(),
//!     "127.0.0.1:8443".parse().unwrap(),
//!     "127.0.0.1:8080".parse().unwrap(),
//!     Some(&ca),
//!     "",
//! );
//! let nginx = testkit::Proc::spawn(&mut testkit::nginx::command(dir.path(), &conf)).unwrap();
//! # drop(nginx);
//! ```

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A private CA and one server certificate it signed, as PEM files.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA's certificate (what a client trusts).
    pub ca: PathBuf,
    /// The server's certificate (leaf only).
    pub cert: PathBuf,
    /// The server's key.
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA, and a server certificate for `names` (IP addresses or DNS
    /// names), written to `dir` (`test-ca.pem`, `site-cert.pem`,
    /// `site-key.pem`).
    pub fn new(dir: &Path, names: &[&str]) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "OnionRTC test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let out = TestCa {
            ca: dir.join("test-ca.pem"),
            cert: dir.join("site-cert.pem"),
            key: dir.join("site-key.pem"),
        };
        std::fs::write(&out.ca, ca_cert.pem()).unwrap();
        std::fs::write(&out.cert, cert.pem()).unwrap();
        std::fs::write(&out.key, key.serialize_pem()).unwrap();
        out
    }
}

/// Writes `DIR/nginx.conf`: a reverse proxy on `listen` (HTTPS with
/// `tls`'s server certificate, else plain HTTP) to `upstream` as
/// docs/deployment.md sets it up (HTTP/1.1, WebSocket upgrades, `Host`
/// kept, `X-Forwarded-For` appended), no access log; `extra` is added
/// inside the `server` block (e.g. a `location` answering by itself). Pid,
/// temp and error-log files stay in `dir`.
pub fn proxy_config(
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    tls: Option<&TestCa>,
    extra: &str,
) -> PathBuf {
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    let tls = match tls {
        Some(t) => format!(
            "listen {listen} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};",
            t.cert.display(),
            t.key.display()
        ),
        None => format!("listen {listen};"),
    };
    std::fs::write(
        &conf,
        format!(
            r#"user root;
worker_processes 1;
error_log {d}/nginx-error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        {tls}
        {extra}
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
"#
        ),
    )
    .unwrap();
    conf
}

/// nginx's arguments for [`command`]: in the foreground (master and one
/// worker) with `conf`, its prefix `dir`.
pub fn args(dir: &Path, conf: &Path) -> Vec<OsString> {
    vec![
        "-p".into(),
        dir.into(),
        "-c".into(),
        conf.into(),
        "-g".into(),
        "daemon off; master_process on;".into(),
    ]
}

/// `nginx` with [`args`]; spawn it with [`Proc::spawn`](crate::Proc::spawn)
/// so it is killed by PID (in a namespace: `Netns::command("nginx")` with
/// [`args`]). Output is discarded (errors go to `dir/nginx-error.log`).
pub fn command(dir: &Path, conf: &Path) -> Command {
    let mut cmd = Command::new("nginx");
    cmd.args(args(dir, conf))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}
