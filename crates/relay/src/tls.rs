//! TLS for the `tls://` listeners (TURN over TLS, RFC 8656 §3.2).
//!
//! [`server_config`] reads a PEM certificate chain and a PEM private key
//! (PKCS#8, PKCS#1 or SEC1) and builds a rustls server configuration with the
//! ring provider, TLS 1.3 and 1.2, and no client authentication. It runs when
//! the configuration is loaded, so a bad file is reported by
//! `onionrtc check-config` and at start-up, never on the first connection.
//!
//! No ALPN protocol is set: a client that offers one (for example
//! `stun.turn`, RFC 7443) is accepted without negotiating it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::version::{TLS12, TLS13};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be built. Every variant names the
/// file it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file cannot be opened or read.
    #[error("cannot read TLS certificate file {}: {source}", path.display())]
    ReadCert {
        /// The certificate file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file is not valid PEM.
    #[error("TLS certificate file {} is not valid PEM: {reason}", path.display())]
    BadCert {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: PemReason,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error(
        "TLS certificate file {} holds no certificate (expected PEM blocks \
         \"-----BEGIN CERTIFICATE-----\")",
        path.display()
    )]
    NoCert {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file cannot be opened or read.
    #[error("cannot read TLS key file {}: {source}", path.display())]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is not valid PEM.
    #[error("TLS key file {} is not valid PEM: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: PemReason,
    },
    /// The key file holds no private key block.
    #[error(
        "TLS key file {} holds no private key (expected a PEM block \
         \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")",
        path.display()
    )]
    NoKey {
        /// The key file.
        path: PathBuf,
    },
    /// rustls refused the pair: an unsupported key type, a certificate that
    /// does not parse, or a key that does not match the certificate.
    #[error(
        "TLS certificate {} and key {} cannot be used: {source}",
        cert.display(),
        key.display()
    )]
    Rustls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// A PEM syntax error, in words (rustls-pki-types prints raw bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemReason(String);

impl fmt::Display for PemReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PemReason {
    fn of(e: &pem::Error) -> Self {
        let text = match e {
            pem::Error::MissingSectionEnd { end_marker } => format!(
                "a section has no \"-----END {}-----\" line (is the file truncated?)",
                String::from_utf8_lossy(end_marker)
            ),
            pem::Error::IllegalSectionStart { line } => format!(
                "malformed section start line {:?}",
                String::from_utf8_lossy(line)
            ),
            pem::Error::Base64Decode(reason) => format!("bad base64 in a section: {reason}"),
            other => other.to_string(),
        };
        PemReason(text)
    }
}

/// What a failed PEM read means for one of the two files.
enum Failure {
    Io(std::io::Error),
    Syntax(PemReason),
    Empty,
}

impl From<pem::Error> for Failure {
    fn from(e: pem::Error) -> Self {
        match e {
            pem::Error::Io(io) => Failure::Io(io),
            pem::Error::NoItemsFound => Failure::Empty,
            other => Failure::Syntax(PemReason::of(&other)),
        }
    }
}

/// Reads the certificate chain (leaf first) from a PEM file.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, pem::Error> =
        CertificateDer::pem_file_iter(path).and_then(|iter| iter.collect::<Result<Vec<_>, _>>());
    let error = match certs.map_err(Failure::from) {
        Ok(certs) if !certs.is_empty() => return Ok(certs),
        Ok(_) | Err(Failure::Empty) => TlsError::NoCert { path: path.into() },
        Err(Failure::Io(source)) => TlsError::ReadCert {
            path: path.into(),
            source,
        },
        Err(Failure::Syntax(reason)) => TlsError::BadCert {
            path: path.into(),
            reason,
        },
    };
    Err(error)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match Failure::from(e) {
        Failure::Empty => TlsError::NoKey { path: path.into() },
        Failure::Io(source) => TlsError::ReadKey {
            path: path.into(),
            source,
        },
        Failure::Syntax(reason) => TlsError::BadKey {
            path: path.into(),
            reason,
        },
    })
}

/// Builds the TLS server configuration from a PEM certificate chain and a PEM
/// private key: ring provider, TLS 1.3 and 1.2, no client authentication.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_certs(cert)?;
    let private_key = read_key(key)?;
    let rustls_error = |source| TlsError::Rustls {
        cert: cert.into(),
        key: key.into(),
        source,
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&TLS13, &TLS12])
    .map_err(rustls_error)?
    .with_no_client_auth()
    .with_single_cert(chain, private_key)
    .map_err(rustls_error)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, written to a temporary folder.
    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = write(dir.path(), "cert.pem", &ck.cert.pem());
        let key = write(dir.path(), "key.pem", &ck.signing_key.serialize_pem());
        Files {
            _dir: dir,
            cert,
            key,
        }
    }

    #[test]
    fn self_signed_pair_builds() {
        let f = self_signed();
        let config = server_config(&f.cert, &f.key).unwrap();
        assert!(config.alpn_protocols.is_empty());
    }

    #[test]
    fn chain_of_two_certificates_builds() {
        let f = self_signed();
        let other = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).unwrap();
        let pem = std::fs::read_to_string(&f.cert).unwrap() + &other.cert.pem();
        std::fs::write(&f.cert, pem).unwrap();
        server_config(&f.cert, &f.key).unwrap();
    }

    #[test]
    fn missing_certificate_file_is_named() {
        let f = self_signed();
        let missing = f.cert.with_file_name("nope.pem");
        let e = server_config(&missing, &f.key).unwrap_err();
        assert!(matches!(e, TlsError::ReadCert { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("nope.pem"), "{text}");
        assert!(text.contains("cannot read TLS certificate file"), "{text}");
    }

    #[test]
    fn missing_key_file_is_named() {
        let f = self_signed();
        let missing = f.key.with_file_name("nokey.pem");
        let e = server_config(&f.cert, &missing).unwrap_err();
        assert!(matches!(e, TlsError::ReadKey { .. }), "{e:?}");
        assert!(e.to_string().contains("nokey.pem"), "{e}");
    }

    #[test]
    fn garbage_certificate_is_rejected() {
        let f = self_signed();
        std::fs::write(&f.cert, "this is not a certificate\n").unwrap();
        let e = server_config(&f.cert, &f.key).unwrap_err();
        assert!(matches!(e, TlsError::NoCert { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("cert.pem") && text.contains("no certificate"),
            "{text}"
        );
    }

    #[test]
    fn truncated_pem_is_a_syntax_error() {
        let f = self_signed();
        let pem = std::fs::read_to_string(&f.cert).unwrap();
        std::fs::write(&f.cert, &pem[..pem.len() / 2]).unwrap();
        let e = server_config(&f.cert, &f.key).unwrap_err();
        assert!(matches!(e, TlsError::BadCert { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("not valid PEM") && text.contains("END CERTIFICATE"),
            "{text}"
        );
    }

    #[test]
    fn certificate_given_as_key_is_rejected() {
        let f = self_signed();
        let e = server_config(&f.cert, &f.cert).unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e:?}");
        assert!(e.to_string().contains("no private key"), "{e}");
    }

    #[test]
    fn key_given_as_certificate_is_rejected() {
        let f = self_signed();
        let e = server_config(&f.key, &f.key).unwrap_err();
        assert!(matches!(e, TlsError::NoCert { .. }), "{e:?}");
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let f = self_signed();
        let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
        std::fs::write(&f.key, other.signing_key.serialize_pem()).unwrap();
        let e = server_config(&f.cert, &f.key).unwrap_err();
        assert!(matches!(e, TlsError::Rustls { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("cert.pem") && text.contains("key.pem"),
            "{text}"
        );
    }
}
