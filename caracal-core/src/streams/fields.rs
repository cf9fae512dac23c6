//! The field map of one stream entry.

/// The fields of a stream entry: string keys to string values, in insertion order, each key at
/// most once.
///
/// Redis itself would store a repeated field name twice. The reference consumers decode an
/// entry into a map (Go `map[string]interface{}`, a JS object), so the last value wins; this
/// type applies the same rule at construction ([`Fields::insert`] replaces, and
/// [`FromIterator`] keeps the last value). A signature check and the handler therefore always
/// see the same value for a key: no "verified one value, acted on another" confusion.
///
/// Lookups are linear scans: entries carry a handful of fields, where a scan beats hashing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    // INVARIANT: no two pairs share a key.
    pairs: Vec<(String, String)>,
}

impl Fields {
    /// An empty field map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty field map with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            pairs: Vec::with_capacity(n),
        }
    }

    /// Set `key` to `value`. An existing key keeps its position and gets the new value, which
    /// is returned as the old one.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let key = key.into();
        let value = value.into();
        match self.pairs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.pairs.push((key, value));
                None
            }
        }
    }

    /// Builder form of [`Fields::insert`].
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(at).1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The fields in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs in insertion order, consuming the map.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Fields {
    /// Collects pairs; a repeated key keeps its first position and its last value, as the
    /// reference consumers' map decoding does.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut fields = Fields::with_capacity(iter.size_hint().0);
        for (k, v) in iter {
            fields.insert(k, v);
        }
        fields
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a str, &'a str),
    >;

    fn into_iter(self) -> Self::IntoIter {
        fn as_strs(pair: &(String, String)) -> (&str, &str) {
            (pair.0.as_str(), pair.1.as_str())
        }
        self.pairs.iter().map(as_strs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_in_place_and_keeps_order() {
        let mut f = Fields::new().with("b", "1").with("a", "2");
        assert_eq!(f.insert("b", "3"), Some("1".to_owned()));
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![("b", "3"), ("a", "2")]);
        assert_eq!(f.get("a"), Some("2"));
        assert_eq!(f.remove("b"), Some("3".to_owned()));
        assert_eq!(f.len(), 1);
        assert!(!f.contains_key("b"));
    }

    #[test]
    fn collecting_repeated_keys_keeps_the_last_value() {
        let f: Fields = [("k", "first"), ("x", "1"), ("k", "last")]
            .into_iter()
            .collect();
        assert_eq!(f.get("k"), Some("last"));
        assert_eq!(
            (&f).into_iter().collect::<Vec<_>>(),
            vec![("k", "last"), ("x", "1")]
        );
    }
}
