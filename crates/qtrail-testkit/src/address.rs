//! Where a server listens and how clients reach it: plaintext on its address, or TLS on
//! `localhost`, the name the test certificates carry.

use std::net::SocketAddr;

use qtrail_server::tls::ClientTls;

/// A server's gRPC address, and the TLS its clients need (`None`: plaintext).
#[derive(Debug, Clone)]
pub struct ServerAddr {
    /// The bound address.
    pub addr: SocketAddr,
    /// How clients reach a server that serves TLS.
    pub tls: Option<ClientTls>,
}

impl ServerAddr {
    /// Returns the gRPC URL: `http://<addr>`, or `https://localhost:<port>` for a server that
    /// serves TLS.
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// Returns how clients reach the server: TLS files, or none for plaintext.
    pub fn client_tls(&self) -> ClientTls {
        self.tls.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_servers_are_reached_by_the_name_of_their_certificate() {
        let addr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(ServerAddr { addr, tls: None }.url(), "http://127.0.0.1:4242");
        assert_eq!(ServerAddr { addr, tls: Some(ClientTls::default()) }.url(), "https://localhost:4242");
    }
}
