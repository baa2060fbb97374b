//! The thin gRPC adapter of `AlertService` over [`Alerts`]: admins write, auditors read. Rule
//! changes are recorded on the trail ([`Usage`]) before they are answered; a change refused
//! for its input is recorded as a failure.

use qtrail_cadf::Action;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::alert_service_server::AlertService;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use super::Alerts;
use crate::grpc::{ResponseStream, STREAM_BUFFER, caller_name, caller_scope, channel_stream, log_read, require_role};
use crate::tokens::Role;
use crate::usage::{Usage, Use, User};

/// `AlertService` over [`Alerts`].
#[derive(Debug, Clone)]
pub(crate) struct AlertRpc {
    pub(crate) alerts: Alerts,
    pub(crate) tasks: TaskTracker,
    pub(crate) usage: Usage,
}

impl AlertRpc {
    /// Records the change of a rule `rule` (never its webhook secret), which ended with
    /// `result`, then returns `result`, or refuses the call when it cannot be recorded.
    async fn recorded<T>(
        &self,
        action: Action,
        user: User,
        rule: (&str, &str, Option<&proto::EventFilter>),
        result: crate::error::Result<T>,
    ) -> Result<T, Status> {
        let (location, name, filter) = rule;
        let used = Use::rule(action, user, location, name).with("name", name.into()).with_filter(filter);
        self.usage.record(used, &result).await?;
        Ok(result?)
    }
}

/// Returns the location, name and filter a rule of a request names (empty when it names none).
fn rule_of(rule: Option<&proto::AlertRule>) -> (String, String, Option<proto::EventFilter>) {
    rule.map(|rule| (rule.location.clone(), rule.name.clone(), rule.filter.clone())).unwrap_or_default()
}

#[tonic::async_trait]
impl AlertService for AlertRpc {
    type WatchAlertsStream = ResponseStream<proto::AlertFiring>;

    async fn create_alert_rule(
        &self,
        request: Request<proto::CreateAlertRuleRequest>,
    ) -> Result<Response<proto::AlertRule>, Status> {
        require_role(&request, Role::Admin)?;
        let caller = caller_name(&request);
        let (user, (location, name, filter)) = (User::of_grpc(&request), rule_of(request.get_ref().rule.as_ref()));
        let result = self.alerts.create(&caller, request.into_inner()).await;
        let rule = (location.as_str(), name.as_str(), filter.as_ref());
        Ok(Response::new(self.recorded(Action::AlertRuleCreate, user, rule, result).await?))
    }

    async fn get_alert_rule(
        &self,
        request: Request<proto::GetAlertRuleRequest>,
    ) -> Result<Response<proto::AlertRule>, Status> {
        log_read(&request, "GetAlertRule", &request.get_ref().location);
        Ok(Response::new(self.alerts.get(request.into_inner()).await?))
    }

    async fn list_alert_rules(
        &self,
        request: Request<proto::ListAlertRulesRequest>,
    ) -> Result<Response<proto::ListAlertRulesResponse>, Status> {
        log_read(&request, "ListAlertRules", &request.get_ref().location);
        Ok(Response::new(self.alerts.list(request.into_inner()).await?))
    }

    async fn update_alert_rule(
        &self,
        request: Request<proto::UpdateAlertRuleRequest>,
    ) -> Result<Response<proto::AlertRule>, Status> {
        require_role(&request, Role::Admin)?;
        let caller = caller_name(&request);
        let (user, (location, name, filter)) = (User::of_grpc(&request), rule_of(request.get_ref().rule.as_ref()));
        let result = self.alerts.update(&caller, request.into_inner()).await;
        let rule = (location.as_str(), name.as_str(), filter.as_ref());
        Ok(Response::new(self.recorded(Action::AlertRuleUpdate, user, rule, result).await?))
    }

    async fn delete_alert_rule(
        &self,
        request: Request<proto::DeleteAlertRuleRequest>,
    ) -> Result<Response<proto::DeleteAlertRuleResponse>, Status> {
        require_role(&request, Role::Admin)?;
        let caller = caller_name(&request);
        let user = User::of_grpc(&request);
        let (location, name) = (request.get_ref().location.clone(), request.get_ref().name.clone());
        let result = self.alerts.delete(&caller, request.into_inner()).await;
        let rule = (location.as_str(), name.as_str(), None);
        self.recorded(Action::AlertRuleDelete, user, rule, result).await?;
        Ok(Response::new(proto::DeleteAlertRuleResponse {}))
    }

    async fn test_alert_rule(
        &self,
        request: Request<proto::TestAlertRuleRequest>,
    ) -> Result<Response<proto::TestAlertRuleResponse>, Status> {
        let location = request.get_ref().rule.as_ref().map(|rule| rule.location.clone()).unwrap_or_default();
        log_read(&request, "TestAlertRule", &location);
        let scope = caller_scope(&request);
        Ok(Response::new(self.alerts.test(request.into_inner(), &scope).await?))
    }

    async fn watch_alerts(
        &self,
        request: Request<proto::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        log_read(&request, "WatchAlerts", &request.get_ref().location);
        let watch = self.alerts.open_watch(request.get_ref(), &caller_scope(&request))?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        self.tasks.spawn(self.alerts.clone().watch(watch, sender));
        Ok(Response::new(channel_stream(receiver)))
    }
}
