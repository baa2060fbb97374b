//! What the chaos test watches while it breaks things: a TailEvents stream per replica that
//! resumes from its last position after its replica dies, a sampler of every replica's
//! `qtrail_replica_leader`, and the signer intervals read back from the replicas' logs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use qtrail_proto::qtrail::audit::v1 as audit;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::servers::{AUDITOR_TOKEN, authed, lazy_channel};

/// Pause between a tail's reconnection attempts while its replica is down (pacing, not a wait
/// for a condition: the loop tries again until stopped).
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// A TailEvents stream on one replica, from position 1, reopened from the position after the
/// last one it saw whenever the stream breaks.
#[derive(Debug)]
pub struct Tail {
    seen: Arc<Mutex<Vec<u64>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Tail {
    /// Starts tailing `location` at the replica at `url`.
    pub fn start(url: String, location: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(url, location.to_owned(), seen.clone(), stop.clone()));
        Self { seen, stop, task }
    }

    /// Returns how many events the tail has seen.
    pub fn len(&self) -> usize {
        self.seen.lock().expect("tail lock").len()
    }

    /// Stops the tail and returns the positions it saw, in the order it saw them.
    pub async fn stop(self) -> Vec<u64> {
        self.stop.cancel();
        self.task.await.expect("a tail panicked");
        Arc::try_unwrap(self.seen).expect("the tail is stopped").into_inner().expect("tail lock")
    }
}

async fn follow(url: String, location: String, seen: Arc<Mutex<Vec<u64>>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let from_seq = seen.lock().expect("tail lock").last().map_or(1, |last| last + 1);
        let request = audit::TailEventsRequest { location: location.clone(), filter: None, from_seq };
        let mut client = EventQueryClient::new(lazy_channel(&url));
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = client.tail_events(authed(request, AUDITOR_TOKEN)) => opened,
        };
        if let Ok(stream) = opened {
            let mut stream = stream.into_inner();
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    message = stream.message() => message,
                };
                match message {
                    Ok(Some(response)) => {
                        let seq = response.event.map_or(0, |stored| stored.location_seq);
                        seen.lock().expect("tail lock").push(seq);
                    }
                    _ => break,
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECONNECT_PAUSE) => {}
        }
    }
}

/// One sample of the leader gauges: when, and their sum over the replicas that answered.
#[derive(Debug, Clone, Copy)]
pub struct LeaderSample {
    /// When the sample was taken.
    pub at: Instant,
    /// Sum of `qtrail_replica_leader` over the live replicas.
    pub leaders: f64,
}

/// Samples `qtrail_replica_leader` on every replica's `/metrics` every `every` until stopped.
#[derive(Debug)]
pub struct LeaderSampler {
    stop: CancellationToken,
    task: JoinHandle<Vec<LeaderSample>>,
}

impl LeaderSampler {
    /// Starts sampling the replicas whose HTTP sides are at `addrs`.
    pub fn start(addrs: Vec<SocketAddr>, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticks = tokio::time::interval(every);
            while !stopped.is_cancelled() {
                ticks.tick().await;
                let mut leaders = 0.0;
                for addr in &addrs {
                    leaders += leader_gauge(*addr).await;
                }
                samples.push(LeaderSample { at: Instant::now(), leaders });
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops sampling and returns the samples.
    pub async fn stop(self) -> Vec<LeaderSample> {
        self.stop.cancel();
        self.task.await.expect("the sampler panicked")
    }
}

/// Returns the longest time the samples show more than one leader: from the first sample of a
/// run above 1 to the first sample after it at or below 1.
pub fn longest_overlap(samples: &[LeaderSample]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since: Option<Instant> = None;
    for sample in samples {
        match (sample.leaders > 1.0, since) {
            (true, None) => since = Some(sample.at),
            (false, Some(start)) => {
                longest = longest.max(sample.at - start);
                since = None;
            }
            _ => {}
        }
    }
    if let (Some(start), Some(last)) = (since, samples.last()) {
        longest = longest.max(last.at - start);
    }
    longest
}

/// Returns the sum of `qtrail_replica_leader` at the HTTP side `addr`, 0 when it does not
/// answer (a killed replica signs nothing). A plain HTTP/1.0 GET, because the testkit's client
/// panics on a refused connection.
async fn leader_gauge(addr: SocketAddr) -> f64 {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    let Ok(Some(text)) = tokio::time::timeout(Duration::from_secs(2), fetch).await else {
        return 0.0;
    };
    text.lines()
        .filter(|line| line.starts_with("qtrail_replica_leader{") || line.starts_with("qtrail_replica_leader "))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A time a replica signed checkpoints: from `became the checkpoint signer` to `stopped
/// signing`, or to its kill.
#[derive(Debug, Clone, Copy)]
pub struct SignerInterval {
    /// Index of the replica.
    pub replica: usize,
    /// When it became the signer.
    pub from: SystemTime,
    /// When it stopped (or was killed, or the run ended).
    pub to: SystemTime,
}

/// Returns the signer intervals of replica `replica` from its log at `log`, closing an open
/// interval at the first of `kills` after its start (a killed process logs nothing more), or at
/// `end`.
pub fn signer_intervals(replica: usize, log: &Path, kills: &[SystemTime], end: SystemTime) -> Vec<SignerInterval> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut intervals = Vec::new();
    let mut open: Option<SystemTime> = None;
    let close_by_kill =
        |from: SystemTime, before: SystemTime| kills.iter().copied().find(|kill| *kill >= from && *kill < before);
    for line in text.lines().map(strip_ansi) {
        let Some(at) = line.split_whitespace().next().and_then(log_time) else { continue };
        if let Some(from) = open
            && let Some(kill) = close_by_kill(from, at)
        {
            intervals.push(SignerInterval { replica, from, to: kill });
            open = None;
        }
        if line.contains("became the checkpoint signer") {
            open = Some(at);
        } else if line.contains("stopped signing")
            && let Some(from) = open.take()
        {
            intervals.push(SignerInterval { replica, from, to: at });
        }
    }
    if let Some(from) = open {
        let to = close_by_kill(from, end).unwrap_or(end);
        intervals.push(SignerInterval { replica, from, to });
    }
    intervals
}

/// Returns the longest time two different replicas' intervals overlap, and the pair.
pub fn worst_signer_overlap(intervals: &[SignerInterval]) -> (Duration, Option<(SignerInterval, SignerInterval)>) {
    let mut worst = (Duration::ZERO, None);
    for (n, a) in intervals.iter().enumerate() {
        for b in &intervals[n + 1..] {
            if a.replica == b.replica {
                continue;
            }
            let (start, end) = (a.from.max(b.from), a.to.min(b.to));
            if let Ok(overlap) = end.duration_since(start)
                && overlap > worst.0
            {
                worst = (overlap, Some((*a, *b)));
            }
        }
    }
    worst
}

fn log_time(token: &str) -> Option<SystemTime> {
    let timestamp: prost_types::Timestamp = token.parse().ok()?;
    SystemTime::try_from(timestamp).ok()
}

/// Removes the terminal colour codes the log formatter may write.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
