//! Which certificates TLS connections to the sync server trust: the system's roots, plus the
//! ones an app adds ([`ExtraRoots`]: a private CA in front of the server, as enterprise
//! deployments and test servers have). [`crate::HttpTransport`] uses the same set for sync
//! requests (reqwest) and for live push over `wss://` (tokio-tungstenite with rustls), so an
//! `https://` server gets live push like an `http://` one.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::{Arc, OnceLock};

/// Root certificates trusted besides the system's.
///
/// ```
/// # fn f(pem: &[u8]) -> Result<(), burrow_client::TransportError> {
/// let roots = burrow_client::ExtraRoots::from_pem(pem)?;
/// let transport =
///     burrow_client::HttpTransport::with_extra_roots("https://sync.example.com", "token", roots)?;
/// # drop(transport);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ExtraRoots {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    certs: Vec<CertificateDer<'static>>,
    /// The WebSocket's TLS configuration, built on first use.
    config: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraRoots")
            .field("certificates", &self.inner.certs.len())
            .finish()
    }
}

impl ExtraRoots {
    /// The certificates of a PEM bundle (one or more `CERTIFICATE` blocks). A bundle without
    /// any certificate, or with one that does not decode, is refused: trusting nothing extra
    /// by mistake would show up only as failed syncs.
    pub fn from_pem(pem: &[u8]) -> Result<ExtraRoots, crate::TransportError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| crate::TransportError::InvalidConfig(format!("root certificates: {e}")))?;
        if certs.is_empty() {
            return Err(crate::TransportError::InvalidConfig(
                "root certificates: no CERTIFICATE block in the PEM".into(),
            ));
        }
        Ok(ExtraRoots {
            inner: Arc::new(Inner {
                certs,
                config: OnceLock::new(),
            }),
        })
    }

    /// How many certificates are added.
    pub fn len(&self) -> usize {
        self.inner.certs.len()
    }

    /// Whether none is added (the system's roots only).
    pub fn is_empty(&self) -> bool {
        self.inner.certs.is_empty()
    }

    /// The certificates, DER-encoded.
    pub(crate) fn ders(&self) -> &[CertificateDer<'static>] {
        &self.inner.certs
    }

    /// A rustls client configuration trusting the system's roots and these (built once).
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.inner
            .config
            .get_or_init(|| build_config(&self.inner.certs))
            .clone()
    }
}

/// The system's roots, read once per process (a missing or partly unreadable store leaves
/// fewer roots; connections to servers they would have vouched for then fail to verify).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

fn build_config(extra: &[CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| format!("root certificate refused: {e}"))?;
    }
    // The provider reqwest uses too; named explicitly so no process-wide default is needed.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_certificates_is_refused_with_a_reason() {
        let e = ExtraRoots::from_pem(b"not a certificate").unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let e =
            ExtraRoots::from_pem(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
                .unwrap_err();
        assert!(e.to_string().contains("root certificates"), "{e}");
    }

    #[test]
    fn a_bundle_yields_each_certificate_and_a_config() {
        let ca = include_bytes!("../tests/fixtures/tls/ca.pem");
        let server = include_bytes!("../tests/fixtures/tls/server.pem");
        let bundle = [&ca[..], &server[..]].concat();
        let roots = ExtraRoots::from_pem(&bundle).unwrap();
        assert_eq!(roots.len(), 2);
        assert!(roots.client_config().is_ok());
        assert!(ExtraRoots::default().is_empty());
    }
}
