//! TLS for the gRPC servers and their clients, from PEM files.
//!
//! Bearer tokens and API keys travel in request metadata, so anywhere beyond loopback the
//! servers must speak TLS. A server given a certificate and key serves TLS only (a plaintext
//! client fails its handshake); given a client CA as well, it also requires every client to
//! present a certificate that CA signed (mutual TLS), so that a stolen token alone does not
//! let a stranger publish or read events. Clients choose TLS by the URL: `https://` verifies
//! the server against the given CA, or against the public web roots without one; `http://`
//! stays plaintext, and TLS files given with it are refused rather than silently unused.
//!
//! Every file is read and parsed before anything listens or connects: a bad path or PEM stops
//! start-up with the file named, instead of serving without TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// What the file was for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM block of the expected kind.
    #[error("the {what} {path} holds no PEM `{label}` block")]
    NotPem {
        /// What the file was for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The PEM label looked for, e.g. `CERTIFICATE`.
        label: &'static str,
    },
    /// The certificates and key do not make a usable configuration.
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
    /// such a certificate are refused (mutual TLS).
    pub client_ca: Option<PathBuf>,
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

    /// Reads the files into tonic's server configuration.
    ///
    /// # Errors
    /// [`TlsError::Read`] or [`TlsError::NotPem`] for an unreadable or non-PEM file.
    pub fn config(&self) -> Result<ServerTlsConfig, TlsError> {
        let cert = read_pem("tls certificate", &self.cert, &["CERTIFICATE"])?;
        let key = read_pem("tls private key", &self.key, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(client_ca) = &self.client_ca {
            let ca = read_pem("tls client CA", client_ca, &["CERTIFICATE"])?;
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        Ok(config)
    }

    /// Returns the rustls configuration of the HTTP side (console, metrics): this certificate
    /// and key, HTTP/2 and HTTP/1.1. It asks for no client certificate even when the gRPC side
    /// does: browsers sign in to the console with a token instead.
    ///
    /// # Errors
    /// As [`ServerTls::config`], and [`TlsError::Invalid`] when the PEM blocks do not parse or
    /// the key is not the certificate's.
    pub fn http_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let cert = read_pem("tls certificate", &self.cert, &["CERTIFICATE"])?;
        let key = read_pem("tls private key", &self.key, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])?;
        let invalid = |err: &dyn std::fmt::Display| TlsError::Invalid(err.to_string());
        let chain =
            CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>().map_err(|err| invalid(&err))?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|err| invalid(&err))?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|err| invalid(&err))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|err| invalid(&err))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Names how a server with `tls` meets its clients (`off`, `on`, `mutual`), for logs.
    pub fn mode(tls: Option<&Self>) -> &'static str {
        match tls {
            None => "off",
            Some(Self { client_ca: None, .. }) => "on",
            Some(Self { client_ca: Some(_), .. }) => "mutual",
        }
    }

    /// Applies the configuration to a server builder; with `tls` `None`, returns it unchanged.
    ///
    /// # Errors
    /// As [`ServerTls::config`], and [`TlsError::Invalid`] when the certificate and key do not
    /// parse or belong together.
    pub fn apply(tls: Option<&Self>, builder: Server) -> Result<Server, TlsError> {
        let Some(tls) = tls else {
            return Ok(builder);
        };
        builder.tls_config(tls.config()?).map_err(|err| TlsError::Invalid(error_chain(&err)))
    }
}

/// A client's TLS files, all optional: a CA to trust instead of the public web roots, and a
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

    /// Reads the files into tonic's client configuration. Without a CA, the server is checked
    /// against the public web roots.
    ///
    /// # Errors
    /// [`TlsError::Read`] or [`TlsError::NotPem`] for an unreadable or non-PEM file,
    /// [`TlsError::Invalid`] for a certificate without key or a key without certificate.
    pub fn config(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read_pem("tls CA", ca, &["CERTIFICATE"])?)),
            None => config.with_webpki_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert = read_pem("tls client certificate", cert, &["CERTIFICATE"])?;
                let key =
                    read_pem("tls client private key", key, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])?;
                config = config.identity(Identity::from_pem(cert, key));
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

/// Reads a PEM file and checks that it holds a block with one of `labels`; tonic would
/// otherwise report a wrong file only at the first handshake, far from the flag at fault.
fn read_pem(what: &'static str, path: &Path, labels: &[&'static str]) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })?;
    let text = String::from_utf8_lossy(&bytes);
    if labels.iter().any(|label| text.contains(&format!("-----BEGIN {label}-----"))) {
        return Ok(bytes);
    }
    Err(TlsError::NotPem { what, path: path.to_owned(), label: labels[0] })
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
    use rustls::pki_types::{CertificateDer, ServerName};

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

        /// Sends `GET path` over HTTPS to `localhost:port`, trusting only this CA, and returns
        /// the status code and body.
        ///
        /// # Errors
        /// When the connection, the handshake or the exchange fails.
        pub async fn https_get(&self, port: u16, path: &str) -> std::io::Result<(u16, String)> {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

            let pem = std::fs::read(&self.ca)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
            }
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(std::io::Error::other)?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
            let mut stream = connector.connect(name, tcp).await?;
            let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            match stream.read_to_end(&mut response).await {
                // A server may close without a TLS close_notify once it has answered.
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
                other => {
                    other?;
                }
            }
            let text = String::from_utf8_lossy(&response);
            let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
            Ok((status, body))
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
