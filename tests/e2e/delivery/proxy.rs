//! A TCP proxy between a runtime and the collector that breaks the network on command, and
//! reads the `Ingest.Publish` traffic it forwards so that a test can tell exactly what was sent,
//! stored and acknowledged.
//!
//! The proxy forwards whole HTTP/2 frames. It reassembles the gRPC messages carried in DATA
//! frames (5-byte length prefix, protobuf body) and decodes them as `PublishRequest` on the way
//! to the collector and `PublishResponse` on the way back. A [`Fault`] armed with
//! [`Proxy::arm`] strikes at the frame that completes the next matching message:
//!
//! - [`Fault::CutMidBatch`]: the collector gets all of the batch but its last byte, then both
//!   connections close: the batch is neither stored nor acknowledged and must be sent again;
//! - [`Fault::CutBeforeAck`]: the collector stored the batch, its Ack is dropped and both
//!   connections close: the runtime must not send the batch again (the Welcome of its next
//!   stream covers it);
//! - [`Fault::SwallowAck`]: as above, but the connections stay open and silent, like a network
//!   that stopped delivering: the runtime must notice by itself (its ack timeout);
//! - [`Fault::SwallowWelcome`]: the network goes silent as a stream opens, before the runtime
//!   learns what the collector has: the runtime must notice by itself too;
//! - [`Fault::DelayBatch`]: the batch is held back, and the runtime sees nothing more of the
//!   connection; [`Proxy::release`] delivers it late (after the runtime gave up and resent it
//!   on a new stream) and closes the connection once the collector has answered: the one way a
//!   duplicate can legitimately reach the collector.
//!
//! [`Proxy::cut_all`] closes every open connection at once, wherever the streams are.
//!
//! Every connection is one [`Session`]: one Publish stream, since the publisher opens a new
//! connection per stream. Observations carry a tick of one proxy-wide clock, so that a report
//! can tell what the collector had acknowledged before a stream was opened.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qtrail_proto::prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as audit;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind as RequestKind;
use qtrail_proto::qtrail::audit::v1::publish_response::Kind as ResponseKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What an HTTP/2 client sends before its first frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Size of an HTTP/2 frame header.
const FRAME_HEADER: usize = 9;
/// Frame type of DATA.
const DATA: u8 = 0x0;
/// DATA flag: the payload starts with a pad length.
const PADDED: u8 = 0x8;
/// Size of the gRPC message prefix (compressed flag, big-endian length).
const GRPC_PREFIX: usize = 5;

/// A way to break the network, armed with [`Proxy::arm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Delivers the next batch but its last byte, then closes both connections.
    CutMidBatch,
    /// Drops the next Ack and closes both connections.
    CutBeforeAck,
    /// Drops the next Ack, then forwards nothing more, leaving both connections open.
    SwallowAck,
    /// Drops the next Welcome, then forwards nothing more, leaving both connections open: a
    /// network that goes silent while a stream opens.
    SwallowWelcome,
    /// Holds the next batch back until [`Proxy::release`], forwarding nothing more from the
    /// runtime on that connection.
    DelayBatch,
}

/// A message and the proxy-clock tick at which the proxy saw it.
#[derive(Debug, Clone)]
pub struct Stamped<T> {
    /// When the proxy saw the message.
    pub at: u64,
    /// The message.
    pub message: T,
}

/// What passed through one connection: one Publish stream.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// When the runtime opened the connection.
    pub opened_at: u64,
    /// The Hello, once delivered to the collector.
    pub hello: Option<audit::Hello>,
    /// The Welcome's `stored_seq`, once delivered to the runtime.
    pub welcome: Option<u64>,
    /// Batches delivered in full to the collector, in order (a delayed one when released).
    pub batches: Vec<audit::Batch>,
    /// Acks the collector sent that were forwarded to the runtime (or, on a connection the
    /// runtime has left, that the proxy saw).
    pub acks: Vec<Stamped<audit::Ack>>,
    /// Batches the collector got all but the last byte of.
    pub cut_batches: Vec<audit::Batch>,
    /// Acks the collector sent that never reached the runtime.
    pub dropped_acks: Vec<Stamped<audit::Ack>>,
    /// The fault that struck this session, if one did.
    pub fault: Option<Fault>,
}

