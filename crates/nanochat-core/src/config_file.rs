//! Reading and writing configs and entities as JSON or TOML files, validated on the way in,
//! written atomically on the way out, with errors that name the file.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fs::{IoError, read, write_atomic};
use crate::validation::{Validate, ValidationError};

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Not valid JSON for this type.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// Not valid TOML for this type.
    #[error("{path}: invalid TOML: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        #[source]
        source: toml::de::Error,
    },
    /// Parsed, but a rule is broken.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The rule.
        #[source]
        source: Box<ValidationError>,
    },
    /// Neither `.json` nor `.toml`.
    #[error("{path}: unknown config format (use a .json or .toml file)")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
}

fn is_toml(path: &Path) -> Option<bool> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => Some(true),
        Some("json") => Some(false),
        _ => None,
    }
}

/// Parses JSON and validates.
pub fn from_json_str<T: DeserializeOwned + Validate>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let v: T = serde_json::from_str(text).map_err(|source| ConfigError::Json {
        path: path.into(),
        source,
    })?;
    v.validate().map_err(|e| ConfigError::Invalid {
        path: path.into(),
        source: Box::new(e),
    })?;
    Ok(v)
}

/// Parses TOML and validates.
pub fn from_toml_str<T: DeserializeOwned + Validate>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let v: T = toml::from_str(text).map_err(|source| ConfigError::Toml {
        path: path.into(),
        source,
    })?;
    v.validate().map_err(|e| ConfigError::Invalid {
        path: path.into(),
        source: Box::new(e),
    })?;
    Ok(v)
}

/// Loads a `.json` or `.toml` file and validates it.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let toml = is_toml(path).ok_or_else(|| ConfigError::UnknownFormat { path: path.into() })?;
    let bytes = read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    if toml {
        from_toml_str(path, &text)
    } else {
        from_json_str(path, &text)
    }
}

/// Renders as pretty JSON or TOML by the file's extension.
pub fn render<T: Serialize>(path: &Path, value: &T) -> Result<String, ConfigError> {
    let toml = is_toml(path).ok_or_else(|| ConfigError::UnknownFormat { path: path.into() })?;
    Ok(if toml {
        toml::to_string_pretty(value).expect("config types serialise to TOML")
    } else {
        serde_json::to_string_pretty(value).expect("config types serialise to JSON") + "\n"
    })
}

/// Writes a `.json` or `.toml` file atomically.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), ConfigError> {
    let text = render(path, value)?;
    write_atomic(path, text.as_bytes())?;
    Ok(())
}
