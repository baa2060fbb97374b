//! TLS for the servers and their clients, from PEM files.
//!
//! Bearer tokens and API keys travel in request metadata, so anywhere beyond loopback the
//! servers must speak TLS. A server given a certificate and key serves TLS only, on its gRPC
//! and its HTTP side alike (a plaintext client fails); given a client CA as well, it requires
//! every client, on both sides, to present a certificate that CA signed (mutual TLS), so that
//! a stolen token alone does not let a stranger publish or read events. Clients choose TLS by
//! the URL: `https://` verifies the server against the given CA, or against the Mozilla roots
//! built into the binary without one; `http://` stays plaintext, and TLS files given with it
//! are refused rather than silently unused.
//!
//! Every file is read once and checked before anything is served or any connection is made:
//! a bad path, a file that does not parse or a key that is not the certificate's stops
//! start-up naming the file, instead of failing at the first handshake or, worse, serving
//! plaintext.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// How long a client may take over its TLS handshake before its connection is dropped: a
/// connection that never finishes one would otherwise hold a socket and a task for good.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {error}")]
    Read {
        /// What the file was for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why (part of the message, not a source, so that error chains say it once).
        error: std::io::Error,
    },
    /// A file holds no PEM block of the expected kind, or one that does not parse.
    #[error("the {what} {path} holds no valid PEM `{label}` block{detail}")]
    NotPem {
        /// What the file was for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The PEM label looked for, e.g. `CERTIFICATE`.
        label: &'static str,
        /// `: <why>` when a block was found but does not parse, else empty.
        detail: String,
    },
    /// A private key that does not belong to its certificate.
    #[error("the tls private key {key} does not belong to the certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The files do not make a usable configuration.
    #[error("invalid tls configuration: {0}")]
    Invalid(String),
    /// TLS files were given for a plaintext URL.
    #[error("tls files were given but {url} is plaintext: use an https:// url")]
    PlaintextUrl {
        /// The URL.
        url: String,
    },
    /// The URL is not a valid endpoint.
    #[error("invalid url `{url}`: {detail}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
}

/// A server's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM certificates of the CAs that sign client certificates; when set, clients without
    /// such a certificate are refused (mutual TLS), on the gRPC and the HTTP side.
    pub client_ca: Option<PathBuf>,
}

/// A server's TLS, read and checked: the same certificate for both of its sides.
#[derive(Debug, Clone)]
pub struct LoadedServerTls {
    grpc: ServerTlsConfig,
    http: Arc<rustls::ServerConfig>,
    mutual: bool,
}

impl LoadedServerTls {
    /// Returns the rustls configuration of the HTTP side (console, metrics): HTTP/2 and
    /// HTTP/1.1, and the client certificates gRPC requires.
    pub fn http(&self) -> Arc<rustls::ServerConfig> {
        self.http.clone()
    }
}