/// Returns the `(seq, event id)` of each event of a batch, in order (an empty id for an event
/// that does not decode).
fn events_of(batch: &audit::Batch) -> impl Iterator<Item = (u64, String)> + '_ {
    batch.events.iter().map(|published| {
        let id = audit::AuditEvent::decode(published.event.as_ref()).map(|event| event.id).unwrap_or_default();
        (published.seq, id)
    })
}

/// What the wire says about resends, over every session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireReport {
    /// Connections (Publish streams) seen.
    pub sessions: usize,
    /// Faults that struck.
    pub faults: usize,
    /// Batches delivered to the collector.
    pub batches: usize,
    /// Events delivered to the collector, resends included.
    pub events: usize,
    /// Deliveries of an event that had been delivered before: resends.
    pub resent: usize,
    /// Events sent on a stream although the collector had acknowledged them before that stream
    /// was opened: must be zero, whatever the collector's deduplication would make of them.
    pub resent_after_ack: usize,
    /// Events sent on a stream at or below the seq its Welcome said the collector had: must be
    /// zero.
    pub below_welcome: usize,
    /// Events of batches cut mid-way that were never delivered again: must be zero.
    pub cut_not_resent: usize,
    /// Events the collector counted as duplicates in its Acks.
    pub collector_duplicates: u64,
}

impl WireReport {
    /// Returns the report over `sessions`, oldest first.
    pub fn of(sessions: &[Session]) -> Self {
        let mut report = WireReport { sessions: sessions.len(), ..WireReport::default() };
        // When the collector first acknowledged each event, as the proxy saw it.
        let mut acknowledged: HashMap<String, u64> = HashMap::new();
        for session in sessions {
            let batches: HashMap<u64, &audit::Batch> =
                session.batches.iter().map(|batch| (batch.batch_seq, batch)).collect();
            for ack in session.acks.iter().chain(&session.dropped_acks) {
                report.collector_duplicates += u64::from(ack.message.duplicates);
                let Some(batch) = batches.get(&ack.message.batch_seq) else {
                    continue;
                };
                for (_, id) in events_of(batch) {
                    let first = acknowledged.entry(id).or_insert(ack.at);
                    *first = (*first).min(ack.at);
                }
            }
        }
        let mut delivered: HashSet<String> = HashSet::new();
        for (index, session) in sessions.iter().enumerate() {
            report.faults += usize::from(session.fault.is_some());
            report.batches += session.batches.len();
            for (seq, id) in session.batches.iter().flat_map(events_of) {
                report.events += 1;
                if acknowledged.get(&id).is_some_and(|&at| at < session.opened_at) {
                    report.resent_after_ack += 1;
                }
                if session.welcome.is_some_and(|stored_seq| seq <= stored_seq) {
                    report.below_welcome += 1;
                }
                if !delivered.insert(id) {
                    report.resent += 1;
                }
            }
            for (_, id) in session.cut_batches.iter().flat_map(events_of) {
                let mut later = sessions[index + 1..].iter().flat_map(|session| &session.batches).flat_map(events_of);
                if !later.any(|(_, resent)| resent == id) {
                    report.cut_not_resent += 1;
                }
            }
        }
        report
    }

    /// Asserts that only unacknowledged batches were sent again, and every cut one was.
    pub fn assert_only_unacknowledged_resent(&self, scenario: &str) {
        assert_eq!(self.resent_after_ack, 0, "{scenario}: acknowledged events were sent again: {self}");
        assert_eq!(self.below_welcome, 0, "{scenario}: events the welcome covered were sent: {self}");
        assert_eq!(self.cut_not_resent, 0, "{scenario}: events of cut batches were not sent again: {self}");
        assert!(
            self.collector_duplicates <= self.resent as u64,
            "{scenario}: the collector counted more duplicates than were resent: {self}"
        );
    }

