//! Loading of TOML config files (principals, tokens).
//!
//! A bad file stops start-up with the file name and the line at fault; the TOML parser's message
//! carries the line and column. Secrets from the file never appear in the error: the message
//! quotes the offending line only for syntax errors, where the file is not a config at all.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected shape.
    #[error("invalid {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where (line and column).
        message: String,
    },
}

/// Reads and parses a TOML file into `T` (which should use `#[serde(deny_unknown_fields)]`).
///
/// # Errors
/// [`ConfigError::Read`] or [`ConfigError::Parse`].
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse_toml(path, &text)
}

/// Parses TOML `text` that came from `path` (used in errors only).
///
/// # Errors
/// [`ConfigError::Parse`].
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|err| ConfigError::Parse { path: path.to_owned(), message: describe(&err, text) })
}

/// Returns "line N, column M: <message>" for a TOML error.
fn describe(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().trim_end_matches('.').to_owned();
    let Some(span) = err.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
    format!("line {line}, column {column}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct File {
        entry: Vec<Entry>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: String,
    }

    #[test]
    fn reports_the_line_at_fault() {
        let path = Path::new("tokens.toml");
        let ok: File = parse_toml(path, "[[entry]]\nname = \"a\"\n").unwrap();
        assert_eq!(ok.entry[0].name, "a");

        let unknown = parse_toml::<File>(path, "[[entry]]\nname = \"a\"\n\n[[entry]]\nnam = \"b\"\n").unwrap_err();
        let message = unknown.to_string();
        assert!(message.starts_with("invalid tokens.toml: line 5, column 1: unknown field `nam`"), "{message}");

        let syntax = parse_toml::<File>(path, "[[entry]]\nname = \n").unwrap_err().to_string();
        assert!(syntax.contains("line 2"), "{syntax}");

        let missing = load_toml::<File>(Path::new("/nonexistent/tokens.toml")).unwrap_err().to_string();
        assert!(missing.starts_with("cannot read /nonexistent/tokens.toml"), "{missing}");
    }
}
