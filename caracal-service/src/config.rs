//! Settings from the environment.
//!
//! Every secret setting `NAME` may instead be given as `NAME_FILE`, the path of a file holding
//! it (mounted secrets). The rules ([`Env::var`]):
//!
//! - `NAME` set and not empty wins over `NAME_FILE`;
//! - the file's trailing whitespace (the newline editors add) is trimmed;
//! - a `NAME_FILE` that cannot be read, or whose content is empty after trimming, is an error
//!   (never silently "unset": a misspelt mount must not turn a published service into an
//!   unauthenticated one).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// A configuration error. Messages name the setting, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("{name} is required")]
    Missing {
        /// The setting.
        name: String,
    },
    /// `NAME_FILE` names a file that cannot be read.
    #[error("{name}_FILE: cannot read {path}: {reason}")]
    FileUnreadable {
        /// The setting.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `NAME_FILE` names an empty file.
    #[error("{name}_FILE: {path} is empty")]
    FileEmpty {
        /// The setting.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// The value does not parse.
    #[error("{name}: {reason}")]
    Invalid {
        /// The setting.
        name: String,
        /// Why (without the value).
        reason: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `name`.
    pub fn invalid(name: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Where settings come from: the process environment, or a map in tests.
#[derive(Clone)]
pub struct Env {
    lookup: Arc<Lookup>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self::from_fn(|name| std::env::var(name).ok())
    }

    /// Settings from `lookup`.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            lookup: Arc::new(lookup),
        }
    }

    /// Settings from `(name, value)` pairs (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let map: std::collections::HashMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self::from_fn(move |name| map.get(name).cloned())
    }

    /// The raw value of `name`, `None` when unset or empty.
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    /// `name`, or the content of the file named by `name_FILE` (module rules).
    pub fn var(&self, name: &str) -> Result<Option<String>, ConfigError> {
        if let Some(v) = self.raw(name) {
            return Ok(Some(v));
        }
        let Some(path) = self.raw(&format!("{name}_FILE")).map(PathBuf::from) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::FileUnreadable {
            name: name.to_owned(),
            path: path.clone(),
            reason: e.kind().to_string(),
        })?;
        let trimmed = text.trim_end();
        if trimmed.is_empty() {
            return Err(ConfigError::FileEmpty {
                name: name.to_owned(),
                path,
            });
        }
        Ok(Some(trimmed.to_owned()))
    }

    /// [`Env::var`], required.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.var(name)?.ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
        })
    }

    /// `name` parsed with [`FromStr`], or `default` when unset.
    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::invalid(name, e.to_string())),
        }
    }

    /// `CARACAL_MODE`, defaulting to [`Mode::Stable`] (services fail closed).
    pub fn mode(&self) -> Result<Mode, ConfigError> {
        match self.raw("CARACAL_MODE") {
            None => Ok(Mode::Stable),
            Some(v) => v.parse(),
        }
    }
}

/// How strict a service is. `rc` and `stable` are the published modes: they refuse unsafe
/// fallbacks (missing HMAC keys, in-memory stores, open metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Development: unsigned messages accepted, in-memory backends, open metrics.
    Dev,
    /// Release candidate (published).
    Rc,
    /// Stable (published); the default.
    Stable,
}

impl Mode {
    /// Whether this is a published mode (`rc` or `stable`).
    pub fn is_published(self) -> bool {
        !matches!(self, Mode::Dev)
    }

    /// The published-mode refusal every service shares: in `rc`/`stable`, each setting named in
    /// `required` whose flag says it is missing refuses start-up, naming the first one. In
    /// `dev` nothing is refused (the services fall back to generated keys, in-memory backends
    /// and open metrics, and log that they do).
    pub fn require(self, required: &[(&str, bool)]) -> Result<(), ConfigError> {
        if !self.is_published() {
            return Ok(());
        }
        match required.iter().find(|(_, missing)| *missing) {
            Some((name, _)) => Err(ConfigError::invalid(
                name,
                format!("is required when CARACAL_MODE is {}", self.as_str()),
            )),
            None => Ok(()),
        }
    }

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dev => "dev",
            Mode::Rc => "rc",
            Mode::Stable => "stable",
        }
    }
}

