//! Tests of the HTTP side: serving, client limits, eviction and the metrics endpoint over real sockets.

use super::*;

#[tokio::test]
async fn serves_metrics_and_health() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, base_router(None), None, async move {
        let _ = stopped.await;
    }));
    metrics::counter!("qtrail_test_requests_total").increment(3);

    let metrics_text = http_get(addr, "/metrics").await;
    assert!(metrics_text.contains("qtrail_test_requests_total 3"), "{metrics_text}");
    assert!(http_get(addr, "/healthz").await.ends_with("ok\n"));

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_metrics_token_guards_metrics_but_not_health() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics-token");
    std::fs::write(&file, "s3cret\n").unwrap();
    let token = MetricsToken::load(&file).unwrap();
    assert!(!format!("{token:?}").contains("s3cret"));
    std::fs::write(&file, " \n").unwrap();
    assert!(MetricsToken::load(&file).unwrap_err().to_string().ends_with("the file holds no token"));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, base_router(Some(token)), None, async move {
        let _ = stopped.await;
    }));
    let scrape = |authorization: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /metrics HTTP/1.0\r\nHost: x\r\n{authorization}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    for refused in ["", "Authorization: Bearer wrong\r\n", "Authorization: Basic s3cret\r\n"] {
        let response = scrape(refused).await;
        assert_eq!(response.split(' ').nth(1), Some("401"), "{response}");
        assert!(response.to_lowercase().contains("www-authenticate: bearer"), "{response}");
    }
    let response = scrape("Authorization: Bearer s3cret\r\n").await;
    assert_eq!(response.split(' ').nth(1), Some("200"), "{response}");
    assert!(http_get(addr, "/healthz").await.ends_with("ok\n"), "health stays open");
}

/// Starts a server with `limits`; returns its address and what stops it.
async fn start(limits: HttpLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_with_limits(listener, base_router(None), None, limits, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Opens a connection that sends the head of a sign-in promising a body of `length` bytes,
/// and one byte of it: the slowloris of the issue.
async fn slow_sign_in(addr: SocketAddr, length: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = ["POST /api/session HTTP/1.1", "Host: x", "Content-Type: application/json"].join("\r\n");
    let head = format!("{head}\r\nContent-Length: {length}\r\n\r\n{{");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads what the server sends until it closes the connection (an error counts as closed).
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// A deadline far beyond what a local request needs, far below the limits under test.
const ANSWER: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_flood_of_slow_connections_leaves_metrics_and_health_reachable() {
    // Timers long enough that only making room at the cap can let a scrape in.
    let limits = HttpLimits {
        max_connections: 8,
        header_read_timeout: Duration::from_secs(600),
        body_read_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        ..HttpLimits::default()
    };
    let (addr, _stop) = start(limits).await;
    let mut flood = Vec::new();
    for _ in 0..3 * limits.max_connections {
        flood.push(slow_sign_in(addr, 60_000).await);
    }
    for path in ["/metrics", "/healthz", "/metrics"] {
        let answered = tokio::time::timeout(ANSWER, http_get(addr, path)).await;
        assert!(answered.is_ok(), "{path} did not answer under the flood");
    }
    // The oldest slow connections made room: the server closed them, unanswered.
    let oldest = &mut flood[0];
    let closed = tokio::time::timeout(ANSWER, read_until_closed(oldest)).await.expect("the oldest was evicted");
    assert_eq!(closed, "");
}

#[tokio::test]
async fn slow_and_large_bodies_and_idle_connections_are_cut() {
    use tokio::io::AsyncWriteExt;
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        max_body_bytes: 1000,
        ..HttpLimits::default()
    };
    let (addr, _stop) = start(limits).await;

    let mut slow = slow_sign_in(addr, 500).await;
    let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut slow)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request body not received within 0.3 seconds"), "{answer}");

    let mut large = tokio::net::TcpStream::connect(addr).await.unwrap();
    large.write_all(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n").await.unwrap();
    let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut large)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request body too large: at most 1000 bytes"), "{answer}");

    // Chunked, so that only counting the bytes finds it too large.
    let mut chunked = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = format!(
        "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n",
        "x".repeat(2000)
    );
    chunked.write_all(body.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut chunked)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut idle)).await.unwrap();
    assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");

    // A body within the limits still arrives whole.
    assert!(http_get(addr, "/healthz").await.ends_with("ok\n"));
}

#[tokio::test]
async fn connections_idle_past_the_timeout_are_closed() {
    use tokio::io::AsyncWriteExt;
    let limits = HttpLimits {
        header_read_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let (addr, _stop) = start(limits).await;
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut kept)).await.expect("closed when idle");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");
}

/// Minimal HTTP/1.0 GET, enough for a test without an HTTP client dependency.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test]
async fn a_client_that_reads_nothing_loses_its_connection_after_the_write_stall_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt as _;
    // Ended when the endless response is dropped, which is when its connection closes.
    let ended = tokio_util::sync::CancellationToken::new();
    let token = ended.clone();
    let endless = move || {
        let guard = token.clone().drop_guard();
        let zeros = tokio_stream::iter(std::iter::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(&[0; 16 * 1024]))
        }));
        std::future::ready(axum::body::Body::from_stream(zeros.map(move |chunk| {
            let _held = &guard;
            chunk
        })))
    };
    let router = base_router(None).route("/endless", axum::routing::get(endless));
    let limits = HttpLimits { write_stall_timeout: Duration::from_millis(300), ..HttpLimits::default() };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_with_limits(listener, router, None, limits, async move {
        let _ = stopped.await;
    }));

    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(tokio::time::timeout(ANSWER, ended.cancelled()).await.is_ok(), "the endless response was not dropped");
    let drained = tokio::time::timeout(ANSWER, stalled.read_to_end(&mut Vec::new())).await;
    assert!(drained.is_ok(), "the stalled connection was not closed");
    assert!(http_get(addr, "/healthz").await.ends_with("ok\n"), "others are served");
}
