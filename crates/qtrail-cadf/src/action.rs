//! The audited actions and what follows from each: the kind of resource it acts on, its verb,
//! its base severity and its CADF taxonomy action. Two services emit them: Qiskit Runtime
//! (`quantum-computing`, the eight [`Action::ALL`]) and the collector itself (`qtrail`, the
//! auditors' and admins' use of the trail, [`Action::COLLECTOR`]). Both follow Activity
//! Tracker's `<service>.<object>.<verb>`.

use std::fmt;
use std::str::FromStr;

use crate::error::EventError;
use crate::event::Severity;

/// The kind of resource an action is performed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// An OpenQASM program.
    Program,
    /// An execution of a program.
    Job,
    /// A location's log (its chain of events), on the collector.
    Log,
    /// The collector's web console.
    Console,
    /// An alert rule of a location.
    AlertRule,
}

impl ResourceKind {
    /// Returns the name used in actions and as the CRN resource type (`program`, `job`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Program => "program",
            ResourceKind::Job => "job",
            ResourceKind::Log => "log",
            ResourceKind::Console => "console",
            ResourceKind::AlertRule => "alert-rule",
        }
    }
}

/// What an action does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Creates a resource.
    Create,
    /// Reads one resource or lists them.
    Read,
    /// Changes a resource.
    Update,
    /// Deletes a resource.
    Delete,
    /// Cancels a running job.
    Cancel,
    /// Follows new events as they arrive.
    Tail,
    /// Copies events out.
    Export,
    /// Checks a chain.
    Verify,
    /// Asks for an inclusion or consistency proof.
    Prove,
    /// Signs in.
    Login,
}

impl Verb {
    /// Returns the verb as it appears in an action.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Read => "read",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Cancel => "cancel",
            Verb::Tail => "tail",
            Verb::Export => "export",
            Verb::Verify => "verify",
            Verb::Prove => "prove",
            Verb::Login => "login",
        }
    }
}

/// Service name of the collector's own actions, the first segment of `qtrail.events.read`.
pub const COLLECTOR_SERVICE_NAME: &str = "qtrail";

/// One audited action: one of the eight Qiskit Runtime actions, written
/// `quantum-computing.<kind>.<verb>`, or one of the collector's own, `qtrail.<object>.<verb>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `quantum-computing.program.create`: a program is uploaded.
    ProgramCreate,
    /// `quantum-computing.program.read`: programs are listed or one is returned.
    ProgramRead,
    /// `quantum-computing.program.update`: a program's metadata, source or visibility changes.
    ProgramUpdate,
    /// `quantum-computing.program.delete`: a program is deleted.
    ProgramDelete,
    /// `quantum-computing.job.create`: a job is started.
    JobCreate,
    /// `quantum-computing.job.read`: jobs are listed, or a job's details, results or logs returned.
    JobRead,
    /// `quantum-computing.job.cancel`: a job is cancelled.
    JobCancel,
    /// `quantum-computing.job.delete`: a job is deleted.
    JobDelete,
    /// `qtrail.events.read`: a page or one event of a location's log is read.
    EventsRead,
    /// `qtrail.events.tail`: a tail of a location's log starts (or resumes).
    EventsTail,
    /// `qtrail.events.export`: a range of a location's log is exported.
    EventsExport,
    /// `qtrail.events.verify`: a location's chain is verified.
    EventsVerify,
    /// `qtrail.events.prove`: an inclusion or consistency proof of a location's log is served.
    EventsProve,
    /// `qtrail.console.login`: a token signs in to the console.
    ConsoleLogin,
    /// `qtrail.alert-rule.create`: an alert rule is created.
    AlertRuleCreate,
    /// `qtrail.alert-rule.update`: an alert rule is changed.
    AlertRuleUpdate,
    /// `qtrail.alert-rule.delete`: an alert rule is deleted.
    AlertRuleDelete,
    /// `qtrail.retention.update`: a location's retention changes.
    RetentionUpdate,
    /// `qtrail.hold.update`: a location's legal hold is set or released.
    HoldUpdate,
}