impl FromStr for Mode {
    type Err = ConfigError;

    /// `dev`, `rc` or `stable`, case-insensitive, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dev" => Ok(Mode::Dev),
            "rc" => Ok(Mode::Rc),
            "stable" => Ok(Mode::Stable),
            _ => Err(ConfigError::invalid(
                "CARACAL_MODE",
                "must be dev, rc or stable",
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shortest HMAC key accepted, in bytes.
pub const MIN_HMAC_KEY_BYTES: usize = 32;

/// Decode a hex HMAC key setting (`AUDIT_HMAC_KEY`, `STREAMS_HMAC_KEY`): hex, at least
/// [`MIN_HMAC_KEY_BYTES`] bytes after decoding. Errors name the setting, never the value.
pub fn parse_hex_key(name: &str, text: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = hex::decode(text.trim()).map_err(|_| ConfigError::invalid(name, "must be hex"))?;
    if bytes.len() < MIN_HMAC_KEY_BYTES {
        return Err(ConfigError::invalid(
            name,
            format!("must be at least {MIN_HMAC_KEY_BYTES} bytes (64 hex characters)"),
        ));
    }
    Ok(bytes)
}

/// A secret string (bearer or admin token): `Debug` shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for comparison or use; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Whether `header` is exactly `Bearer <expected>`, compared in constant time (a length
/// mismatch returns early, which reveals only the length).
pub fn bearer_matches(header: Option<&str>, expected: &Secret) -> bool {
    use subtle::ConstantTimeEq;
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (token.as_bytes(), expected.expose().as_bytes());
    !b.is_empty() && a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    #[test]
    fn file_indirection_rules() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "from-file  ").unwrap();
        let path = f.path().to_str().unwrap().to_owned();
        let env = Env::from_pairs([("A_FILE", path.as_str())]);
        assert_eq!(env.var("A").unwrap().as_deref(), Some("from-file"));
        let both = Env::from_pairs([("A", "value"), ("A_FILE", path.as_str())]);
        assert_eq!(
            both.var("A").unwrap().as_deref(),
            Some("value"),
            "value wins"
        );
        let empty = tempfile::NamedTempFile::new().unwrap();
        let env = Env::from_pairs([("A_FILE", empty.path().to_str().unwrap())]);
        assert!(matches!(env.var("A"), Err(ConfigError::FileEmpty { .. })));
        let env = Env::from_pairs([("A_FILE", "/nonexistent/caracal/secret")]);
        assert!(matches!(
            env.var("A"),
            Err(ConfigError::FileUnreadable { .. })
        ));
        assert_eq!(Env::from_pairs([]).var("A").unwrap(), None);
        assert!(matches!(
            Env::from_pairs([]).required("A"),
            Err(ConfigError::Missing { .. })
        ));
    }

    #[test]
    fn modes() {
        assert_eq!(Env::from_pairs([]).mode().unwrap(), Mode::Stable);
        for (text, mode) in [
            ("DEV", Mode::Dev),
            (" rc ", Mode::Rc),
            ("Stable", Mode::Stable),
        ] {
            assert_eq!(text.parse::<Mode>().unwrap(), mode);
        }
        assert!("prod".parse::<Mode>().is_err());
        assert!(!Mode::Dev.is_published() && Mode::Rc.is_published());
    }

    #[test]
    fn hex_keys_and_bearers() {
        assert_eq!(parse_hex_key("K", &"ab".repeat(32)).unwrap().len(), 32);
        let short = parse_hex_key("K", &"ab".repeat(31)).unwrap_err();
        assert!(
            !short.to_string().contains("abab"),
            "no value in the message"
        );
        assert!(parse_hex_key("K", "zz").is_err());
        let s = Secret::new("tok");
        assert!(bearer_matches(Some("Bearer tok"), &s));
        assert!(!bearer_matches(Some("Bearer tok2"), &s));
        assert!(!bearer_matches(Some("bearer tok"), &s));
        assert!(!bearer_matches(Some("tok"), &s));
        assert!(!bearer_matches(None, &s));
        assert!(!bearer_matches(Some("Bearer "), &Secret::new("")));
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }
}
