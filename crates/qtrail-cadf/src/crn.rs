//! Cloud Resource Names (CRNs) and location names.
//!
//! A CRN has ten colon-separated segments,
//! `crn:v1:<cname>:<ctype>:<service-name>:<location>:<scope>:<service-instance>:<resource-type>:<resource>`
//! (IBM Cloud docs, "Cloud Resource Names"). Qiskit Runtime events use
//! `crn:v1:bluemix:public:quantum-computing:<location>:a/<account>:<instance>::` for the service
//! instance and `...:<instance>:program:<id>` / `...:<instance>:job:<id>` for its resources.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Service name of every CRN Qiskit Runtime events refer to.
pub const SERVICE_NAME: &str = "quantum-computing";

/// Service instance of the collector in the CRNs of its own events: one per location, owned by
/// no account.
pub const COLLECTOR_INSTANCE: &str = "collector";

/// Why a string is not a valid CRN or location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrnError {
    /// The string does not start with `crn:`.
    #[error("does not start with `crn:`")]
    NotACrn,
    /// The string has fewer than ten segments.
    #[error("has {0} segments, a crn has 10")]
    SegmentCount(usize),
    /// Only version `v1` exists.
    #[error("unsupported version `{0}`, expected `v1`")]
    Version(String),
    /// A segment that must not be empty is empty.
    #[error("empty {0}")]
    Empty(&'static str),
    /// A segment holds characters it may not hold.
    #[error("invalid {segment} `{value}`")]
    Invalid {
        /// Which segment.
        segment: &'static str,
        /// The offending value.
        value: String,
    },
    /// Only the `public`, `dedicated` and `local` cloud types exist.
    #[error("unknown cloud type `{0}`")]
    CloudType(String),
}

/// A location (region) name such as `us-east` or `eu-de`: 2 to 32 lowercase ASCII letters,
/// digits and single dashes, starting with a letter and not ending with a dash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Location(String);

