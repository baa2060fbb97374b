//! The test harness: starts and stops `qtrail_runtime::run` against a collector stub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use qtrail_cadf::{Action, AuditEvent, Outcome, Severity};
use qtrail_proto::qtrail::runtime::v1 as pb;
use qtrail_proto::qtrail::runtime::v1::job_service_client::JobServiceClient;
use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
use qtrail_publisher::testing::{CollectorStub, StubServer};
use qtrail_runtime::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Request;
use tonic::transport::Channel;

pub(crate) const WAIT: Duration = Duration::from_secs(30);
pub(crate) const ALICE: &str = "key-alice";
pub(crate) const BOB: &str = "key-bob";

pub(crate) const BELL: &str =
    "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n";

pub(crate) const PRINCIPALS: &str = r#"
[[principal]]
api_key = "key-alice"
iam_id = "IBMid-alice"
name = "alice@example.com"
account = "acc-alice"

[[principal]]
api_key = "key-bob"
iam_id = "IBMid-bob"
name = "bob@example.com"
account = "acc-bob"
"#;

/// A runtime served in this process, and its collector.
pub(crate) struct TestRuntime {
    _dir: tempfile::TempDir,
    pub(crate) stub: CollectorStub,
    pub(crate) collector: Option<StubServer>,
    pub(crate) collector_addr: SocketAddr,
    pub(crate) config: Config,
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestRuntime {
    /// Starts a runtime with a running collector.
    pub(crate) async fn start() -> Self {
        Self::start_with(true, |_| {}).await
    }

    /// Starts a runtime; `collector_up` says whether its collector serves yet.
    pub(crate) async fn start_with(collector_up: bool, configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let principals = dir.path().join("principals.toml");
        std::fs::write(&principals, PRINCIPALS).unwrap();
        let stub = CollectorStub::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let collector_addr = listener.local_addr().unwrap();
        let collector = if collector_up { Some(stub.serve(listener)) } else { None };
        let mut config = Config::for_test(dir.path().join("data"), principals, format!("http://{collector_addr}"));
        configure(&mut config);
        let mut runtime = TestRuntime {
            _dir: dir,
            stub,
            collector,
            collector_addr,
            config,
            addr: "127.0.0.1:0".parse().unwrap(),
            stop: None,
            task: None,
        };
        runtime.serve().await;
        runtime
    }

    async fn serve(&mut self) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = self.config.clone();
        self.task = Some(tokio::spawn(qtrail_runtime::run(listener, config, async {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
    }

    /// Stops the runtime the way SIGTERM does and returns what `run` returned.
    pub(crate) async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(WAIT, task).await??,
            None => Ok(()),
        }
    }

    /// Stops the runtime and starts it again on the same data directory.
    pub(crate) async fn restart(&mut self) {
        self.stop().await.unwrap();
        self.serve().await;
    }

    /// Starts (or restarts) the collector on its fixed address.
    pub(crate) async fn start_collector(&mut self) {
        let listener = TcpListener::bind(self.collector_addr).await.unwrap();
        self.collector = Some(self.stub.serve(listener));
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    async fn channel(&self) -> Channel {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr)).unwrap();
        // The listener was bound before the runtime started: connections queue until it
        // accepts them, so one attempt suffices.
        match tokio::time::timeout(WAIT, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(err)) => panic!("runtime not reachable: {err}"),
            Err(_) => panic!("runtime not reachable within {WAIT:?}"),
        }
    }

    pub(crate) async fn programs(&self) -> ProgramServiceClient<Channel> {
        ProgramServiceClient::new(self.channel().await)
    }