impl Action {
    /// The eight Qiskit Runtime actions, in a stable order.
    pub const ALL: [Action; 8] = [
        Action::ProgramCreate,
        Action::ProgramRead,
        Action::ProgramUpdate,
        Action::ProgramDelete,
        Action::JobCreate,
        Action::JobRead,
        Action::JobCancel,
        Action::JobDelete,
    ];

    /// The collector's own actions, in a stable order.
    pub const COLLECTOR: [Action; 11] = [
        Action::EventsRead,
        Action::EventsTail,
        Action::EventsExport,
        Action::EventsVerify,
        Action::EventsProve,
        Action::ConsoleLogin,
        Action::AlertRuleCreate,
        Action::AlertRuleUpdate,
        Action::AlertRuleDelete,
        Action::RetentionUpdate,
        Action::HoldUpdate,
    ];

    /// Every action: [`Action::ALL`] then [`Action::COLLECTOR`].
    pub const EVERY: [Action; 19] = [
        Action::ProgramCreate,
        Action::ProgramRead,
        Action::ProgramUpdate,
        Action::ProgramDelete,
        Action::JobCreate,
        Action::JobRead,
        Action::JobCancel,
        Action::JobDelete,
        Action::EventsRead,
        Action::EventsTail,
        Action::EventsExport,
        Action::EventsVerify,
        Action::EventsProve,
        Action::ConsoleLogin,
        Action::AlertRuleCreate,
        Action::AlertRuleUpdate,
        Action::AlertRuleDelete,
        Action::RetentionUpdate,
        Action::HoldUpdate,
    ];

