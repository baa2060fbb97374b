//! The eight Qiskit Runtime audit actions and what follows from each: the kind of resource it
//! acts on, its verb, its base severity and its CADF taxonomy action.

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
}

impl ResourceKind {
    /// Returns the name used in actions and as the CRN resource type (`program`, `job`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Program => "program",
            ResourceKind::Job => "job",
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
        }
    }
}

/// One of the eight audited Qiskit Runtime actions, written `quantum-computing.<kind>.<verb>`.
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
}

impl Action {
    /// Every action, in a stable order.
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
        }
    }

    /// Returns the kind of resource the action is performed on.
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            Action::ProgramCreate | Action::ProgramRead | Action::ProgramUpdate | Action::ProgramDelete => {
                ResourceKind::Program
            }
            Action::JobCreate | Action::JobRead | Action::JobCancel | Action::JobDelete => ResourceKind::Job,
        }
    }

    /// Returns what the action does.
    pub fn verb(self) -> Verb {
        match self {
            Action::ProgramCreate | Action::JobCreate => Verb::Create,
            Action::ProgramRead | Action::JobRead => Verb::Read,
            Action::ProgramUpdate => Verb::Update,
            Action::ProgramDelete | Action::JobDelete => Verb::Delete,
            Action::JobCancel => Verb::Cancel,
        }
    }

    /// Returns the severity of a successful call (Activity Tracker adoption guidelines:
    /// read/list/create normal, update warning, delete critical; cancel is treated as an update).
    pub fn base_severity(self) -> Severity {
        match self.verb() {
            Verb::Create | Verb::Read => Severity::Normal,
            Verb::Update | Verb::Cancel => Severity::Warning,
            Verb::Delete => Severity::Critical,
        }
    }

    /// Returns the DMTF CADF taxonomy action. A read whose target is the whole service instance
    /// is a list (`read/list`); a cancel is `update/cancel`, since bare `cancel` is not in the
    /// taxonomy.
    pub fn cadf_action(self, target_is_instance: bool) -> &'static str {
        match self.verb() {
            Verb::Create => "create",
            Verb::Read if target_is_instance => "read/list",
            Verb::Read => "read",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Cancel => "update/cancel",
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
        Action::ALL
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
        }
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
    }
}
