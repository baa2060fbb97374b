//! Alerts: rules over each location's stored events ([`rule`]), evaluated in location order from
//! durable cursors ([`evaluator`], [`trigger`]), kept in their own file ([`state`]), notified as
//! signed CloudEvents webhooks ([`webhook`]) and as a resumable stream of firings.
//!
//! [`Alerts`] is the service code behind the gRPC `AlertService`: plain requests in, plain
//! results and [`Error`]s out.

mod backend;
mod evaluator;
mod meters;
mod rpc;
pub mod rule;
mod shared;
mod state;
mod trigger;
pub mod webhook;

use std::sync::Arc;

use qtrail_proto::qtrail::audit::v1 as proto;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

pub(crate) use backend::AlertStore;
pub(crate) use evaluator::Evaluator;
pub(crate) use rpc::AlertRpc;
pub(crate) use webhook::{Channels, RetryPolicy};

use crate::access;
use crate::error::{Error, Result};
use crate::fanout::Fanout;
use crate::ingest::blocking;
use crate::lifecycle::Lifecycle;
use crate::registry::{parse_location, require_collector};
use crate::replica::Role;
use crate::scope::Scope;
use crate::store::EventStore;
use evaluator::{Progress as _, now_millis, timestamp};
use state::RuleState;
use trigger::TriggerState;