    pub(crate) async fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel().await)
    }

    /// Returns the one event the collector received with this correlation id, waiting for it.
    pub(crate) async fn event(&self, correlation_id: &str) -> AuditEvent {
        let found = self
            .stub
            .wait_for(WAIT, |stub| stub.stored().iter().any(|stored| stored.event.correlation_id == correlation_id))
            .await;
        assert!(found, "no event with correlation id {correlation_id}");
        let matching: Vec<_> = self
            .stub
            .stored()
            .into_iter()
            .filter(|stored| stored.event.correlation_id == correlation_id)
            .map(|stored| AuditEvent::try_from(stored.event).unwrap())
            .collect();
        assert_eq!(matching.len(), 1, "exactly one event per call");
        matching.into_iter().next().unwrap()
    }

    /// Creates a program as alice and returns it.
    pub(crate) async fn create_program(&self, name: &str, source: &str, public: bool) -> pb::Program {
        let (request, _) = call(
            pb::CreateProgramRequest {
                name: name.into(),
                source: source.into(),
                is_public: public,
                ..Default::default()
            },
            Some(ALICE),
        );
        self.programs().await.create_program(request).await.unwrap().into_inner()
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Returns a request with an API key (if any) and a new correlation id, and that id.
pub(crate) fn call<T>(message: T, api_key: Option<&str>) -> (Request<T>, String) {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let mut request = Request::new(message);
    if let Some(key) = api_key {
        request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request.metadata_mut().insert("x-correlation-id", correlation_id.parse().unwrap());
    request.metadata_mut().insert("user-agent", "qtrail-tests/1.0".parse().unwrap());
    (request, correlation_id)
}

/// What an event must say.
pub(crate) struct Expected<'a> {
    pub(crate) action: Action,
    pub(crate) code: u16,
    pub(crate) severity: Severity,
    /// The target CRN, or `None` for the instance.
    pub(crate) target: Option<(&'a str, &'a str)>,
    /// The account of the log source.
    pub(crate) account: &'a str,
}

/// Asserts the fields every test cares about.
pub(crate) fn assert_event(event: &AuditEvent, expected: Expected<'_>) {
    assert_eq!(event.action, expected.action, "action of {event:?}");
    assert_eq!(event.reason.code, expected.code, "reason code of {event:?}");
    let outcome = if expected.code < 400 { Outcome::Success } else { Outcome::Failure };
    assert_eq!(event.outcome, outcome, "outcome of {event:?}");
    assert_eq!(event.severity, expected.severity, "severity of {event:?}");
    let instance = format!("crn:v1:bluemix:public:quantum-computing:us-east:a/{}:inst-test::", expected.account);
    assert_eq!(event.log_source_crn.as_str(), instance);
    let target = match expected.target {
        Some((kind, id)) => format!("{}:{kind}:{id}", instance.trim_end_matches("::")),
        None => instance,
    };
    assert_eq!(event.target.crn.as_str(), target, "target of {event:?}");
    if expected.code >= 400 {
        assert!(!event.reason.reason_for_failure.is_empty());
        assert!(event.message.ends_with(" -failure"), "{}", event.message);
    }
    assert_eq!(event.id.get_version_num(), 7, "event ids are uuidv7");
}

/// One row of a table of audit events: the correlation id of a call, then what its event
/// says: action, reason code (which decides the outcome too), severity, the target's kind and
/// id (`None`: the instance) and the account.
pub(crate) type Audited<'a> = (&'a str, Action, u16, Severity, Option<(&'a str, &'a str)>, &'a str);

/// Checks the event of every row.
pub(crate) async fn assert_audited(runtime: &TestRuntime, rows: &[Audited<'_>]) {
    for &(correlation, action, code, severity, target, account) in rows {
        assert_event(&runtime.event(correlation).await, Expected { action, code, severity, target, account });
    }
}

/// Checks only the reason code of every call's event.
pub(crate) async fn assert_codes(runtime: &TestRuntime, rows: &[(&str, u16)]) {
    for &(correlation, code) in rows {
        assert_eq!(runtime.event(correlation).await.reason.code, code, "reason code of the call {correlation}");
    }
}

/// Waits until `check` holds, polling.
pub(crate) async fn wait_until<F, Fut>(check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    qtrail_server::poll::holds(WAIT, check).await
}

impl TestRuntime {
    /// Creates a program as bob and returns its id.
    pub(crate) async fn create_program_as_bob(&self) -> String {
        let (request, _) = call(
            pb::CreateProgramRequest { name: "bobs".into(), source: BELL.into(), ..Default::default() },
            Some(BOB),
        );
        self.programs().await.create_program(request).await.unwrap().into_inner().id
    }
}