    /// Returns the action string, e.g. `quantum-computing.job.cancel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ProgramCreate => "quantum-computing.program.create",
            Action::ProgramRead => "quantum-computing.program.read",
            Action::ProgramUpdate => "quantum-computing.program.update",
            Action::ProgramDelete => "quantum-computing.program.delete",
            Action::JobCreate => "quantum-computing.job.create",
            Action::JobRead => "quantum-computing.job.read",
            Action::JobCancel => "quantum-computing.job.cancel",
            Action::JobDelete => "quantum-computing.job.delete",
            Action::EventsRead => "qtrail.events.read",
            Action::EventsTail => "qtrail.events.tail",
            Action::EventsExport => "qtrail.events.export",
            Action::EventsVerify => "qtrail.events.verify",
            Action::EventsProve => "qtrail.events.prove",
            Action::ConsoleLogin => "qtrail.console.login",
            Action::AlertRuleCreate => "qtrail.alert-rule.create",
            Action::AlertRuleUpdate => "qtrail.alert-rule.update",
            Action::AlertRuleDelete => "qtrail.alert-rule.delete",
            Action::RetentionUpdate => "qtrail.retention.update",
            Action::HoldUpdate => "qtrail.hold.update",
        }
    }

    /// Returns the service that emits the action: `quantum-computing` or `qtrail`; the log
    /// source and target of its events are CRNs of that service.
    pub fn service(self) -> &'static str {
        self.as_str().split('.').next().unwrap_or_default()
    }

    /// Returns whether the collector emits the action (about the trail's own use), rather than
    /// a publisher.
    pub fn is_collector(self) -> bool {
        self.service() == COLLECTOR_SERVICE_NAME
    }

    /// Returns the object the action names, its middle segment (`job`, `events`, `alert-rule`).
    pub fn object(self) -> &'static str {
        self.as_str().split('.').nth(1).unwrap_or_default()
    }

    /// Returns the kind of resource the action is performed on.
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            Action::ProgramCreate | Action::ProgramRead | Action::ProgramUpdate | Action::ProgramDelete => {
                ResourceKind::Program
            }
            Action::JobCreate | Action::JobRead | Action::JobCancel | Action::JobDelete => ResourceKind::Job,
            Action::EventsRead
            | Action::EventsTail
            | Action::EventsExport
            | Action::EventsVerify
            | Action::EventsProve
            | Action::RetentionUpdate
            | Action::HoldUpdate => ResourceKind::Log,
            Action::ConsoleLogin => ResourceKind::Console,
            Action::AlertRuleCreate | Action::AlertRuleUpdate | Action::AlertRuleDelete => ResourceKind::AlertRule,
        }
    }

    /// Returns what the action does.
    pub fn verb(self) -> Verb {
        match self {
            Action::ProgramCreate | Action::JobCreate | Action::AlertRuleCreate => Verb::Create,
            Action::ProgramRead | Action::JobRead | Action::EventsRead => Verb::Read,
            Action::ProgramUpdate | Action::AlertRuleUpdate | Action::RetentionUpdate | Action::HoldUpdate => {
                Verb::Update
            }
            Action::ProgramDelete | Action::JobDelete | Action::AlertRuleDelete => Verb::Delete,
            Action::JobCancel => Verb::Cancel,
            Action::EventsTail => Verb::Tail,
            Action::EventsExport => Verb::Export,
            Action::EventsVerify => Verb::Verify,
            Action::EventsProve => Verb::Prove,
            Action::ConsoleLogin => Verb::Login,
        }
    }

    /// Returns the severity of a successful call (Activity Tracker adoption guidelines:
    /// read/list/create normal, update warning, delete critical; cancel is treated as an update,
    /// and the collector's reads of every kind as reads).
    pub fn base_severity(self) -> Severity {
        match self.verb() {
            Verb::Create | Verb::Read | Verb::Tail | Verb::Export | Verb::Verify | Verb::Prove | Verb::Login => {
                Severity::Normal
            }
            Verb::Update | Verb::Cancel => Severity::Warning,
            Verb::Delete => Severity::Critical,
        }
    }

    /// Returns the DMTF CADF taxonomy action. A read whose target is the whole service instance
    /// is a list (`read/list`); a cancel is `update/cancel`, since bare `cancel` is not in the
    /// taxonomy. Of the collector's verbs, a tail is `monitor`, an export and a proof `read`, a
    /// verification `evaluate` and a sign-in `authenticate/login`.
    pub fn cadf_action(self, target_is_instance: bool) -> &'static str {
        match self.verb() {
            Verb::Create => "create",
            Verb::Read if target_is_instance => "read/list",
            Verb::Read | Verb::Export | Verb::Prove => "read",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Cancel => "update/cancel",
            Verb::Tail => "monitor",
            Verb::Verify => "evaluate",
            Verb::Login => "authenticate/login",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::EVERY
            .into_iter()
            .find(|action| action.as_str() == s)
            .ok_or_else(|| EventError::UnknownAction(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_parses_from_its_display() {
        for action in Action::ALL {
            assert_eq!(action.to_string().parse::<Action>().unwrap(), action);
            let expected = format!("quantum-computing.{}.{}", action.resource_kind().as_str(), action.verb().as_str());
            assert_eq!(action.as_str(), expected);
            assert!(!action.is_collector());
        }
        for action in Action::COLLECTOR {
            assert_eq!(action.to_string().parse::<Action>().unwrap(), action);
            let expected = format!("qtrail.{}.{}", action.object(), action.verb().as_str());
            assert_eq!(action.as_str(), expected);
            assert!(action.is_collector());
        }
        let every: Vec<Action> = Action::ALL.into_iter().chain(Action::COLLECTOR).collect();
        assert_eq!(every, Action::EVERY);
    }

    #[test]
    fn rejects_unknown_actions() {
        for bad in
            ["", "quantum-computing.job", "quantum-computing.job.update", "Quantum-computing.job.read", "job.read"]
        {
            assert_eq!(bad.parse::<Action>().unwrap_err(), EventError::UnknownAction(bad.to_owned()));
        }
    }

    #[test]
    fn maps_to_cadf_taxonomy() {
        assert_eq!(Action::ProgramRead.cadf_action(true), "read/list");
        assert_eq!(Action::JobRead.cadf_action(false), "read");
        assert_eq!(Action::JobCancel.cadf_action(false), "update/cancel");
        assert_eq!(Action::ProgramCreate.cadf_action(true), "create");
        assert_eq!(Action::JobDelete.cadf_action(false), "delete");
        assert_eq!(Action::ProgramUpdate.cadf_action(false), "update");
        assert_eq!(Action::EventsTail.cadf_action(false), "monitor");
        assert_eq!(Action::EventsVerify.cadf_action(false), "evaluate");
        assert_eq!(Action::ConsoleLogin.cadf_action(true), "authenticate/login");
    }
}