/// How often a watch over the shared alert state reads it again: the leader, on another
/// replica, records the firings.
const SHARED_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Returns after [`SHARED_POLL`] over a shared alert state, never over an embedded one (its
/// firings are all made here, and tell the watch themselves).
async fn poll_shared(shared: bool) {
    if shared {
        tokio::time::sleep(SHARED_POLL).await;
    } else {
        std::future::pending::<()>().await;
    }
}

/// Most events a dry run reads.
pub const MAX_TEST_EVENTS: u32 = 10_000;
/// Events a dry run reads when the request says 0.
pub const DEFAULT_TEST_EVENTS: u32 = 1000;
/// Firings a watch reads from the state per step.
const WATCH_CHUNK: usize = 100;
/// Delivery changes held for watches; a watch further behind skips the oldest (the firings'
/// stored states stay right, and the next read shows them).
const CHANGES_BUFFER: usize = 1024;

/// The alert service over the event store and the alert state.
#[derive(Debug, Clone)]
pub(crate) struct Alerts {
    store: Arc<dyn EventStore>,
    state: Arc<AlertStore>,
    wake: Arc<Notify>,
    firings: watch::Receiver<u64>,
    changes: broadcast::Sender<u64>,
    /// Tells of the firings an update or delete records.
    notifier: Arc<evaluator::Notifier>,
    lifecycle: Lifecycle,
}

impl Alerts {
    /// Returns the service and its evaluator, whose webhook workers stop with `stop`.
    pub(crate) fn start(
        store: Arc<dyn EventStore>,
        state: Arc<AlertStore>,
        policy: RetryPolicy,
        lifecycle: Lifecycle,
        stop: CancellationToken,
    ) -> Result<(Alerts, Evaluator)> {
        let wake = Arc::new(Notify::new());
        let last = state.last_firing()?;
        let (sender, firings) = watch::channel(last);
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        let channels = Channels::new(state.clone(), policy, stop, changes.clone());
        let notifier = Arc::new(evaluator::Notifier { channels, firings: sender });
        let warnings = Arc::default();
        let evaluator = Evaluator {
            store: store.clone(),
            state: state.clone(),
            notifier: notifier.clone(),
            warnings,
            memory: Arc::default(),
            wake: wake.clone(),
        };
        Ok((Self { store, state, wake, firings, changes, notifier, lifecycle }, evaluator))
    }

    /// Creates a rule; it sees the events stored from now on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::CollectorNotFound`], [`Error::AlertRuleExists`],
    /// [`Error::ResourceExhausted`] past the rules cap.
    pub(crate) async fn create(
        &self,
        caller: &str,
        request: proto::CreateAlertRuleRequest,
    ) -> Result<proto::AlertRule> {
        let mut wire = request.rule.ok_or_else(|| Error::invalid("missing rule"))?;
        let checked = rule::check(&wire)?;
        require_collector(&self.store, checked.location.clone()).await?;
        let now = now_millis();
        wire.create_time = Some(timestamp(now));
        wire.update_time = wire.create_time;
        if let Some(webhook) = &mut wire.webhook {
            webhook.has_secret = false;
        }
        let (store, state) = (self.store.clone(), self.state.clone());
        let stored = blocking(move || {
            let cursor = store.last_seq(&checked.location)?;
            wire.cursor = cursor;
            state.create(&wire, &RuleState { cursor, generation: 0, trigger: TriggerState::new(now) })?;
            Ok(wire)
        })
        .await?;
        access::rule_changed(caller, "CreateAlertRule", &stored.location, &stored.name);
        self.wake.notify_one();
        Ok(rule::public(stored))
    }

    /// Returns a rule.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::AlertRuleNotFound`].
    pub(crate) async fn get(&self, request: proto::GetAlertRuleRequest) -> Result<proto::AlertRule> {
        parse_location(&request.location)?;
        rule::check_name(&request.name)?;
        let state = self.state.clone();
        let (location, name) = (request.location.clone(), request.name.clone());
        let found = blocking(move || state.rule(&location, &name)).await?;
        found
            .map(|(stored, _)| rule::public(stored))
            .ok_or(Error::AlertRuleNotFound { location: request.location, name: request.name })
    }

    /// Returns a location's rules.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location.
    pub(crate) async fn list(&self, request: proto::ListAlertRulesRequest) -> Result<proto::ListAlertRulesResponse> {
        let location = parse_location(&request.location)?;
        let state = self.state.clone();
        let rules = blocking(move || state.rules(Some(location.as_str()))).await?;
        Ok(proto::ListAlertRulesResponse { rules: rules.into_iter().map(|(stored, _)| rule::public(stored)).collect() })
    }

    /// Replaces a rule.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::AlertRuleNotFound`].
    pub(crate) async fn update(
        &self,
        caller: &str,
        request: proto::UpdateAlertRuleRequest,
    ) -> Result<proto::AlertRule> {
        let mut wire = request.rule.ok_or_else(|| Error::invalid("missing rule"))?;
        // A webhook without a secret keeps the stored one: checked below once it is filled in.
        let keeps_secret = wire.webhook.as_ref().is_some_and(|webhook| webhook.secret.is_empty());
        if !keeps_secret {
            rule::check(&wire)?;
        } else {
            parse_location(&wire.location)?;
            rule::check_name(&wire.name)?;
        }
        let now = now_millis();
        wire.update_time = Some(timestamp(now));
        let (store, state) = (self.store.clone(), self.state.clone());
        let stored = blocking(move || {
            if keeps_secret {
                let old = state.rule(&wire.location, &wire.name)?;
                let secret = old.and_then(|(old, _)| old.webhook).map(|webhook| webhook.secret).unwrap_or_default();
                let mut filled = wire.clone();
                if let Some(webhook) = &mut filled.webhook {
                    webhook.secret = secret;
                }
                rule::check(&filled)?;
            }
            state.update(wire, now, &|old, old_state| evaluator::closing(store.as_ref(), old, old_state, now))
        })
        .await?;
        let (stored, closed) = stored;
        self.tell_closed(closed);
        access::rule_changed(caller, "UpdateAlertRule", &stored.location, &stored.name);
        self.wake.notify_one();
        Ok(rule::public(stored))
    }

    /// Deletes a rule.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::AlertRuleNotFound`].
    pub(crate) async fn delete(&self, caller: &str, request: proto::DeleteAlertRuleRequest) -> Result<()> {
        parse_location(&request.location)?;
        rule::check_name(&request.name)?;
        let (store, state) = (self.store.clone(), self.state.clone());
        let (location, name) = (request.location.clone(), request.name.clone());
        let now = now_millis();
        let close = move |old: &proto::AlertRule, old_state: &RuleState| {
            evaluator::closing(store.as_ref(), old, old_state, now)
        };
        let closed = blocking(move || state.delete(&location, &name, now, &close)).await?;
        self.tell_closed(closed);
        access::rule_changed(caller, "DeleteAlertRule", &request.location, &request.name);
        self.wake.notify_one();
        Ok(())
    }

    /// Tells workers and watches of what an update or delete recorded and failed.
    fn tell_closed(&self, closed: state::Closed) {
        self.notifier.recorded(&closed.recorded);
        for number in closed.failed {
            // Without watches listening there is no one to tell.
            drop(self.changes.send(number));
        }
    }

    /// Runs a rule over the newest stored events without storing or notifying anything.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::CollectorNotFound`].
    pub(crate) async fn test(
        &self,
        request: proto::TestAlertRuleRequest,
        scope: &Scope,
    ) -> Result<proto::TestAlertRuleResponse> {
        let wire = request.rule.ok_or_else(|| Error::invalid("missing rule"))?;
        let mut checked = rule::check(&wire)?;
        // A scoped caller's trial counts, samples and fires on the events it may read alone.
        checked.filter = checked.filter.within(scope);
        let wanted = match request.events {
            0 => DEFAULT_TEST_EVENTS,
            n if n > MAX_TEST_EVENTS => {
                return Err(Error::invalid(format!("events {n} is over the limit of {MAX_TEST_EVENTS}")));
            }
            n => n,
        };
        require_collector(&self.store, checked.location.clone()).await?;
        let store = self.store.clone();
        blocking(move || {
            let last = store.last_seq(&checked.location)?;
            let from = last.saturating_sub(u64::from(wanted)) + 1;
            let events = store.events(&checked.location, from, wanted as usize)?;
            let mut state = TriggerState::new(events.first().map_or(0, trigger::receive_millis));
            let mut notices = Vec::new();
            let mut response = proto::TestAlertRuleResponse { scanned: events.len() as u64, ..Default::default() };
            for event in &events {
                if checked.filter.matches(event) {
                    response.matched += 1;
                    if response.samples.len() < trigger::MAX_SAMPLES {
                        response.samples.push(event.clone());
                    }
                }
                trigger::on_event(&checked, &mut state, event, &mut notices);
            }
            if let Some(newest) = events.last() {
                trigger::on_tick(&checked, &mut state, trigger::receive_millis(newest), &mut notices);
            }
            response.firings = notices.len() as u64;
            Ok(response)
        })
        .await
    }

    /// Checks a watch request and returns where the stream starts: the firing number after
    /// which it sends.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location or a cursor past the newest firing.
    pub(crate) fn open_watch(&self, request: &proto::WatchAlertsRequest, scope: &Scope) -> Result<Watch> {
        let location = match request.location.as_str() {
            "" => None,
            location => Some(parse_location(location)?.to_string()),
        };
        let newest = *self.firings.borrow();
        let after = match (request.from_start, request.after) {
            (true, 0) => 0,
            (true, _) => return Err(Error::invalid("give either from_start or after, not both")),
            (false, 0) => newest,
            (false, after) if after > newest => {
                return Err(Error::invalid(format!("after {after} is past the newest firing {newest}")));
            }
            (false, after) => after,
        };
        // Subscribed here, before the call returns, so that no change after it is missed.
        let changes = request.delivery_updates.then(|| self.changes.subscribe());
        Ok(Watch { location, after, changes, scope: scope.clone() })
    }

    /// Streams firings after the watch's cursor, then new ones as they are recorded (and
    /// delivery changes, if asked for), until the client goes or the collector stops.
    pub(crate) async fn watch(self, watch: Watch, out: mpsc::Sender<Result<proto::AlertFiring>>) {
        let Watch { location, mut after, mut changes, scope } = watch;
        let mut newest = self.firings.clone();
        loop {
            // Read before the firings, so that one recorded meanwhile still marks a change.
            let seen = *newest.borrow_and_update();
            let (state, wanted) = (self.state.clone(), location.clone());
            let firings = match blocking(move || state.firings(wanted.as_deref(), after, WATCH_CHUNK)).await {
                Ok(firings) => firings,
                Err(err) => {
                    self.lifecycle.send(&out, Err(err)).await;
                    return;
                }
            };
            let read_all = firings.len() < WATCH_CHUNK;
            for firing in firings {
                after = firing.number;
                let Some(firing) = scope.firing(firing) else { continue };
                if !self.lifecycle.send(&out, Ok(firing)).await {
                    return;
                }
            }
            if !read_all {
                continue;
            }
            // Everything up to `seen` was read, whether of this location or not.
            after = after.max(seen);
            tokio::select! {
                changed = newest.changed() => if changed.is_err() { return },
                () = poll_shared(self.state.is_shared()) => {}
                Some(number) = next_change(&mut changes) => {
                    if !self.send_update(location.as_deref(), number, &scope, &out).await {
                        return;
                    }
                }
                () = self.lifecycle.stopping() => return,
                () = out.closed() => return,
            }
        }
    }

    /// Sends firing `number` again, marked as a delivery update, if it is of the watched
    /// location; returns false when the stream is done.
    async fn send_update(
        &self,
        location: Option<&str>,
        number: u64,
        scope: &Scope,
        out: &mpsc::Sender<Result<proto::AlertFiring>>,
    ) -> bool {
        let state = self.state.clone();
        // Looked up by number: a watch of a quiet location must not walk every firing after it.
        let read = blocking(move || state.firing(number)).await;
        match read {
            Ok(firing) => match firing
                .filter(|firing| location.is_none_or(|location| firing.location == location))
                .and_then(|firing| scope.firing(firing))
            {
                Some(firing) => {
                    self.lifecycle.send(out, Ok(proto::AlertFiring { delivery_update: true, ..firing })).await
                }
                None => true,
            },
            Err(err) => {
                self.lifecycle.send(out, Err(err)).await;
                false
            }
        }
    }
}

/// A checked watch: its location (all without), the firing number it sends after, and its
/// subscription to delivery changes if it asked for them.
#[derive(Debug)]
pub(crate) struct Watch {
    location: Option<String>,
    after: u64,
    changes: Option<broadcast::Receiver<u64>>,
    /// The caller's accounts: what it may see of each firing.
    scope: Scope,
}

/// Returns the next changed firing's number; never, without a subscription.
async fn next_change(changes: &mut Option<broadcast::Receiver<u64>>) -> Option<u64> {
    let Some(changes) = changes else {
        return std::future::pending().await;
    };
    loop {
        match changes.recv().await {
            Ok(number) => return Some(number),
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// Spawns the evaluator over the committed-batch fan-out until `stop`; it evaluates only while
/// `role` leads.
pub(crate) fn spawn(
    evaluator: Evaluator,
    committed: &Fanout,
    role: Role,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(evaluator.run(committed.subscribe(), role, stop))
}
