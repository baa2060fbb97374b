//! `qtrail events verify --witness-key K [--witness-quorum N]`: the newest checkpoint of the
//! location, signed by the collector's key, must also carry C2SP tlog-cosignatures of enough of
//! the witnesses the auditor trusts. A witness cosigns only a checkpoint consistent with every
//! one it cosigned before, so a log that forked or went back cannot show them on its view.

use qtrail_cadf::checkpoint::VerifyingKey;
use qtrail_proto::qtrail::audit::v1::ListCheckpointsRequest;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use qtrail_tlog::CosignatureVerifier;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::consistency::open_head;
use crate::connect::authorized;
use crate::error::CliError;

/// The witnesses an auditor trusts and how many of them must have cosigned.
#[derive(Debug)]
pub(super) struct Quorum {
    witnesses: Vec<CosignatureVerifier>,
    needed: usize,
}

/// What the newest checkpoint showed.
#[derive(Debug)]
pub(super) struct Cosigned {
    size: u64,
    cosigned_by: Vec<String>,
    needed: usize,
}

impl Cosigned {
    /// Returns the verdict as JSON.
    pub(super) fn json(&self) -> Value {
        json!({ "treeSize": self.size, "cosignedBy": self.cosigned_by, "quorum": self.needed })
    }

    /// Returns the verdict as a line.
    pub(super) fn line(&self) -> String {
        format!(
            "witnesses ok: the newest checkpoint ({} leaves) is cosigned by {} of the {} required: {}",
            self.size,
            self.cosigned_by.len(),
            self.needed,
            self.cosigned_by.join(", ")
        )
    }
}

impl Quorum {
    /// Reads the `--witness-key` values (keys, or files holding one) and the quorum; `None`
    /// without keys.
    ///
    /// # Errors
    /// [`CliError::Usage`] for a key that is not a cosignature verifier key, or a quorum above the
    /// number of keys.
    pub(super) fn read(keys: &[String], quorum: Option<u32>) -> Result<Option<Self>, CliError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let mut witnesses = Vec::new();
        for value in keys {
            let path = std::path::Path::new(value);
            let vkey = if path.is_file() {
                std::fs::read_to_string(path).map_err(|source| CliError::File { path: value.clone(), source })?
            } else {
                value.clone()
            };
            let witness = CosignatureVerifier::parse(&vkey)
                .map_err(|err| CliError::Usage(format!("--witness-key `{}`: {err}", vkey.trim())))?;
            witnesses.push(witness);
        }
        let needed = quorum.map_or(witnesses.len(), |quorum| quorum as usize);
        if needed > witnesses.len() {
            return Err(CliError::Usage(format!(
                "--witness-quorum {needed} is more than the {} --witness-key given",
                witnesses.len()
            )));
        }
        Ok(Some(Self { witnesses, needed }))
    }

    /// Checks that the newest checkpoint of `location` is signed by one of `keys` and cosigned by
    /// a quorum of the witnesses.
    ///
    /// # Errors
    /// [`CliError::Checkpoint`] when it is not; RPC errors.
    pub(super) async fn check(
        &self,
        client: &mut EventQueryClient<Channel>,
        token: &str,
        location: &str,
        keys: &[VerifyingKey],
    ) -> Result<Cosigned, CliError> {
        let broken = |detail: String| CliError::Checkpoint { location: location.to_owned(), detail };
        let request = ListCheckpointsRequest { location: location.to_owned(), page_size: 1, before_number: 0 };
        let listed = client.list_checkpoints(authorized(request, token)?).await?.into_inner();
        let Some(newest) = listed.checkpoints.into_iter().next().filter(|newest| !newest.note.is_empty()) else {
            return Err(broken("no signed tree head to check the witnesses' cosignatures on".into()));
        };
        let (_, head) =
            open_head(&newest.note, location, keys).map_err(|why| broken(format!("the newest tree head: {why}")))?;
        let mut cosigned_by = Vec::new();
        let mut refused = Vec::new();
        for witness in &self.witnesses {
            match witness.verify_note(&newest.note) {
                Ok(_) => cosigned_by.push(witness.name().to_owned()),
                Err(err) => refused.push(format!("{}: {err}", witness.name())),
            }
        }
        if cosigned_by.len() < self.needed {
            return Err(broken(format!(
                "the newest checkpoint ({} leaves) is cosigned by {} of the {} witnesses required ({}): \
                 the log may show another view than the witnesses saw",
                head.size,
                cosigned_by.len(),
                self.needed,
                refused.join("; ")
            )));
        }
        Ok(Cosigned { size: head.size, cosigned_by, needed: self.needed })
    }
}
