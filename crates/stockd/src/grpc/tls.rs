//! TLS and mutual TLS with rustls (no OpenSSL): the server's configuration, built from
//! PEM files (`--tls-cert`, `--tls-key`, `--tls-client-ca`) and rebuilt when they change.
//!
//! Each new connection's handshake takes the current configuration (`reload::Watched`), so
//! a rotated certificate is served from the next connection on while open connections go
//! on with the one they started with. With a client CA, every client must present a
//! certificate that CA signed; the handshake of any other fails before a byte of gRPC.
//! The server offers only HTTP/2 (ALPN `h2`), as gRPC requires.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use super::reload::{Watched, watch_files};
use crate::config::TlsFiles;

/// The acceptor of the files' current version, reloaded when they change.
pub fn watch(files: &TlsFiles) -> Result<Watched<TlsAcceptor>, String> {
    let mut paths = vec![files.cert.clone(), files.key.clone()];
    paths.extend(files.client_ca.clone());
    watch_files("TLS certificate", paths, |contents| {
        let config = server_config(&contents[0], &contents[1], contents.get(2))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    })
}

/// A server configuration: the certificate chain and its key, and, with a client CA, a
/// client certificate required.
fn server_config(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<&Vec<u8>>,
) -> Result<ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert: {e}"))?;
    if chain.is_empty() {
        return Err("--tls-cert holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("--tls-key: {e}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("--tls-client-ca: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-client-ca: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert and --tls-key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