impl ServerTls {
    /// Returns the TLS settings that `cert`, `key` and `client_ca` describe: `None` without a
    /// certificate.
    ///
    /// # Errors
    /// [`TlsError::Invalid`] when a key or client CA comes without a certificate, or a
    /// certificate without a key (flags that cannot be honoured must not be ignored).
    pub fn from_parts(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self { cert, key, client_ca })),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => Err(TlsError::Invalid("a client CA needs a server certificate and key".into())),
            (Some(_), None) => Err(TlsError::Invalid("a certificate needs its private key".into())),
            (None, Some(_)) => Err(TlsError::Invalid("a private key needs its certificate".into())),
        }
    }

    /// Reads and checks the files, each once, into the configurations of both sides.
    ///
    /// # Errors
    /// [`TlsError::Read`] or [`TlsError::NotPem`] naming a file that cannot be read or
    /// parsed, [`TlsError::KeyMismatch`] for a key that is not the certificate's.
    pub fn load(&self) -> Result<LoadedServerTls, TlsError> {
        let (cert_pem, chain) = read_certificates("tls certificate", &self.cert)?;
        let (key_pem, key) = read_key("tls private key", &self.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Invalid(err.to_string()))?;
        let mut grpc =
            ServerTlsConfig::new().identity(Identity::from_pem(&cert_pem, &key_pem)).timeout(HANDSHAKE_TIMEOUT);
        let builder = match &self.client_ca {
            Some(client_ca) => {
                let (ca_pem, roots) = read_roots("tls client CA", client_ca)?;
                grpc = grpc.client_ca_root(Certificate::from_pem(ca_pem));
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|err| TlsError::Invalid(err.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut http = builder.with_single_cert(chain, key).map_err(|err| key_error(&err, &self.cert, &self.key))?;
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(LoadedServerTls { grpc, http: Arc::new(http), mutual: self.client_ca.is_some() })
    }
}

/// How often the gRPC side pings a connection over HTTP/2, whatever it is doing.
pub const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a ping's answer may take before the connection is closed: a peer that vanished
/// without closing (a half-open connection) would otherwise hold it for good.
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns a gRPC server builder: with TLS when `tls` is set, plaintext otherwise, and HTTP/2
/// keep-alive pings that close connections to peers that no longer answer. Serve it on
/// [`crate::incoming::incoming`] for the connection cap and TCP keep-alive.
///
/// # Errors
/// [`TlsError::Invalid`] when tonic refuses the configuration (the files were checked by
/// [`ServerTls::load`] already, so this is not expected).
pub fn grpc_server(tls: Option<&LoadedServerTls>) -> Result<Server, TlsError> {
    let server = Server::builder()
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT));
    match tls {
        Some(tls) => server.tls_config(tls.grpc.clone()).map_err(|err| TlsError::Invalid(error_chain(&err))),
        None => Ok(server),
    }
}

/// Names how a server with `tls` meets its clients (`off`, `on`, `mutual`), for logs.
pub fn mode(tls: Option<&LoadedServerTls>) -> &'static str {
    match tls {
        None => "off",
        Some(LoadedServerTls { mutual: false, .. }) => "on",
        Some(LoadedServerTls { mutual: true, .. }) => "mutual",
    }
}

/// A client's TLS files, all optional: a CA to trust instead of the built-in roots, and a
/// certificate and key to present to servers that require one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM certificates of the CAs that sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain presented to the server (mutual TLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// Returns whether any file is set.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Reads and checks the files into tonic's client configuration. Without a CA, the server
    /// is checked against the Mozilla roots built into the binary.
    ///
    /// # Errors
    /// [`TlsError::Read`] or [`TlsError::NotPem`] naming a file that cannot be read or parsed,
    /// [`TlsError::KeyMismatch`] for a key that is not the certificate's, and
    /// [`TlsError::Invalid`] for a certificate without key or a key without certificate.
    pub fn config(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            // Checked as roots although tonic takes the PEM: tonic would skip a certificate it
            // cannot use, and every handshake would then fail with an unknown issuer, far from
            // the file at fault.
            Some(ca) => config.ca_certificate(Certificate::from_pem(read_roots("tls CA", ca)?.0)),
            None => config.with_webpki_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let (cert_pem, chain) = read_certificates("tls client certificate", cert)?;
                let (key_pem, parsed_key) = read_key("tls client private key", key)?;
                // What tonic would find only at the first handshake: a key that is not the
                // certificate's.
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|err| TlsError::Invalid(err.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_client_auth_cert(chain, parsed_key)
                    .map_err(|err| key_error(&err, cert, key))?;
                config = config.identity(Identity::from_pem(cert_pem, key_pem));
            }
            (None, None) => {}
            (Some(_), None) => return Err(TlsError::Invalid("a client certificate needs its private key".into())),
            (None, Some(_)) => return Err(TlsError::Invalid("a client private key needs its certificate".into())),
        }
        Ok(config)
    }

    /// Returns an endpoint for `url`: TLS with this configuration for `https://`, plaintext for
    /// `http://` (then no file may be set).
    ///
    /// # Errors
    /// [`TlsError::Url`] for an invalid URL, [`TlsError::PlaintextUrl`] for files with an
    /// `http://` URL, and the errors of [`ClientTls::config`].
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|err| TlsError::Url { url: url.to_owned(), detail: error_chain(&err) })?;
        if endpoint.uri().scheme_str() != Some("https") {
            if self.is_set() {
                return Err(TlsError::PlaintextUrl { url: url.to_owned() });
            }
            return Ok(endpoint);
        }
        endpoint.tls_config(self.config()?).map_err(|err| TlsError::Invalid(error_chain(&err)))
    }
}

