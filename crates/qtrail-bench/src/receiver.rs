//! A webhook receiver for the alerts scenario: HTTP/1.1 on port 0 in this process, answering
//! every POST 204 on kept-alive connections, and noting when each event id named in a delivery's
//! CloudEvents body (`data.events[].id`) first arrived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// When each event id first arrived in a delivery.
pub type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Most bytes one request may have; a delivery of ten events is far below.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// A running receiver; it stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    /// Its webhook URL.
    pub url: String,
    /// What arrived.
    pub arrivals: Arrivals,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1, port 0.
    ///
    /// # Errors
    /// When it cannot listen.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let arrivals = Arrivals::default();
        let seen = arrivals.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, seen.clone()));
            }
        });
        Ok(Self { url, arrivals, task })
    }

    /// Returns how many distinct event ids arrived.
    pub fn count(&self) -> usize {
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the requests of one connection until the client closes it.
async fn serve(mut stream: TcpStream, arrivals: Arrivals) {
    let mut buffered: Vec<u8> = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        while let Some((head, length)) = request_head(&buffered) {
            if buffered.len() < head + length {
                break;
            }
            let now = Instant::now();
            note(&buffered[head..head + length], now, &arrivals);
            buffered.drain(..head + length);
            if stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.is_err() {
                return;
            }
        }
        if buffered.len() > MAX_REQUEST_BYTES {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffered.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Returns where a buffered request's body starts and its length, once its head is complete.
fn request_head(buffered: &[u8]) -> Option<(usize, usize)> {
    let end = buffered.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buffered[..end]);
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    Some((end + 4, length))
}

/// Notes the arrival of every event a delivery's body names.
fn note(body: &[u8], now: Instant, arrivals: &Arrivals) {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let Some(events) = body["data"]["events"].as_array() else {
        return;
    };
    let mut arrivals = arrivals.lock().unwrap_or_else(PoisonError::into_inner);
    for id in events.iter().filter_map(|event| event["id"].as_str()) {
        arrivals.entry(id.to_owned()).or_insert(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_give_the_body_and_its_length() {
        let request = b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(request_head(request), Some((request.len() - 5, 5)));
        assert_eq!(request_head(b"POST /hook HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn deliveries_note_their_event_ids_once() {
        let arrivals = Arrivals::default();
        let first = Instant::now();
        note(br#"{"data": {"events": [{"id": "a"}, {"id": "b"}]}}"#, first, &arrivals);
        note(br#"{"data": {"events": [{"id": "a"}]}}"#, Instant::now(), &arrivals);
        note(b"not json", Instant::now(), &arrivals);
        let arrivals = arrivals.lock().unwrap();
        assert_eq!(arrivals.len(), 2);
        assert_eq!(arrivals["a"], first);
    }
}
