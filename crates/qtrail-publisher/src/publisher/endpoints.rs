//! The collector endpoints a publisher may use: replicas of one location's collector, in the
//! order given, and which one is current.
//!
//! The publisher streams to the current endpoint; when it becomes unreachable or the stream
//! breaks the publisher moves to the next one (round robin), and the receipt task, which reads
//! proofs from the same log, follows it on its next connection. Every replica serves the same
//! log, so it does not matter which one a receipt or a batch goes to.

use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::transport::Endpoint;

/// An ordered list (never empty) of collector endpoints and the index of the current one.
#[derive(Debug)]
pub(crate) struct Endpoints {
    /// Each endpoint with its URL, for log lines.
    list: Vec<(String, Endpoint)>,
    current: AtomicUsize,
}

impl Endpoints {
    /// Returns the endpoints `first` (current) and `rest`, each with its URL.
    pub(crate) fn new(first: (String, Endpoint), rest: Vec<(String, Endpoint)>) -> Self {
        let list = std::iter::once(first).chain(rest).collect();
        Self { list, current: AtomicUsize::new(0) }
    }

    /// Returns the index of the current endpoint.
    pub(crate) fn index(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Returns the current endpoint.
    pub(crate) fn current(&self) -> &Endpoint {
        &self.list[self.index()].1
    }

    /// Returns the URL of the endpoint at `index`.
    pub(crate) fn url(&self, index: usize) -> &str {
        &self.list[index % self.list.len()].0
    }

    /// Returns how many endpoints there are.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Makes the endpoint after the current one current (the first after the last) and returns
    /// its index.
    pub(crate) fn advance(&self) -> usize {
        let next = (self.index() + 1) % self.list.len();
        self.current.store(next, Ordering::Relaxed);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(first: &'static str, rest: &[&'static str]) -> Endpoints {
        let entry = |url: &'static str| (url.to_owned(), Endpoint::from_static(url));
        Endpoints::new(entry(first), rest.iter().map(|url| entry(url)).collect())
    }

    #[test]
    fn advances_round_robin() {
        let endpoints = endpoints("http://a:1", &["http://b:1", "http://c:1"]);
        assert_eq!((endpoints.index(), endpoints.len()), (0, 3));
        assert_eq!(endpoints.current().uri().host(), Some("a"));
        assert_eq!(endpoints.advance(), 1);
        assert_eq!(endpoints.current().uri().host(), Some("b"));
        assert_eq!(endpoints.advance(), 2);
        assert_eq!(endpoints.advance(), 0, "the first after the last");
        assert_eq!(endpoints.url(2), "http://c:1");
    }

    #[test]
    fn one_endpoint_stays_current() {
        let endpoints = endpoints("http://a:1", &[]);
        assert_eq!(endpoints.advance(), 0);
        assert_eq!(endpoints.current().uri().host(), Some("a"));
    }
}
