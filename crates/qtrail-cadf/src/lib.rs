//! The qtrail audit event model.
//!
//! One canonical model ([`AuditEvent`]) of a Qiskit Runtime audit event in the IBM Cloud
//! Activity Tracker profile of DMTF CADF, and everything derived from it:
//!
//! - the actions ([`Action`]: the runtime's eight and the collector's own) and the rules that
//!   follow from them and from the call's HTTP-equivalent status: severity, outcome, reason phrase ([`status`]);
//! - CRNs and location names ([`crn`]);
//! - building events from what a service knows ([`EventBuilder`]) and validating events from
//!   anywhere ([`AuditEvent::validate`]), with control characters escaped ([`text`]);
//! - two JSON forms: Activity Tracker JSON ([`at_json`]) and strict CADF JSON ([`cadf_json`]);
//! - the protobuf form ([`proto`]): the generated message, and the event's bytes written
//!   straight from the model and read with request and response data straight into JSON;
//! - canonical bytes and the SHA-256 hash chain ([`canonical`]).
//!
//! The crate does no I/O and knows nothing of tokio or tonic.

pub mod action;
pub mod at_json;
pub mod builder;
pub mod cadf_json;
pub mod canonical;
pub mod checkpoint;
pub mod crn;
pub mod error;
pub mod event;
pub mod proto;
pub mod status;
pub mod text;
pub mod validation;

pub use action::{Action, ResourceKind, Verb};
pub use builder::EventBuilder;
pub use canonical::{ChainHash, canonical_bytes, chain_hash, chain_hash_of_bytes};
pub use crn::{Crn, CrnError, Location};
pub use error::EventError;
pub use event::{AuditEvent, EventTime, Initiator, JsonObject, Outcome, Reason, Severity, Target};
pub use validation::{MAX_EVENT_BYTES, ValidEvent};
