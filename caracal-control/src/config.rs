//! Settings of the Admin API from the environment.
//!
//! | Setting | |
//! |---|---|
//! | `PORT` | listen port, default 3000 |
//! | `SECRET_STORE_KEK` (+ `_PREVIOUS`, `_FILE`) | the KEK that seals provider secrets (required) |
//! | `CARACAL_BOOTSTRAP_ADMIN_TOKEN` (+ `_FILE`) | an optional global admin token from the environment |
//!
//! The bootstrap token is the way in before any admin token row exists: it acts as a global
//! token with every capability (the reference exempts it from the approve-capability rule).

use std::sync::Arc;

use caracal_core::secrets::Keyring;
use caracal_service::config::Secret;
use caracal_service::{ConfigError, Env};

/// The Admin API's default port.
pub const PORT: u16 = 3000;

/// The shortest bootstrap token accepted: a guessable bootstrap token would open every zone.
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 32;

/// Settings of the Admin API.
#[derive(Clone)]
pub struct AdminSettings {
    /// Listen port.
    pub port: u16,
    /// The KEK ring that seals provider secret documents.
    pub keyring: Arc<Keyring>,
    /// `CARACAL_BOOTSTRAP_ADMIN_TOKEN`, if set.
    pub bootstrap_token: Option<Secret>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("port", &self.port)
            .field("bootstrap_token", &self.bootstrap_token.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminSettings {
    /// Read and check the settings; any violation refuses to start.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let port: u16 = env.parse_or("PORT", PORT)?;
        let kek = env.required("SECRET_STORE_KEK")?;
        let previous = env.var("SECRET_STORE_KEK_PREVIOUS")?;
        let keyring = Keyring::from_hex(&kek, previous.as_deref())
            .map_err(|e| ConfigError::invalid("SECRET_STORE_KEK", e.to_string()))?;
        let bootstrap_token = env
            .var("CARACAL_BOOTSTRAP_ADMIN_TOKEN")?
            .map(|t| {
                if t.len() < MIN_BOOTSTRAP_TOKEN_LEN {
                    Err(ConfigError::invalid(
                        "CARACAL_BOOTSTRAP_ADMIN_TOKEN",
                        format!("must be at least {MIN_BOOTSTRAP_TOKEN_LEN} characters"),
                    ))
                } else {
                    Ok(Secret::new(t))
                }
            })
            .transpose()?;
        Ok(Self {
            port,
            keyring: Arc::new(keyring),
            bootstrap_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK: &str = "8f2a6c1e9b3d4f5a7c8e0b1d2f3a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

    #[test]
    fn reads_kek_and_bootstrap() {
        let token = "t".repeat(40);
        let env = Env::from_pairs([
            ("SECRET_STORE_KEK", KEK),
            ("CARACAL_BOOTSTRAP_ADMIN_TOKEN", token.as_str()),
        ]);
        let s = AdminSettings::from_env(&env).unwrap();
        assert_eq!(s.port, PORT);
        assert_eq!(s.bootstrap_token.unwrap().expose(), token);
        assert!(AdminSettings::from_env(&Env::from_pairs([])).is_err());
        let short = Env::from_pairs([
            ("SECRET_STORE_KEK", KEK),
            ("CARACAL_BOOTSTRAP_ADMIN_TOKEN", "short"),
        ]);
        let err = AdminSettings::from_env(&short).unwrap_err().to_string();
        assert!(!err.contains("short"), "no value in the message");
    }
}
