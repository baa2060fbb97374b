//! HTTP-equivalent status codes, the way Activity Tracker uses them as `reason.reasonCode`:
//! the reason phrase, the outcome and the severity that follow from a code.

use crate::action::Action;
use crate::event::{Outcome, Severity};

/// Returns the reason phrase of an HTTP status code (`Conflict` for 409), or the name of its
/// class for codes without a well-known phrase.
pub fn reason_phrase(code: u16) -> &'static str {
    if let Some(phrase) = well_known_phrase(code) {
        return phrase;
    }
    match code / 100 {
        1 => "Informational",
        2 => "Success",
        3 => "Redirection",
        4 => "Client Error",
        _ => "Server Error",
    }
}

fn well_known_phrase(code: u16) -> Option<&'static str> {
    let phrase = match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        424 => "Failed Dependency",
        429 => "Too Many Requests",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => return None,
    };
    Some(phrase)
}

/// Returns the outcome a status code implies: 202 is pending (accepted, not finished), other
/// codes below 400 succeed, 400 and above fail.
pub fn outcome_for(code: u16) -> Outcome {
    match code {
        202 => Outcome::Pending,
        0..=399 => Outcome::Success,
        _ => Outcome::Failure,
    }
}

/// Returns true when `outcome` is one that `code` can carry: a failure needs a code of 400 or
/// more, success and pending one below 400.
pub fn outcome_fits(outcome: Outcome, code: u16) -> bool {
    match outcome {
        Outcome::Failure => code >= 400,
        Outcome::Success | Outcome::Pending => code < 400,
    }
}

/// Returns the severity of an action that ended with `code`: the action's base severity, raised
/// by a failure (401, 403, 503 and 507 to critical; any other 4xx or 5xx to at least warning).
pub fn severity_for(action: Action, code: u16) -> Severity {
    let raised = match code {
        401 | 403 | 503 | 507 => Severity::Critical,
        400..=599 => Severity::Warning,
        _ => Severity::Normal,
    };
    action.base_severity().max(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_table() {
        let cases = [
            (Action::ProgramRead, 200, Severity::Normal),
            (Action::JobRead, 200, Severity::Normal),
            (Action::JobCreate, 201, Severity::Normal),
            (Action::ProgramCreate, 200, Severity::Normal),
            (Action::ProgramUpdate, 200, Severity::Warning),
            (Action::JobCancel, 200, Severity::Warning),
            (Action::ProgramDelete, 200, Severity::Critical),
            (Action::JobDelete, 200, Severity::Critical),
            (Action::JobRead, 400, Severity::Warning),
            (Action::JobRead, 401, Severity::Critical),
            (Action::ProgramRead, 403, Severity::Critical),
            (Action::JobRead, 404, Severity::Warning),
            (Action::JobCancel, 409, Severity::Warning),
            (Action::ProgramCreate, 409, Severity::Warning),
            (Action::JobCreate, 429, Severity::Warning),
            (Action::JobRead, 500, Severity::Warning),
            (Action::JobCreate, 503, Severity::Critical),
            (Action::JobCreate, 507, Severity::Critical),
            (Action::JobDelete, 404, Severity::Critical),
        ];
        for (action, code, expected) in cases {
            assert_eq!(severity_for(action, code), expected, "{action} {code}");
        }
    }

    #[test]
    fn outcome_and_phrase_follow_the_code() {
        assert_eq!(outcome_for(200), Outcome::Success);
        assert_eq!(outcome_for(202), Outcome::Pending);
        assert_eq!(outcome_for(404), Outcome::Failure);
        assert_eq!(outcome_for(503), Outcome::Failure);
        assert!(outcome_fits(Outcome::Failure, 409));
        assert!(!outcome_fits(Outcome::Failure, 200));
        assert!(!outcome_fits(Outcome::Success, 500));
        assert_eq!(reason_phrase(409), "Conflict");
        assert_eq!(reason_phrase(403), "Forbidden");
        assert_eq!(reason_phrase(418), "Client Error");
        assert_eq!(reason_phrase(599), "Server Error");
    }
}