    /// Prints the report on one line.
    pub fn print(&self, scenario: &str) {
        println!("delivery {scenario} wire: {self}");
    }
}

impl fmt::Display for WireReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sessions={} faults={} batches={} events={} resent={} resent_after_ack={} below_welcome={} \
             cut_not_resent={} collector_duplicates={}",
            self.sessions,
            self.faults,
            self.batches,
            self.events,
            self.resent,
            self.resent_after_ack,
            self.below_welcome,
            self.cut_not_resent,
            self.collector_duplicates
        )
    }
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToCollector,
    ToRuntime,
}

/// What to do with a frame.
enum Verdict {
    Forward,
    /// Forward all but the last byte, then close.
    Truncate,
    /// Drop it and close.
    Cut,
    /// Drop it and everything after it, keeping the connections open.
    Blackhole,
    /// Keep it until released; drop what the runtime sends after it.
    Hold,
}

/// How a connection forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Normal = 0,
    /// Nothing is forwarded either way.
    Blackholed = 1,
    /// A batch is held back; nothing more goes to the collector; answers still go back.
    Holding = 2,
    /// The held batch was delivered; the connection waits for the collector's answer.
    Released = 3,
}

/// One proxied connection.
#[derive(Debug)]
struct Connection {
    session: usize,
    closed: CancellationToken,
    released: CancellationToken,
    mode: AtomicU8,
}

impl Connection {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Normal,
            1 => Mode::Blackholed,
            2 => Mode::Holding,
            _ => Mode::Released,
        }
    }

    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct State {
    /// The proxy clock: one tick per observation.
    clock: u64,
    sessions: Vec<Session>,
    armed: Option<Fault>,
    open: Vec<Arc<Connection>>,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    /// Bumped whenever a session changes, so waiters need not poll.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("proxy state lock")
    }

    fn bump(&self) {
        self.changed.send_modify(|version| *version += 1);
    }

    /// Judges the gRPC messages that `frame` completes, and tells whether it completes any; a
    /// frame that completes none (headers, part of a message) is forwarded.
    fn judge_frame(
        &self,
        connection: &Connection,
        direction: Direction,
        reassembly: &Reassembly,
        frame: &[u8],
    ) -> (Verdict, bool) {
        let messages = reassembly.preview(frame);
        if messages.is_empty() {
            return (Verdict::Forward, false);
        }
        (self.judge(connection, direction, &messages), true)
    }

    /// Decides the fate of a frame that completes `messages`, and records them accordingly.
    fn judge(&self, connection: &Connection, direction: Direction, messages: &[Vec<u8>]) -> Verdict {
        let mut state = self.state();
        let at = state.tick();
        let decoded: Vec<Decoded> = messages.iter().filter_map(|bytes| Decoded::of(direction, bytes)).collect();
        let has_batch = decoded.iter().any(|message| matches!(message, Decoded::Batch(_)));
        let has_ack = decoded.iter().any(|message| matches!(message, Decoded::Ack(_)));
        let has_welcome = decoded.iter().any(|message| matches!(message, Decoded::Welcome(_)));
        let verdict = match (state.armed, direction) {
            (Some(Fault::CutMidBatch), Direction::ToCollector) if has_batch => Verdict::Truncate,
            (Some(Fault::DelayBatch), Direction::ToCollector) if has_batch => Verdict::Hold,
            (Some(Fault::CutBeforeAck), Direction::ToRuntime) if has_ack => Verdict::Cut,
            (Some(Fault::SwallowAck), Direction::ToRuntime) if has_ack => Verdict::Blackhole,
            (Some(Fault::SwallowWelcome), Direction::ToRuntime) if has_welcome => Verdict::Blackhole,
            _ => Verdict::Forward,
        };
        let fault = state.armed;
        let session = &mut state.sessions[connection.session];
        match verdict {
            Verdict::Forward => {}
            // Recorded when released, as what it then is: a batch delivered late.
            Verdict::Hold => {
                session.fault = fault;
                state.armed = None;
                drop(state);
                self.bump();
                return verdict;
            }
            Verdict::Truncate | Verdict::Cut | Verdict::Blackhole => session.fault = fault,
        }
        let delivered = matches!(verdict, Verdict::Forward);
        for message in decoded {
            match message {
                Decoded::Hello(hello) if delivered => session.hello = Some(hello),
                Decoded::Batch(batch) if delivered => session.batches.push(batch),
                Decoded::Batch(batch) => session.cut_batches.push(batch),
                Decoded::Welcome(stored_seq) if delivered => session.welcome = Some(stored_seq),
                Decoded::Ack(message) if delivered => session.acks.push(Stamped { at, message }),
                Decoded::Ack(message) => session.dropped_acks.push(Stamped { at, message }),
                Decoded::Hello(_) | Decoded::Welcome(_) => {}
            }
        }
        if !delivered {
            state.armed = None;
        }
        drop(state);
        self.bump();
        verdict
    }
}

