//! How the store connects: the URL's `sslmode` (as libpq reads it) over rustls, an optional
//! private CA (`--store-ca`), and the URL as it may be logged (password hidden).
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | – |
//! | `prefer` (default) | when the server offers TLS | no (with `--store-ca`: chain, not host name) |
//! | `require` | yes, or no connection | no (with `--store-ca`: chain, not host name) |
//! | `verify-full` | yes | chain (to `--store-ca`, else the Mozilla roots) and host name |
//!
//! Over a Unix socket (`host=/path`) there is no TLS: `prefer` connects without, `require` and
//! `verify-full` are refused.
//! `prefer` and `require` guard against eavesdropping, not against an impostor, as in libpq;
//! use `verify-full` across any network you do not control. `verify-ca` is refused rather than
//! weakened or strengthened silently.

use std::path::Path;
use std::sync::Arc;

use postgres::Config;
use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{StoreError, error_text};

/// The TLS mode a URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// Returns the client configuration and TLS connector of `url`, the CA file `ca` trusted for
/// the server's certificate when given.
///
/// # Errors
/// [`StoreError::Backend`] for a malformed URL, an unknown `sslmode`, or an unreadable CA file.
pub(crate) fn connect_config(url: &str, ca: Option<&Path>) -> Result<(Config, Option<MakeRustlsConnect>), StoreError> {
    let (rest, mode) = split_sslmode(url)?;
    let mut config: Config = rest
        .parse()
        .map_err(|err| StoreError::Backend(format!("bad store url {}: {}", redacted(url), error_text(&err))))?;
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyFull => SslMode::Require,
    });
    // PostgreSQL speaks no TLS over a Unix socket (tokio-postgres cannot even name one to
    // rustls), and a socket is local: with one among the hosts, TLS is off when only preferred
    // and an error when required.
    let local = config.get_hosts().iter().any(|host| matches!(host, postgres::config::Host::Unix(_)));
    if local && matches!(mode, Mode::Require | Mode::VerifyFull) {
        return Err(StoreError::Backend(format!(
            "the store url {} names a unix socket, over which there is no tls: use sslmode=disable or prefer",
            redacted(url)
        )));
    }
    if mode == Mode::Disable || local {
        config.ssl_mode(SslMode::Disable);
        return Ok((config, None));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| StoreError::Backend(format!("cannot set up tls: {err}")))?;
    let roots = match ca {
        Some(path) => Some(load_roots(path)?),
        None if mode == Mode::VerifyFull => Some(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }),
        None => None,
    };
    let tls = match (mode, roots) {
        (Mode::VerifyFull, Some(roots)) => builder.with_root_certificates(roots).with_no_client_auth(),
        (_, Some(roots)) => {
            // libpq's require with a root certificate: the chain is checked, the host name not.
            let verifier = ChainOnly::new(roots, provider)?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
        }
        (_, None) => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(Unverified(provider))).with_no_client_auth()
        }
    };
    Ok((config, Some(MakeRustlsConnect::new(tls))))
}

/// Removes `sslmode` from the URL's query (tokio-postgres knows no `verify-full`), returning the
/// rest and the mode (`prefer` when absent, as libpq).
fn split_sslmode(url: &str) -> Result<(String, Mode), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Mode::Prefer));
    };
    let mut mode = Mode::Prefer;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("sslmode=") {
            Some("disable") => mode = Mode::Disable,
            Some("prefer") => mode = Mode::Prefer,
            Some("require") => mode = Mode::Require,
            Some("verify-full") => mode = Mode::VerifyFull,
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "unsupported sslmode `{other}` in the store url: use disable, prefer, require or verify-full"
                )));
            }
            None => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, mode))
}

/// Returns `url` with its password, if any, replaced by `***`: the form to log.
pub fn redacted(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..].find(['/', '?']).map_or(out.len(), |end| authority_start + end);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = &out[authority_start..authority_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(authority_start + colon + 1..authority_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let query: Vec<String> = out[query_start + 1..]
            .split('&')
            .map(|pair| if pair.starts_with("password=") { "password=***".to_owned() } else { pair.to_owned() })
            .collect();
        out = format!("{}?{}", &out[..query_start], query.join("&"));
    }
    out
}

fn load_roots(path: &Path) -> Result<RootCertStore, StoreError> {
    let what = format!("cannot read the store ca {}", path.display());
    let pem = std::fs::read(path).map_err(|err| StoreError::io(&what, &err))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).map_err(|err| StoreError::Backend(format!("{what}: {err}")))?;
    }
    if roots.is_empty() {
        return Err(StoreError::Backend(format!("{what}: no certificate in it")));
    }
    Ok(roots)
}

/// Returns the certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

/// Checks the handshake's signatures, not who the certificate names (`prefer`/`require`).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the certificate's chain to the given roots, not its host name.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ChainOnly {
    fn new(roots: RootCertStore, provider: Arc<CryptoProvider>) -> Result<Self, StoreError> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|err| StoreError::Backend(format!("cannot set up tls: {err}")))?;
        Ok(Self { inner, provider })
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_sslmode_is_read() {
        assert_eq!(
            redacted("postgres://qtrail:s3cret@db:5432/trail?sslmode=require"),
            "postgres://qtrail:***@db:5432/trail?sslmode=require"
        );
        assert_eq!(redacted("postgres://db/trail?user=q&password=s3cret"), "postgres://db/trail?user=q&password=***");
        assert_eq!(
            redacted("postgres://qtrail@localhost/postgres?host=/tmp/x"),
            "postgres://qtrail@localhost/postgres?host=/tmp/x"
        );
        let (rest, mode) = split_sslmode("postgres://db/trail?sslmode=verify-full&application_name=q").unwrap();
        assert_eq!((rest.as_str(), mode), ("postgres://db/trail?application_name=q", Mode::VerifyFull));
        assert_eq!(split_sslmode("postgres://db/trail").unwrap().1, Mode::Prefer);
        let err = split_sslmode("postgres://db/trail?sslmode=verify-ca").unwrap_err();
        assert!(err.to_string().contains("unsupported sslmode `verify-ca`"), "{err}");
        let Err(err) = connect_config("postgres://u:s3cret@db/trail?bogus=1", None) else {
            panic!("a bad url is refused");
        };
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
