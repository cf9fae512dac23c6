//! Zones: the tenant and trust boundary. Nothing crosses zones.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Attribution;

/// A zone row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    /// Zone id.
    pub id: String,
    /// Display name (1..120 characters, trimmed).
    pub name: String,
    /// Unique slug, `^[a-z0-9-]+$`.
    pub slug: String,
    /// Whether dynamic client registration is open.
    #[serde(default)]
    pub dcr_enabled: bool,
    /// Console badge flag.
    #[serde(default)]
    pub operator_coauthor_badge: bool,
    /// Whether the AI operator may administer the zone.
    #[serde(default)]
    pub operator_governed: bool,
    /// Who created and changed it.
    #[serde(flatten)]
    pub attribution: Attribution,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "super::time::iso_ms")]
    pub updated_at: DateTime<Utc>,
    /// Set when archived (soft delete); archived zones are invisible to lists.
    #[serde(
        default,
        with = "super::time::iso_ms_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub archived_at: Option<DateTime<Utc>>,
}

/// Whether `slug` is a valid zone slug.
pub fn is_valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Derive a slug from a name the way the reference does: lowercase, runs of non-alphanumerics
/// become `-`, trimmed of `-`, falling back to `fallback` when nothing is left.
pub fn slugify(name: &str, fallback: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        fallback.to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("  My Zone!! 2 ", "zone"), "my-zone-2");
        assert_eq!(slugify("***", "zone"), "zone");
        assert!(is_valid_slug("a-1"));
        assert!(!is_valid_slug("A"));
        assert!(!is_valid_slug(""));
    }
}
