//! Certificates made at test time (rcgen) and TLS clients of a server under test.
//!
//! A `Ca` signs a server certificate for `localhost` and client certificates whose names
//! are SAN URIs (SPIFFE IDs) or DNS names; `Ca::write` puts PEM files where a server's
//! `--tls-*` flags can read them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use stockd::config::TlsFiles;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_client::HealthClient;

use super::client::{CALL_TIMEOUT, CONNECT_TIMEOUT};

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A certificate authority of the test.
pub struct Ca {
    pub cert: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate").pem();
        Ca {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// The server's certificate: `localhost` and 127.0.0.1.
    pub fn server(&self) -> Pem {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate naming its holder by a SAN URI (`spiffe://…`) or, for any
    /// other name, a DNS name.
    pub fn client(&self, name: &str) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        let san = if name.contains("://") {
            SanType::URI(name.try_into().expect("an IA5 URI"))
        } else {
            SanType::DnsName(name.try_into().expect("an IA5 name"))
        };
        params.subject_alt_names = vec![san];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pem {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Writes `server` (and `client_ca`, for mutual TLS) into `dir`: the server's TLS files.
pub fn write_files(dir: &Path, server: &Pem, client_ca: Option<&str>) -> TlsFiles {
    let path = |name: &str| -> PathBuf { dir.join(name) };
    write_atomically(&path("server.crt"), &server.cert);
    write_atomically(&path("server.key"), &server.key);
    if let Some(ca) = client_ca {
        write_atomically(&path("client-ca.crt"), ca);
    }
    TlsFiles {
        cert: path("server.crt"),
        key: path("server.key"),
        client_ca: client_ca.map(|_| path("client-ca.crt")),
    }
}

/// Replaces `path` with `text` in one rename, as Kubernetes replaces a Secret's files.
pub fn write_atomically(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

/// A TLS channel to `addr` that trusts `ca` and presents `client` if given; it connects
/// at the first call.
pub fn channel(addr: SocketAddr, ca: &str, client: Option<&Pem>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy()
}

/// Waits until a health check over `channel` answers, or panics after `timeout`.
pub async fn wait_serving(channel: Channel, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let check = HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        match check {
            Ok(_) => return,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no TLS health answer after {timeout:?}: {last}");
}
