//! The collector's components opened from its configuration at start-up: the store, the alert
//! state and service, the archiver, the witness, the console's sessions and the tile server.
//! Each may fail start-up with a message naming the setting at fault; none starts a task.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::alerts::{self, AlertStore, Alerts, RetryPolicy};
use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::store::{self, EventStore, FileStore};
use crate::{archive, checkpointer, console, tiles, tokens, witness};

/// Opens the archiver `config` asks for, signing manifests with the checkpoint key.
///
/// # Errors
/// An unusable archive URL or checkpoint key.
pub(crate) fn open_archiver(
    config: &Config,
    store: &Arc<dyn EventStore>,
) -> anyhow::Result<Option<Arc<archive::Archiver>>> {
    let (Some(settings), Some(key)) = (&config.archive, &config.checkpoint_key) else {
        return Ok(None);
    };
    let target = archive::Archive::open(&settings.url, &settings.options).context("failed to open the archive")?;
    let archiver_config = archive::ArchiverConfig {
        every: settings.every,
        max_events: settings.max_events,
        origin_prefix: config.log_origin_prefix.clone(),
    };
    Ok(Some(Arc::new(archive::Archiver::new(target, store.clone(), checkpointer::load_key(key)?, archiver_config))))
}

/// Returns the console's sessions: signed with the key file or the key generated into the data
/// directory, with sign-outs kept beside it. Without an HTTP side nothing is written: a random
/// key serves a console nobody can reach.
pub(crate) fn console_sessions(config: &Config, tokens: &Arc<tokens::Tokens>) -> anyhow::Result<console::Sessions> {
    let (key, revoked) = if config.http.is_some() {
        let key = console::session_key(config.console_session_key_file.as_deref(), &config.data_dir)?;
        (key, Some(config.data_dir.join(console::REVOCATIONS_FILE)))
    } else {
        (rand::random::<[u8; 32]>().to_vec(), None)
    };
    let revoked =
        console::Revocations::load(revoked, console::unix_now()).context("cannot read the revoked console sessions")?;
    Ok(console::Sessions::new(&key, config.console_session_ttl, tokens.clone(), revoked))
}

/// Opens the witness `config` asks for, with its state in `<data-dir>/witness/`.
///
/// # Errors
/// Without an HTTP side to serve it on; an unusable key file, name or log key.
pub(crate) fn open_witness(config: &Config) -> anyhow::Result<Option<Arc<witness::Witness>>> {
    let Some(witness) = &config.witness else {
        return Ok(None);
    };
    if config.http.is_none() {
        anyhow::bail!("--witness-key-file needs --http: the witness is served on the http side");
    }
    let path = &witness.key_file;
    let pem = std::fs::read(path).with_context(|| format!("failed to read the witness key {}", path.display()))?;
    let key = qtrail_cadf::checkpoint::SigningKey::from_pem(&pem)
        .with_context(|| format!("the witness key {} is unusable", path.display()))?;
    let logs = witness.logs.iter().map(|vkey| {
        qtrail_tlog::NoteVerifier::parse(vkey).map_err(|err| anyhow::anyhow!("--witness-log `{vkey}`: {err}"))
    });
    let logs = logs.collect::<anyhow::Result<Vec<_>>>()?;
    let opened = witness::Witness::open(&config.data_dir.join("witness"), key, &witness.name, logs)?;
    info!(verifier_key = %opened.verifier(), logs = ?opened.origins(), "witnessing");
    Ok(Some(Arc::new(opened)))
}

/// Returns the tile server of the HTTP side; it serves the public key of the current checkpoint
/// key and accepts a newest note by a previous one until the current key signs.
pub(crate) fn tile_server(
    config: &Config,
    store: Arc<dyn EventStore>,
    tokens: Arc<tokens::Tokens>,
    checkpoint_keys: Option<&checkpointer::Keys>,
) -> tiles::TileServer {
    tiles::TileServer {
        store,
        tokens,
        public: config.public_tiles,
        origin_prefix: config.log_origin_prefix.clone(),
        public_key: checkpoint_keys.map(|keys| keys.current.public_key()),
        note_keys: checkpoint_keys.map(checkpointer::Keys::public_keys).unwrap_or_default(),
    }
}

/// Starts the alert service over `state` with the webhook retry policy of `config`; its
/// webhook workers stop with `stop`.
pub(crate) fn start_alerts(
    config: &Config,
    store: Arc<dyn EventStore>,
    state: Arc<AlertStore>,
    tls: tokio_rustls::TlsConnector,
    lifecycle: &Lifecycle,
    stop: &CancellationToken,
) -> anyhow::Result<(Alerts, alerts::Evaluator)> {
    if config.alert_retry_horizon < alerts::webhook::MIN_RETRY_HORIZON {
        warn!(
            horizon_secs = config.alert_retry_horizon.as_secs(),
            "the webhook retry horizon is under a day, meant for tests only: a receiver down overnight loses deliveries"
        );
    }
    let policy = RetryPolicy {
        cap: config.alert_retry_cap,
        horizon: config.alert_retry_horizon,
        timeout: config.alert_timeout,
        tls,
    };
    Alerts::start(store, state, policy, lifecycle.clone(), stop.child_token()).context("failed to read the alert state")
}

/// Opens the alert state: beside a PostgreSQL store, in its database (shared by the replicas),
/// else in the data dir.
pub(crate) async fn open_alert_state(config: &Config) -> anyhow::Result<AlertStore> {
    let max_firings = config.alert_max_firings;
    let Some(options) = config.postgres.clone() else {
        return AlertStore::embedded(&config.data_dir, max_firings)
            .with_context(|| format!("failed to open the alert state in {}", config.data_dir.display()));
    };
    // The sync client runs its own runtime: opened on a blocking thread.
    let opened = tokio::task::spawn_blocking(move || AlertStore::shared(&options, max_firings)).await;
    opened.context("the alert state's opening task failed")?.context("failed to open the alert state in postgresql")
}

/// Opens the store: the PostgreSQL database `--store` names, else the file store in the data
/// dir (a data dir of the redb store converted in place first, see `store::migrate`).
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn EventStore>> {
    if let Some(options) = config.postgres.clone() {
        // The data dir still holds the local files (alert state, witness).
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create the data dir {}", config.data_dir.display()))?;
        let shown = store::postgres::redacted(&options.url);
        // The sync client runs its own runtime: opened on a blocking thread.
        let opened = tokio::task::spawn_blocking(move || store::PgStore::open(&options)).await;
        let store = opened.context("the store's opening task failed")?;
        return Ok(Arc::new(store.with_context(|| format!("failed to open the store {shown}"))?));
    }
    store::migrate::from_redb(&config.data_dir, config.cache_bytes)
        .with_context(|| format!("failed to migrate the redb store in {}", config.data_dir.display()))?;
    Ok(Arc::new(
        FileStore::open(&config.data_dir, config.cache_bytes)
            .with_context(|| format!("failed to open the store in {}", config.data_dir.display()))?,
    ))
}
