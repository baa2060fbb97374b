//! The object store an archive lives in, opened from its URL with `object_store`: `s3://bucket/
//! prefix` (options from the usual `AWS_*` variables: `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
//! `AWS_ACCESS_KEY_ID`, …), `gs://` (`GOOGLE_*`), `az://` (`AZURE_*`) and `file:///path`.

use std::sync::Arc;

use futures_util::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use url::Url;

use super::ArchiveError;
use super::format::{MANIFEST_SUFFIX, parse_range_name};

/// Environment variables that configure the object store clients, by prefix.
const OPTION_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

/// An archive's place: a store and the prefix under which each location has a directory.
#[derive(Debug, Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

/// A manifest found by listing: its range and full path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// First position of its range.
    pub first: u64,
    /// Last position of its range.
    pub last: u64,
    /// Its path in the store.
    pub path: Path,
}

impl Archive {
    /// Opens the archive at `url`, configured from the environment and then `options`
    /// (`key=value`, the `object_store` keys such as `aws_endpoint`, which win over the
    /// environment).
    ///
    /// # Errors
    /// [`ArchiveError::Config`] when the URL or an option is malformed, or names an unsupported
    /// store.
    pub fn open(url: &str, options: &[String]) -> Result<Self, ArchiveError> {
        // reqwest's rustls has no crypto provider of its own here: ring, as for the rest.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parsed = Url::parse(url).map_err(|err| ArchiveError::Config(format!("archive url `{url}`: {err}")))?;
        let mut settings: Vec<(String, String)> =
            std::env::vars().filter(|(key, _)| OPTION_PREFIXES.iter().any(|prefix| key.starts_with(prefix))).collect();
        for option in options {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| ArchiveError::Config(format!("archive option `{option}` is not key=value")))?;
            settings.push((key.to_owned(), value.to_owned()));
        }
        let (store, prefix) = object_store::parse_url_opts(&parsed, settings)
            .map_err(|err| ArchiveError::Config(format!("archive url `{url}`: {err}")))?;
        if parsed.scheme() == "file" {
            // The local store writes under an existing directory only.
            std::fs::create_dir_all(parsed.path())
                .map_err(|err| ArchiveError::Config(format!("archive directory {}: {err}", parsed.path())))?;
        }
        Ok(Self { store: Arc::from(store), prefix, url: url.to_owned() })
    }

    /// Returns the URL it was opened from (no secrets: those come from the environment).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the path of `name` in `location`'s directory.
    pub fn path(&self, location: &str, name: &str) -> Path {
        self.prefix.clone().join(location).join(name)
    }

    /// Writes `bytes` at `path`, replacing what is there (uploads are idempotent: the same name
    /// always gets the same bytes).
    ///
    /// # Errors
    /// [`ArchiveError::Object`] when the store fails.
    pub async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        self.store.put(path, PutPayload::from(bytes)).await.map_err(|err| object_error("write", path, &err))?;
        Ok(())
    }

    /// Reads the object at `path`.
    ///
    /// # Errors
    /// [`ArchiveError::Object`] when it is missing or the store fails.
    pub async fn get(&self, path: &Path) -> Result<Vec<u8>, ArchiveError> {
        let result = self.store.get(path).await.map_err(|err| object_error("read", path, &err))?;
        let bytes = result.bytes().await.map_err(|err| object_error("read", path, &err))?;
        Ok(bytes.to_vec())
    }

    /// Returns the manifests of `location`, by range.
    ///
    /// # Errors
    /// [`ArchiveError::Object`] when the store fails.
    pub async fn manifests(&self, location: &str) -> Result<Vec<Listed>, ArchiveError> {
        let dir = self.prefix.clone().join(location);
        let metas: Vec<_> =
            self.store.list(Some(&dir)).try_collect().await.map_err(|err| object_error("list", &dir, &err))?;
        let mut listed: Vec<Listed> = metas
            .into_iter()
            .filter(|meta| meta.location.as_ref().ends_with(MANIFEST_SUFFIX))
            .filter_map(|meta| {
                let (first, last) = parse_range_name(meta.location.filename()?)?;
                Some(Listed { first, last, path: meta.location })
            })
            .collect();
        listed.sort_by_key(|entry| (entry.first, entry.last));
        Ok(listed)
    }

    /// Returns the locations that have a directory in the archive.
    ///
    /// # Errors
    /// [`ArchiveError::Object`] when the store fails.
    pub async fn locations(&self) -> Result<Vec<String>, ArchiveError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|err| object_error("list", &self.prefix, &err))?;
        let mut locations: Vec<String> =
            listed.common_prefixes.iter().filter_map(|dir| dir.filename().map(str::to_owned)).collect();
        locations.sort();
        Ok(locations)
    }
}

fn object_error(what: &str, path: &Path, err: &object_store::Error) -> ArchiveError {
    ArchiveError::Object(format!("cannot {what} `{path}`: {err}"))
}
