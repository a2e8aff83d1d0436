//! TLS for the user store's own Redis client (`rediss://`): a rustls client configuration
//! trusting the configured CA bundle (or the system's roots), with the client certificate
//! when one is configured. Built once at start-up and shared by every connection.

use std::sync::Arc;

use recsys_schemas::config::TlsPem;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ServingError;

pub fn client_config(pem: &TlsPem) -> Result<Arc<rustls::ClientConfig>, ServingError> {
    let bad =
        |key: &str, e: &dyn std::fmt::Display| ServingError::Config(format!("store.{key}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    match &pem.ca {
        Some(ca) => {
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| bad("tls_ca_file", &e))?;
                roots.add(cert).map_err(|e| bad("tls_ca_file", &e))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system store holds the odd certificate rustls refuses; skip those.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(bad(
                    "tls_ca_file",
                    &"no system root certificates found; name a CA bundle",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServingError::Config(format!("store: TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match &pem.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("tls_cert_file", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("tls_key_file", &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("tls_cert_file", &e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
