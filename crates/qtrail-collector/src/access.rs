//! The access log: one structured line (tracing target `qtrail::access`) per read of the audit
//! trail, through gRPC `EventQuery` or the console's API, and per call refused for its token
//! (also a Publish stream refused for its location or its publisher id), and per change of an
//! alert rule.
//!
//! Reading an audit trail is itself worth a record (NIST AU-9(4), G7 in the reliability
//! anchors): who read (the token's name, never the token), what (the call, the location), when
//! (the line's timestamp). Filter values stay out: they are what the auditor looked for, and
//! may be personal data that an operator's log pipeline should not collect by default.

use tracing::{info, warn};

/// Target of the access log's lines, for filters (`RUST_LOG=qtrail::access=info`) and log routing.
pub(crate) const TARGET: &str = "qtrail::access";

/// Records that the token named `token` read `location` through `call` (e.g. `QueryEvents`,
/// or `GET /api/locations/us-east/events` on the console).
pub(crate) fn read(token: &str, call: &str, location: &str) {
    // The location is the caller's text, checked later: escaped so it cannot forge log lines.
    let location = qtrail_cadf::text::escape_control(location);
    info!(target: TARGET, token, call, location = %location, "audit trail read");
}

/// Records a call refused before it ran: no token, an unknown one, or one of another role.
pub(crate) fn refused(needed_role: &str, reason: &str) {
    warn!(target: TARGET, needed_role, reason, "call refused");
}

/// Records a Publish stream refused because the token named `token` may not publish to
/// `location`, or may not publish under a publisher id bound to another token or client
/// certificate (or has no certificate where one binds): an attempt to write into another
/// location's trail, or as another publisher, is worth an operator's look.
pub(crate) fn publish_refused(token: &str, location: &str, reason: &str) {
    warn!(target: TARGET, token, call = "Publish", location, reason, "call refused");
}

/// Records that the token named `token` changed the alert rule `name` of `location` through
/// `call` (create, update, delete): rules decide who is told about what, so their changes are
/// part of the record. The rule's content (and its secret) stays out.
pub(crate) fn rule_changed(token: &str, call: &str, location: &str, name: &str) {
    info!(target: TARGET, token, call, location, rule = name, "alert rule changed");
}
