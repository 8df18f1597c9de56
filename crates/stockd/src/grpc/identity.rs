//! Who is calling: the names of a client certificate, or the identity a bearer token
//! stands for.
//!
//! A client certificate (verified by the TLS handshake against `--tls-client-ca`) names
//! its holder in its subject alternative names: URIs first (a SPIFFE ID such as
//! `spiffe://cluster.local/ns/shop/sa/social-storefront`), then DNS names. A mesh that ends
//! TLS before stockd sends `authorization: Bearer <token>` instead; `--auth-tokens` is a
//! file of `<sha256 of the token, hex> <identity>` lines, so the file holds no secret.
//! The policy (`grpc::policy`) decides what an identity may do.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The names a client certificate gives its holder, SAN URIs before DNS names; none for a
/// certificate that cannot be parsed (the handshake verified it, so that does not happen).
pub fn cert_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    let names = &san.value.general_names;
    let uris = names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(uri.to_string()),
        _ => None,
    });
    let dns = names.iter().filter_map(|n| match n {
        GeneralName::DNSName(name) => Some(name.to_string()),
        _ => None,
    });
    uris.chain(dns).collect()
}

/// The bearer tokens stockd accepts: the sha256 of each, to the identity it stands for.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<str>>,
}

impl Tokens {
    /// Parses a tokens file: one `<sha256 hex> <identity>` per line; blank lines and lines
    /// starting with `#` are skipped.
    pub fn parse(text: &[u8]) -> Result<Tokens, String> {
        let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("line {}: {why}", i + 1);
            let (hash, identity) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `<sha256 hex> <identity>`"))?;
            let hash = parse_hex(hash).ok_or_else(|| bad("the hash must be 64 hex digits"))?;
            by_hash.insert(hash, Arc::from(identity.trim()));
        }
        Ok(Tokens { by_hash })
    }

    /// The identity `token` stands for.
    pub fn identity(&self, token: &str) -> Option<&Arc<str>> {
        self.by_hash.get(&sha256(token.as_bytes()))
    }
}

/// The sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