impl Location {
    /// Returns the location name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Location {
    type Err = CrnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || CrnError::Invalid { segment: "location", value: s.to_owned() };
        if s.is_empty() {
            return Err(CrnError::Empty("location"));
        }
        let well_formed = (2..=32).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && !s.contains("--")
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !well_formed {
            return Err(invalid());
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for Location {
    type Error = CrnError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Location> for String {
    fn from(location: Location) -> Self {
        location.0
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed CRN. Every constructor validates, so a `Crn` value is always well formed; its
/// string form is exactly the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Crn {
    text: String,
    /// Byte offsets of the ten segments in `text`.
    segments: [(usize, usize); 10],
}

/// Names of the ten CRN segments, for error messages and accessors.
const SEGMENT_NAMES: [&str; 10] = [
    "prefix",
    "version",
    "cname",
    "ctype",
    "service name",
    "location",
    "scope",
    "service instance",
    "resource type",
    "resource",
];

impl Crn {
    /// Returns the CRN of a Qiskit Runtime service instance.
    ///
    /// # Errors
    /// Fails when the account or instance holds characters a CRN segment may not hold.
    pub fn instance(location: &Location, account: &str, instance: &str) -> Result<Self, CrnError> {
        // Checked here because a colon in either would shift the segments and still parse.
        check_account(account)?;
        check_part("service instance", instance, is_free_char)?;
        format!("crn:v1:bluemix:public:{SERVICE_NAME}:{location}:a/{account}:{instance}::").parse()
    }

    /// Returns the CRN of the collector of `location`, the log source of the events about the
    /// trail's own use: `crn:v1:bluemix:public:qtrail:<location>::collector::`.
    pub fn collector(location: &Location) -> Self {
        let service = crate::action::COLLECTOR_SERVICE_NAME;
        format!("crn:v1:bluemix:public:{service}:{location}::{COLLECTOR_INSTANCE}::")
            .parse()
            .expect("a location makes a valid collector crn")
    }

    /// Returns the CRN of a resource of the same service instance, e.g. `job` `<id>`.
    ///
    /// # Errors
    /// Fails when the type or id holds characters a CRN segment may not hold.
    pub fn resource(&self, resource_type: &str, resource: &str) -> Result<Self, CrnError> {
        check_part("resource type", resource_type, is_name_char)?;
        let instance_part = &self.text[..self.segments[7].1];
        format!("{instance_part}:{resource_type}:{resource}").parse()
    }

    /// Returns this CRN with its scope set to the account `account`: the same service instance
    /// and resource, owned by another account (a program one account reads of another's).
    ///
    /// # Errors
    /// Fails when `account` holds characters a CRN segment may not hold.
    pub fn with_account(&self, account: &str) -> Result<Self, CrnError> {
        check_account(account)?;
        let (start, end) = self.segments[6];
        format!("{}a/{account}{}", &self.text[..start], &self.text[end..]).parse()
    }

    /// Returns the CRN of the service instance this CRN belongs to (itself for an instance).
    pub fn instance_crn(&self) -> Crn {
        if self.is_instance() {
            return self.clone();
        }
        let instance_part = &self.text[..self.segments[7].1];
        format!("{instance_part}::").parse().expect("the prefix of a valid crn is a valid instance crn")
    }

    fn segment(&self, index: usize) -> &str {
        let (start, end) = self.segments[index];
        &self.text[start..end]
    }

    /// Returns the whole CRN.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Returns the service name, e.g. `quantum-computing`.
    pub fn service_name(&self) -> &str {
        self.segment(4)
    }

    /// Returns the location segment, e.g. `us-east`.
    pub fn location(&self) -> &str {
        self.segment(5)
    }

    /// Returns the scope, e.g. `a/<account>`.
    pub fn scope(&self) -> &str {
        self.segment(6)
    }

    /// Returns the account id when the scope is `a/<account>`.
    pub fn account(&self) -> Option<&str> {
        self.scope().strip_prefix("a/")
    }

    /// Returns the service instance segment.
    pub fn service_instance(&self) -> &str {
        self.segment(7)
    }

    /// Returns the resource type (`program`, `job`), empty for an instance.
    pub fn resource_type(&self) -> &str {
        self.segment(8)
    }

    /// Returns the resource id, empty for an instance.
    pub fn resource_id(&self) -> &str {
        self.segment(9)
    }

    /// Returns true when the CRN names a service instance rather than a resource within one.
    pub fn is_instance(&self) -> bool {
        self.resource_type().is_empty() && self.resource_id().is_empty()
    }
}

/// Checks an account id as the scope of a CRN (`a/<account>`) takes it: not empty, printable
/// ASCII without spaces or `:`.
///
/// # Errors
/// [`CrnError::Empty`] or [`CrnError::Invalid`] naming the `scope` segment.
pub fn check_account(account: &str) -> Result<(), CrnError> {
    check_part("scope", account, is_free_char)
}

/// Returns the account of the CRN `crn` (its scope `a/<account>`) without parsing the rest:
/// the read paths ask it of every stored event they scan, whose CRNs were checked on ingest.
pub fn account_of(crn: &str) -> Option<&str> {
    crn.split(':').nth(6).and_then(|scope| scope.strip_prefix("a/"))
}

/// Checks one part of a CRN that is being assembled: not empty, only `allowed` characters.
fn check_part(segment: &'static str, value: &str, allowed: fn(char) -> bool) -> Result<(), CrnError> {
    if value.is_empty() {
        return Err(CrnError::Empty(segment));
    }
    if !value.chars().all(allowed) {
        return Err(CrnError::Invalid { segment, value: value.to_owned() });
    }
    Ok(())
}

/// Returns true for characters allowed in names of segments like service name or resource type.
fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// Returns true for characters allowed in free-form segments (scope, instance, resource): any
/// printable ASCII except the segment separator.
fn is_free_char(c: char) -> bool {
    c.is_ascii_graphic() && c != ':'
}

impl FromStr for Crn {
    type Err = CrnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.starts_with("crn:") {
            return Err(CrnError::NotACrn);
        }
        // The resource segment is the last one and free-form, so it alone may contain colons.
        let mut segments = [(0, 0); 10];
        let mut count = 0;
        let mut start = 0;
        for (index, c) in s.char_indices() {
            if c == ':' && count < 9 {
                segments[count] = (start, index);
                count += 1;
                start = index + 1;
            }
        }
        segments[count] = (start, s.len());
        count += 1;
        if count != 10 {
            return Err(CrnError::SegmentCount(count));
        }
        let crn = Crn { text: s.to_owned(), segments };
        crn.check()?;
        Ok(crn)
    }
}

impl Crn {
    fn check(&self) -> Result<(), CrnError> {
        let invalid =
            |index: usize| CrnError::Invalid { segment: SEGMENT_NAMES[index], value: self.segment(index).to_owned() };
        if self.segment(1) != "v1" {
            return Err(CrnError::Version(self.segment(1).to_owned()));
        }
        for index in [2, 4] {
            if self.segment(index).is_empty() {
                return Err(CrnError::Empty(SEGMENT_NAMES[index]));
            }
        }
        if !self.segment(2).chars().all(is_name_char) {
            return Err(invalid(2));
        }
        if !matches!(self.segment(3), "public" | "dedicated" | "local") {
            return Err(CrnError::CloudType(self.segment(3).to_owned()));
        }
        // Child services are written `parent.child`.
        if !self.segment(4).chars().all(|c| is_name_char(c) || c == '.') {
            return Err(invalid(4));
        }
        if self.location() != "global" {
            self.location().parse::<Location>()?;
        }
        let scope = self.scope();
        if !scope.is_empty() {
            let id = ["a/", "o/", "s/"].iter().find_map(|prefix| scope.strip_prefix(prefix));
            match id {
                Some(id) if !id.is_empty() && id.chars().all(is_free_char) => {}
                _ => return Err(invalid(6)),
            }
        }
        if !self.service_instance().chars().all(is_free_char) {
            return Err(invalid(7));
        }
        if !self.resource_type().chars().all(is_name_char) {
            return Err(invalid(8));
        }
        if !self.resource_id().chars().all(|c| is_free_char(c) || c == ':') {
            return Err(invalid(9));
        }
        if self.resource_type().is_empty() != self.resource_id().is_empty() {
            let missing = if self.resource_type().is_empty() { 8 } else { 9 };
            return Err(CrnError::Empty(SEGMENT_NAMES[missing]));
        }
        Ok(())
    }
}

impl fmt::Display for Crn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Crn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Crn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Longest resource id [`encode_resource_id`] keeps, in bytes.
pub const MAX_RESOURCE_ID_BYTES: usize = 256;

/// Returns `id` in a form that is always a valid CRN resource segment: characters a CRN may not
/// hold (and `%` itself) are percent-encoded as UTF-8, and the result is cut at
/// [`MAX_RESOURCE_ID_BYTES`]. Ids that come from callers (a `GetJob` for `no such id`) can then
/// still name the target of their audit event.
pub fn encode_resource_id(id: &str) -> String {
    let mut encoded = String::with_capacity(id.len());
    for c in id.chars() {
        if (is_free_char(c) || c == ':') && c != '%' {
            encoded.push(c);
        } else {
            let mut utf8 = [0; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        }
        if encoded.len() > MAX_RESOURCE_ID_BYTES {
            break;
        }
    }
    // Percent escapes and the rest are ASCII here, so any byte index is a char boundary.
    encoded.truncate(MAX_RESOURCE_ID_BYTES);
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us_east() -> Location {
        "us-east".parse().unwrap()
    }

    #[test]
    fn moves_a_resource_to_its_owners_account() {
        let job = Crn::instance(&us_east(), "acc-alice", "inst").unwrap().resource("program", "p-1").unwrap();
        let owned = job.with_account("acc-bob").unwrap();
        assert_eq!(owned.as_str(), "crn:v1:bluemix:public:quantum-computing:us-east:a/acc-bob:inst:program:p-1");
        assert_eq!(owned.account(), Some("acc-bob"));
        assert_eq!(account_of(owned.as_str()), Some("acc-bob"));
        assert!(job.with_account("a:b").is_err());
        assert!(job.with_account("").is_err());
        assert!(check_account("acc bob").is_err());
        assert_eq!(account_of("crn:v1:bluemix:public:svc:us-east:o/org:inst::"), None);
        assert_eq!(account_of("garbage"), None);
    }

    #[test]
    fn builds_instance_and_resource_crns() {
        let instance = Crn::instance(&us_east(), "acc-1", "inst-1").unwrap();
        assert_eq!(instance.as_str(), "crn:v1:bluemix:public:quantum-computing:us-east:a/acc-1:inst-1::");
        assert!(instance.is_instance());
        assert_eq!(instance.account(), Some("acc-1"));

        let job = instance.resource("job", "j-42").unwrap();
        assert_eq!(job.as_str(), "crn:v1:bluemix:public:quantum-computing:us-east:a/acc-1:inst-1:job:j-42");
        assert_eq!(job.resource_type(), "job");
        assert_eq!(job.resource_id(), "j-42");
        assert_eq!(job.location(), "us-east");
        assert_eq!(job.service_instance(), "inst-1");
        assert!(!job.is_instance());
        assert_eq!(job.instance_crn(), instance);
    }

    #[test]
    fn parses_documented_examples() {
        let cos = "crn:v1:bluemix:public:cloud-object-storage:global:a/59bcbfa6ea2f006b4ed7094c1a08dcdd:1a0ec336-f391-4091-a6fb-5e084a4c56f4::";
        let crn: Crn = cos.parse().unwrap();
        assert_eq!(crn.to_string(), cos);
        assert_eq!(crn.location(), "global");
        let bucket: Crn = format!("{}bucket:mybucket", &cos[..cos.len() - 1]).parse().unwrap();
        assert_eq!(bucket.resource_id(), "mybucket");
        // The resource segment is free-form and may itself contain colons.
        let nested: Crn = "crn:v1:bluemix:public:kms:us-south:a/acc:inst:key:a:b".parse().unwrap();
        assert_eq!(nested.resource_id(), "a:b");
    }

    #[test]
    fn rejects_malformed_crns() {
        let cases: &[(&str, CrnError)] = &[
            ("", CrnError::NotACrn),
            ("urn:v1:bluemix:public:x:us-east:a/a:i::", CrnError::NotACrn),
            ("crn:v1:bluemix:public:x:us-east", CrnError::SegmentCount(6)),
            ("crn:v2:bluemix:public:x:us-east:a/a:i::", CrnError::Version("v2".into())),
            ("crn:v1::public:x:us-east:a/a:i::", CrnError::Empty("cname")),
            ("crn:v1:bluemix:private:x:us-east:a/a:i::", CrnError::CloudType("private".into())),
            ("crn:v1:bluemix:public::us-east:a/a:i::", CrnError::Empty("service name")),
            (
                "crn:v1:bluemix:public:Quantum:us-east:a/a:i::",
                CrnError::Invalid { segment: "service name", value: "Quantum".into() },
            ),
            (
                "crn:v1:bluemix:public:x:US_EAST:a/a:i::",
                CrnError::Invalid { segment: "location", value: "US_EAST".into() },
            ),
            ("crn:v1:bluemix:public:x::a/a:i::", CrnError::Empty("location")),
            ("crn:v1:bluemix:public:x:us-east:b/a:i::", CrnError::Invalid { segment: "scope", value: "b/a".into() }),
            ("crn:v1:bluemix:public:x:us-east:a/:i::", CrnError::Invalid { segment: "scope", value: "a/".into() }),
            (
                "crn:v1:bluemix:public:x:us-east:a/a:in st::",
                CrnError::Invalid { segment: "service instance", value: "in st".into() },
            ),
            (
                "crn:v1:bluemix:public:x:us-east:a/a:i:Job:1",
                CrnError::Invalid { segment: "resource type", value: "Job".into() },
            ),
            ("crn:v1:bluemix:public:x:us-east:a/a:i:job:", CrnError::Empty("resource")),
            ("crn:v1:bluemix:public:x:us-east:a/a:i::1", CrnError::Empty("resource type")),
            (
                "crn:v1:bluemix:public:x:us-east:a/a:i:job:a\nb",
                CrnError::Invalid { segment: "resource", value: "a\nb".into() },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Crn>().unwrap_err(), *expected, "{text:?}");
        }
    }

    #[test]
    fn builder_rejects_bad_parts() {
        assert!(Crn::instance(&us_east(), "acc:1", "inst").is_err());
        assert!(Crn::instance(&us_east(), "acc", "in:st").is_err());
        assert!(Crn::instance(&us_east(), "", "inst").is_err());
        let instance = Crn::instance(&us_east(), "acc", "inst").unwrap();
        assert!(instance.resource("Job", "1").is_err());
        assert!(instance.resource("job", "").is_err());
    }

    #[test]
    fn encodes_untrusted_resource_ids() {
        assert_eq!(encode_resource_id("j-42"), "j-42");
        assert_eq!(encode_resource_id("no such id"), "no%20such%20id");
        assert_eq!(encode_resource_id("50%\né"), "50%25%0A%C3%A9");
        assert_eq!(encode_resource_id(&"x".repeat(1000)).len(), MAX_RESOURCE_ID_BYTES);
        let instance = Crn::instance(&us_east(), "acc", "inst").unwrap();
        for id in ["no such id", "<script>", "a\u{0}b", "🙂", &"é".repeat(500)] {
            assert!(instance.resource("job", &encode_resource_id(id)).is_ok(), "{id:?}");
        }
    }

    #[test]
    fn validates_locations() {
        for good in ["us-east", "eu-de", "jp-tok", "us-south", "ca-tor", "eu-gb2", "ab"] {
            assert_eq!(good.parse::<Location>().unwrap().as_str(), good);
        }
        for bad in ["", "a", "US-EAST", "us_east", "-us", "us-", "us--east", "1us", "us east", &"a".repeat(33)] {
            assert!(bad.parse::<Location>().is_err(), "{bad:?}");
        }
    }
}