/// A decoded Publish message.
enum Decoded {
    Hello(audit::Hello),
    Batch(audit::Batch),
    Welcome(u64),
    Ack(audit::Ack),
}

impl Decoded {
    fn of(direction: Direction, bytes: &[u8]) -> Option<Self> {
        match direction {
            Direction::ToCollector => match audit::PublishRequest::decode(bytes).ok()?.kind? {
                RequestKind::Hello(hello) => Some(Decoded::Hello(hello)),
                RequestKind::Batch(batch) => Some(Decoded::Batch(batch)),
            },
            Direction::ToRuntime => match audit::PublishResponse::decode(bytes).ok()?.kind? {
                ResponseKind::Welcome(welcome) => Some(Decoded::Welcome(welcome.stored_seq)),
                ResponseKind::Ack(ack) => Some(Decoded::Ack(ack)),
            },
        }
    }
}

/// The gRPC messages of each HTTP/2 stream of one direction, as far as they have arrived.
#[derive(Debug, Default)]
struct Reassembly {
    pending: HashMap<u32, Vec<u8>>,
}

impl Reassembly {
    /// Returns the messages that `frame` would complete, without taking it in.
    fn preview(&self, frame: &[u8]) -> Vec<Vec<u8>> {
        let Some((stream, data)) = data_of(frame) else {
            return Vec::new();
        };
        let pending = self.pending.get(&stream).map_or(&[][..], Vec::as_slice);
        let mut joined = Vec::with_capacity(pending.len() + data.len());
        joined.extend_from_slice(pending);
        joined.extend_from_slice(data);
        split_messages(&joined).0
    }

    /// Takes `frame` in.
    fn take(&mut self, frame: &[u8]) {
        let Some((stream, data)) = data_of(frame) else {
            return;
        };
        let pending = self.pending.entry(stream).or_default();
        pending.extend_from_slice(data);
        let (_, consumed) = split_messages(pending);
        pending.drain(..consumed);
    }
}

/// Splits complete gRPC messages off the front of `bytes`; returns them and the bytes used.
fn split_messages(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut messages = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + GRPC_PREFIX {
        let length = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]) as usize;
        let end = at + GRPC_PREFIX + length;
        if bytes.len() < end {
            break;
        }
        messages.push(bytes[at + GRPC_PREFIX..end].to_vec());
        at = end;
    }
    (messages, at)
}

/// Returns the stream id and data of a DATA frame (padding removed), `None` for other frames.
fn data_of(frame: &[u8]) -> Option<(u32, &[u8])> {
    let (header, payload) = frame.split_at(FRAME_HEADER);
    if header[3] != DATA {
        return None;
    }
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    if header[4] & PADDED == 0 {
        return Some((stream, payload));
    }
    let (&pad, rest) = payload.split_first()?;
    let data = rest.get(..rest.len().checked_sub(usize::from(pad))?)?;
    Some((stream, data))
}