/// Labels of the PEM blocks a private key may come in.
const KEY_LABELS: &str = "PRIVATE KEY";

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { what, path: path.to_owned(), error })
}

/// Reads a PEM file of certificates: its bytes, and the certificates parsed, at least one.
fn read_certificates(what: &'static str, path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), TlsError> {
    let pem = read(what, path)?;
    let not_pem = |detail: String| TlsError::NotPem { what, path: path.to_owned(), label: "CERTIFICATE", detail };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| not_pem(format!(": {err}")))?;
    if certificates.is_empty() {
        return Err(not_pem(String::new()));
    }
    Ok((pem, certificates))
}

/// Reads a PEM file of CA certificates: its bytes, and the certificates as trust roots, each
/// checked to be usable as one.
fn read_roots(what: &'static str, path: &Path) -> Result<(Vec<u8>, rustls::RootCertStore), TlsError> {
    let (pem, certificates) = read_certificates(what, path)?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|err| TlsError::NotPem {
            what,
            path: path.to_owned(),
            label: "CERTIFICATE",
            detail: format!(": {err}"),
        })?;
    }
    Ok((pem, roots))
}

/// Reads a PEM file holding a private key (PKCS#8, PKCS#1 or SEC1): its bytes and the key.
fn read_key(what: &'static str, path: &Path) -> Result<(Vec<u8>, PrivateKeyDer<'static>), TlsError> {
    let pem = read(what, path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        let detail = match err {
            rustls::pki_types::pem::Error::NoItemsFound => String::new(),
            other => format!(": {other}"),
        };
        TlsError::NotPem { what, path: path.to_owned(), label: KEY_LABELS, detail }
    })?;
    Ok((pem, key))
}

/// Maps rustls's refusal of a certificate and key pair to an error naming both files.
fn key_error(err: &rustls::Error, cert: &Path, key: &Path) -> TlsError {
    match err {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch { cert: cert.to_owned(), key: key.to_owned() },
        other => TlsError::Invalid(format!("certificate {} and key {}: {other}", cert.display(), key.display())),
    }
}

/// Returns an error with its sources, `a: b: c`: transport errors keep the useful part (a bad
/// key, an unknown issuer) in their sources.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A throwaway certificate authority for tests: a CA, a server certificate for `localhost` and
/// `127.0.0.1`, and a client certificate, written as PEM files into a directory.
#[cfg(feature = "testing")]
pub mod testing {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    use super::{ClientTls, ServerTls};

    /// PEM files of a test PKI.
    #[derive(Debug, Clone)]
    pub struct TestPki {
        /// The CA certificate, which signs both certificates below.
        pub ca: PathBuf,
        /// Server certificate for `localhost` and `127.0.0.1`.
        pub server_cert: PathBuf,
        /// Its key.
        pub server_key: PathBuf,
        /// Client certificate (`CN=qtrail test client`).
        pub client_cert: PathBuf,
        /// Its key.
        pub client_key: PathBuf,
        /// A second client certificate of the same CA (`CN=qtrail other client`), for tests
        /// that tell two clients apart by their certificates.
        pub other_client_cert: PathBuf,
        /// Its key.
        pub other_client_key: PathBuf,
    }

