//! TLS client configurations: the relay's (Mozilla's roots, a CA file, or
//! an SPKI pin) and the web upstream's (Mozilla's roots plus the CA file).
//!
//! ring provider, TLS 1.3 and 1.2, no ALPN offered to the relay (nothing
//! in the ClientHello says "TURN"), `http/1.1` to the web upstream.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest as _, Sha256};

use crate::config::RelayTrust;

/// A TLS configuration that could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot read CA certificates from {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsSetupError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?)
}

fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError::CaFile {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::CaFile {
            path: path.into(),
            reason: "no CERTIFICATE section".into(),
        });
    }
    Ok(certs)
}

fn roots(ca: Option<&Path>, with_webpki: bool) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    if with_webpki {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca {
        for cert in read_ca(path)? {
            store.add(cert).map_err(|e| TlsSetupError::CaFile {
                path: path.into(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(store)
}

/// The relay's client configuration.
pub fn relay_config(trust: &RelayTrust) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let config = match trust {
        RelayTrust::WebPki => builder()?
            .with_root_certificates(roots(None, true)?)
            .with_no_client_auth(),
        RelayTrust::CaFile(path) => builder()?
            .with_root_certificates(roots(Some(path), false)?)
            .with_no_client_auth(),
        RelayTrust::SpkiSha256(pin) => pinned(vec![*pin])?,
        RelayTrust::SpkiPins(pins) => pinned(pins.clone())?,
    };
    Ok(Arc::new(config))
}

fn pinned(pins: Vec<[u8; 32]>) -> Result<ClientConfig, TlsSetupError> {
    Ok(builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpkiPin {
            pins,
            algorithms: provider().signature_verification_algorithms,
        }))
        .with_no_client_auth())
}

/// The web upstream's client configuration: Mozilla's roots plus the CA
/// file given for the relay, if any (a self-hosted site often shares it).
pub fn web_config(trust: &RelayTrust) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let ca = match trust {
        RelayTrust::CaFile(p) => Some(p.as_path()),
        _ => None,
    };
    site_config(ca)
}

/// The web site's client configuration: Mozilla's roots plus the CA
/// certificates in `ca` (PEM), the host name checked.
pub fn site_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca, true)?), provider())
            .build()
            .map_err(|e| TlsSetupError::Rustls(rustls::Error::General(e.to_string())))?;
    let mut config = builder()?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The base64 SHA-256 of a DER certificate's SubjectPublicKeyInfo, the
/// `--relay-spki` form.
pub fn spki_sha256(cert_der: &[u8]) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(Sha256::digest(cert.tbs_certificate.subject_pki.raw).into())
}

/// The SPKI SHA-256 of the first certificate in a PEM file's text.
pub fn cert_pem_spki_sha256(pem: &[u8]) -> Option<[u8; 32]> {
    let cert = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    spki_sha256(cert.as_ref())
}

/// The SPKI SHA-256 of a PEM private key (PKCS#8, PKCS#1 or SEC1; RSA,
/// ECDSA or Ed25519): the pin a certificate for this key will have.
pub fn key_pem_spki_sha256(pem: &[u8]) -> Option<[u8; 32]> {
    use rustls::pki_types::PrivateKeyDer;
    let key = PrivateKeyDer::from_pem_slice(pem).ok()?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    let spki = signer.public_key()?;
    Some(Sha256::digest(spki.as_ref()).into())
}

/// The pin did not match: the error text names both hashes.
#[derive(Debug)]
struct PinMismatch {
    got: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the relay's certificate key (SPKI SHA-256 {}) does not match the pin \
             (--relay-spki, or the site's /.well-known/onionrtc.json)",
            self.got
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts exactly the certificates whose SubjectPublicKeyInfo hashes to
/// one of the pins. Host name and validity dates are not checked: the pin names
/// the key. The handshake signature is still verified, so only the key's
/// holder passes.
#[derive(Debug)]
struct SpkiPin {
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpkiPin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(hash) = spki_sha256(end_entity.as_ref()) else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ));
        };
        if self.pins.contains(&hash) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    got: base64::engine::general_purpose::STANDARD.encode(hash),
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server name for a host: an IP address or a DNS name.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build() {
        assert!(relay_config(&RelayTrust::WebPki).is_ok());
        assert!(relay_config(&RelayTrust::SpkiSha256([0; 32])).is_ok());
        assert!(relay_config(&RelayTrust::SpkiPins(vec![[0; 32], [1; 32]])).is_ok());
        assert!(web_config(&RelayTrust::WebPki).is_ok());
        let missing = RelayTrust::CaFile("/nonexistent/ca.pem".into());
        assert!(matches!(
            relay_config(&missing),
            Err(TlsSetupError::CaFile { .. })
        ));
    }

    #[test]
    fn a_keys_pin_is_its_certificates() {
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ED25519] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["relay.example.org".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let from_cert = cert_pem_spki_sha256(cert.pem().as_bytes()).unwrap();
            assert_eq!(
                key_pem_spki_sha256(key.serialize_pem().as_bytes()),
                Some(from_cert)
            );
            assert_eq!(spki_sha256(cert.der()), Some(from_cert));
        }
        assert!(key_pem_spki_sha256(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_none());
        assert!(cert_pem_spki_sha256(b"nothing").is_none());
    }

    #[test]
    fn names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("relay.example.org"),
            Some(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name").is_none());
        assert!(spki_sha256(b"garbage").is_none());
    }
}