/// Returns the length of the first frame in `buffer` if it is complete.
fn complete_frame(buffer: &[u8]) -> Option<usize> {
    if buffer.len() < FRAME_HEADER {
        return None;
    }
    let length =
        FRAME_HEADER + ((usize::from(buffer[0]) << 16) | (usize::from(buffer[1]) << 8) | usize::from(buffer[2]));
    (buffer.len() >= length).then_some(length)
}

/// The proxy: listens on an ephemeral port and forwards to the collector.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared { upstream, state: Mutex::default(), changed });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Self { addr, shared, accept }
    }

    /// Returns the URL a runtime publishes to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Arms `fault`: it strikes at the next message it applies to, on any connection.
    pub fn arm(&self, fault: Fault) {
        self.shared.state().armed = Some(fault);
    }

    /// Closes every open connection now, except the late path of a delayed batch, which closes
    /// itself once the collector has answered.
    pub fn cut_all(&self) {
        let mut state = self.shared.state();
        for connection in &state.open {
            if !matches!(connection.mode(), Mode::Holding | Mode::Released) {
                connection.closed.cancel();
            }
        }
        state.open.retain(|connection| !connection.closed.is_cancelled());
    }

    /// Delivers the batches held back by [`Fault::DelayBatch`].
    pub fn release(&self) {
        for connection in &self.shared.state().open {
            if connection.mode() == Mode::Holding {
                connection.released.cancel();
            }
        }
    }

    /// Returns a copy of every session so far, oldest first.
    pub fn sessions(&self) -> Vec<Session> {
        self.shared.state().sessions.clone()
    }

    /// Waits until `check` holds for the sessions, reacting to each change at once (no
    /// polling interval, so a test can act while a batch is still in flight).
    pub async fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut(&[Session]) -> bool) {
        let mut changes = self.shared.changed.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if check(&self.shared.state().sessions) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out after {timeout:?} waiting for {what}");
    }

    /// Waits until the armed fault has struck.
    pub async fn wait_struck(&self, timeout: Duration) {
        let mut changes = self.shared.changed.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            while self.shared.state().armed.is_some() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out after {timeout:?} waiting for the armed fault to strike");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in std::mem::take(&mut self.shared.state().open) {
            connection.closed.cancel();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let connection = {
            let mut state = shared.state();
            let opened_at = state.tick();
            state.sessions.push(Session { opened_at, ..Session::default() });
            let connection = Arc::new(Connection {
                session: state.sessions.len() - 1,
                closed: CancellationToken::new(),
                released: CancellationToken::new(),
                mode: AtomicU8::new(Mode::Normal as u8),
            });
            state.open.push(connection.clone());
            connection
        };
        shared.bump();
        // A collector that is down shows as a connection closed at once, like a refused one.
        let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
            connection.closed.cancel();
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (from_runtime, to_runtime) = inbound.into_split();
        let (from_collector, to_collector) = upstream.into_split();
        tokio::spawn(to_collector_pump(from_runtime, to_collector, connection.clone(), shared.clone()));
        tokio::spawn(to_runtime_pump(from_collector, to_runtime, connection, shared.clone()));
    }
}

/// Splits the complete frames off the front of `buffer`.
fn frames(buffer: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Some(length) = complete_frame(buffer) {
        frames.push(buffer.drain(..length).collect());
    }
    frames
}

