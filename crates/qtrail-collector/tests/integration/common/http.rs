//! A plain HTTP/1 client for tests of the collector's HTTP side: requests with the session
//! cookie a sign-in returned, whole answers, and server-sent event streams read as they come.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// Returns the body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("not json ({err}): {}", self.body))
    }

    /// Returns the `error` of a JSON error answer.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.body)).to_owned()
    }

    /// Returns a header's value as text.
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default()
    }
}

/// A browser-like client: keeps the session cookie of its last sign-in.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    pub cookie: Option<String>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
            cookie: None,
        }
    }

    fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Request<Full<Bytes>> {
        let mut request = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Full::new(Bytes::from(body.to_owned()))).expect("valid request")
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let request = self.request(method, path, headers, body);
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("answer in time")
            .expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        Answer { status, headers, body: String::from_utf8(body.to_vec()).expect("utf-8 body") }
    }

    /// Sends a GET and reads the answer's bytes, for binary answers (tiles).
    pub async fn get_bytes(&self, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Vec<u8>) {
        let request = self.request(Method::GET, path, headers, "");
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("answer in time")
            .expect("request sent");
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (status, headers, body.to_vec())
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], "").await
    }

    /// Posts a sign-in with `token`; on success keeps the session cookie.
    pub async fn sign_in(&mut self, token: &str) -> Answer {
        let body = serde_json::json!({ "token": token }).to_string();
        let answer = self.send(Method::POST, "/api/session", &[("content-type", "application/json")], &body).await;
        if answer.status == 200 {
            let set_cookie = answer.header("set-cookie");
            let pair = set_cookie.split(';').next().expect("a cookie").to_owned();
            self.cookie = Some(pair);
        }
        answer
    }

    /// Opens a server-sent event stream.
    pub async fn events(&self, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let request = self.request(Method::GET, path, headers, "");
        let response = self.client.request(request).await.expect("request sent");
        assert_eq!(response.status().as_u16(), 200, "event stream opens");
        let content_type = response.headers().get(header::CONTENT_TYPE).unwrap().to_str().unwrap().to_owned();
        assert_eq!(content_type, "text/event-stream");
        EventStream { body: response.into_body(), buffer: String::new() }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct Sse {
    pub event: String,
    pub id: String,
    pub data: String,
}

/// A server-sent event stream being read.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    buffer: String,
}

impl EventStream {
    /// Returns the next event (skipping comments), or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse::default();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        event.event = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("id: ") {
                        event.id = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        event.data.push_str(value);
                    }
                }
                if event.event.is_empty() && event.data.is_empty() {
                    continue;
                }
                return Some(event);
            }
            let frame = tokio::time::timeout(Duration::from_secs(30), self.body.frame()).await.expect("event in time");
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.push_str(std::str::from_utf8(&data).expect("utf-8 events"));
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// Returns the value of the sample `name` (with its labels) in a Prometheus text page, `None`
/// when the page has no such sample (yet).
pub fn sample(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|line| line.split(' ').next() == Some(name))?;
    Some(line.rsplit(' ').next().and_then(|value| value.parse().ok()).unwrap_or_else(|| panic!("bad sample {line}")))
}