    impl TestPki {
        /// Creates a CA named `name` and its certificates in `dir`.
        ///
        /// # Panics
        /// When a certificate cannot be made or written (tests only).
        pub fn create(dir: &Path, name: &str) -> Self {
            std::fs::create_dir_all(dir).expect("create the pki directory");
            let ca_key = KeyPair::generate().expect("ca key");
            let mut ca_params = CertificateParams::new(Vec::new()).expect("ca params");
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
            ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
            let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed ca");
            let issuer = Issuer::new(ca_params, ca_key);

            let leaf = |names: Vec<String>, common_name: &str| {
                let key = KeyPair::generate().expect("leaf key");
                let mut params = CertificateParams::new(names).expect("leaf params");
                params.distinguished_name.push(DnType::CommonName, common_name);
                let cert = params.signed_by(&key, &issuer).expect("signed leaf");
                (cert.pem(), key.serialize_pem())
            };
            let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
            let (client_cert, client_key) = leaf(Vec::new(), "qtrail test client");
            let (other_client_cert, other_client_key) = leaf(Vec::new(), "qtrail other client");

            let write = |file: &str, pem: &str| {
                let path = dir.join(file);
                std::fs::write(&path, pem).expect("write a pem file");
                path
            };
            Self {
                ca: write("ca.pem", &ca_cert.pem()),
                server_cert: write("server.pem", &server_cert),
                server_key: write("server.key", &server_key),
                client_cert: write("client.pem", &client_cert),
                client_key: write("client.key", &client_key),
                other_client_cert: write("other-client.pem", &other_client_cert),
                other_client_key: write("other-client.key", &other_client_key),
            }
        }

        /// Returns the server's TLS files; with `mutual`, clients need a certificate of this CA.
        pub fn server(&self, mutual: bool) -> ServerTls {
            ServerTls {
                cert: self.server_cert.clone(),
                key: self.server_key.clone(),
                client_ca: mutual.then(|| self.ca.clone()),
            }
        }

        /// Sends `GET path` over HTTPS to `localhost:port`, trusting only this CA and, with
        /// `with_cert`, presenting the client certificate; returns the status code and body.
        ///
        /// # Errors
        /// When the connection, the handshake or the exchange fails.
        pub async fn https_get(&self, port: u16, path: &str, with_cert: bool) -> std::io::Result<(u16, String)> {
            let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            let response = self.https_exchange(port, &request, with_cert).await?;
            let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
            let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
            Ok((status, body))
        }

        /// Sends the raw HTTP/1.1 `request` over HTTPS to `localhost:port` (trusting only this
        /// CA, presenting the client certificate with `with_cert`) and returns the raw response,
        /// headers included, read until the server closes.
        ///
        /// # Errors
        /// When the connection, the handshake or the exchange fails.
        pub async fn https_exchange(&self, port: u16, request: &str, with_cert: bool) -> std::io::Result<String> {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

            let roots = super::read_roots("tls CA", &self.ca).map_err(std::io::Error::other)?.1;
            let builder =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(std::io::Error::other)?
                    .with_root_certificates(roots);
            let config = if with_cert {
                let cert = std::fs::read(&self.client_cert)?;
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(std::io::Error::other)?;
                let key = PrivateKeyDer::from_pem_file(&self.client_key).map_err(std::io::Error::other)?;
                builder.with_client_auth_cert(chain, key).map_err(std::io::Error::other)?
            } else {
                builder.with_no_client_auth()
            };
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
            let mut stream = connector.connect(name, tcp).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            match stream.read_to_end(&mut response).await {
                // A server may close without a TLS close_notify once it has answered.
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
                other => {
                    other?;
                }
            }
            Ok(String::from_utf8_lossy(&response).into_owned())
        }

        /// Returns a client's TLS files: trusting this CA, with the client certificate when
        /// `with_cert`.
        pub fn client(&self, with_cert: bool) -> ClientTls {
            ClientTls {
                ca: Some(self.ca.clone()),
                cert: with_cert.then(|| self.client_cert.clone()),
                key: with_cert.then(|| self.client_key.clone()),
            }
        }
    }
}