/// Forwards the runtime's side of a connection to the collector frame by frame, until either
/// side closes or the connection is cut; then closes both directions.
async fn to_collector_pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    connection: Arc<Connection>,
    shared: Arc<Shared>,
) {
    // The connection preface goes through as it is, before any frame.
    let mut preface_left = PREFACE.len();
    let mut held: Option<Vec<u8>> = None;
    let mut buffer = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    let mut reassembly = Reassembly::default();
    let mut runtime_gone = false;
    'connection: loop {
        let read = tokio::select! {
            () = connection.closed.cancelled() => break,
            () = connection.released.cancelled(), if held.is_some() => {
                let Some(frame) = held.take() else { continue };
                let messages = reassembly.preview(&frame);
                shared.judge(&connection, Direction::ToCollector, &messages);
                if to.write_all(&frame).await.is_err() {
                    break;
                }
                connection.set_mode(Mode::Released);
                continue;
            }
            read = from.read(&mut chunk), if !runtime_gone => read,
        };
        let n = match read {
            Ok(n) if n > 0 => n,
            // A connection with a held batch outlives the runtime's side: it is the late path.
            _ if matches!(connection.mode(), Mode::Holding | Mode::Released) => {
                runtime_gone = true;
                continue;
            }
            _ => break,
        };
        if connection.mode() != Mode::Normal {
            continue;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if preface_left > 0 {
            let take = preface_left.min(buffer.len());
            let preface: Vec<u8> = buffer.drain(..take).collect();
            if to.write_all(&preface).await.is_err() {
                break;
            }
            preface_left -= take;
            if preface_left > 0 {
                continue;
            }
        }
        for frame in frames(&mut buffer) {
            if connection.mode() != Mode::Normal {
                continue 'connection;
            }
            let (verdict, _) = shared.judge_frame(&connection, Direction::ToCollector, &reassembly, &frame);
            match verdict {
                Verdict::Forward => {
                    if to.write_all(&frame).await.is_err() {
                        break 'connection;
                    }
                    reassembly.take(&frame);
                }
                Verdict::Truncate => {
                    let _ = to.write_all(&frame[..frame.len() - 1]).await;
                    break 'connection;
                }
                Verdict::Cut => break 'connection,
                Verdict::Blackhole => {
                    connection.set_mode(Mode::Blackholed);
                    continue 'connection;
                }
                Verdict::Hold => {
                    held = Some(frame);
                    connection.set_mode(Mode::Holding);
                    continue 'connection;
                }
            }
        }
    }
    connection.closed.cancel();
}

/// Forwards the collector's side of a connection to the runtime frame by frame, until either
/// side closes or the connection is cut; then closes both directions. On the late path of a
/// held batch it keeps reading after the runtime has gone, and closes once the collector has
/// answered the released batch.
async fn to_runtime_pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    connection: Arc<Connection>,
    shared: Arc<Shared>,
) {
    let mut runtime_gone = false;
    let mut buffer = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    let mut reassembly = Reassembly::default();
    'connection: loop {
        let read = tokio::select! {
            () = connection.closed.cancelled() => break,
            read = from.read(&mut chunk) => read,
        };
        let n = match read {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        if connection.mode() == Mode::Blackholed {
            continue;
        }
        buffer.extend_from_slice(&chunk[..n]);
        for frame in frames(&mut buffer) {
            if connection.mode() == Mode::Blackholed {
                continue 'connection;
            }
            let (verdict, completes_messages) =
                shared.judge_frame(&connection, Direction::ToRuntime, &reassembly, &frame);
            match verdict {
                // Holding and truncating only ever strike batches, on the way to the collector.
                Verdict::Forward | Verdict::Hold | Verdict::Truncate => {
                    if !runtime_gone && to.write_all(&frame).await.is_err() {
                        if !matches!(connection.mode(), Mode::Holding | Mode::Released) {
                            break 'connection;
                        }
                        runtime_gone = true;
                    }
                    reassembly.take(&frame);
                    if connection.mode() == Mode::Released && completes_messages {
                        // The collector answered the late batch: the late path is done.
                        break 'connection;
                    }
                }
                Verdict::Cut => break 'connection,
                Verdict::Blackhole => {
                    connection.set_mode(Mode::Blackholed);
                    continue 'connection;
                }
            }
        }
    }
    connection.closed.cancel();
}
