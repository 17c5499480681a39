//! The class-name file: the seed's `{"0": "Aeroplane", ..., "19": "TV Monitor"}`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use crate::InferError;

/// Class names indexed by the model's output position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    names: Vec<String>,
}

impl Labels {
    /// Reads and validates a label file: keys exactly `"0"`..`"C-1"`, each once, names non-empty.
    pub fn load(path: &Path) -> Result<Labels, InferError> {
        let text = std::fs::read_to_string(path).map_err(|e| labels_err(path, e.to_string()))?;
        Self::parse(&text).map_err(|reason| labels_err(path, reason))
    }

    /// Parses the JSON text of a label file; the error is the reason it was refused.
    pub fn parse(text: &str) -> Result<Labels, String> {
        let Entries(entries) =
            serde_json::from_str(text).map_err(|e| format!("not a JSON object of strings: {e}"))?;
        if entries.is_empty() {
            return Err("no class names".to_owned());
        }
        let mut names: Vec<Option<String>> = vec![None; entries.len()];
        for (key, name) in entries {
            let index = parse_index(&key).ok_or_else(|| {
                format!("key {key:?} is not a class index (0, 1, 2, ... with no leading zeros)")
            })?;
            let count = names.len();
            let slot = names.get_mut(index).ok_or_else(|| {
                format!(
                    "key \"{index}\" is out of range: {count} names need the keys \"0\" to \"{}\"",
                    count - 1
                )
            })?;
            if slot.is_some() {
                return Err(format!("key \"{index}\" appears twice"));
            }
            if name.trim().is_empty() {
                return Err(format!("class \"{index}\" has an empty name"));
            }
            *slot = Some(name);
        }
        // Every key is distinct and below the entry count, so every slot is filled.
        Ok(Labels {
            names: names.into_iter().flatten().collect(),
        })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no classes (never true for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of class `i`, or `""` when `i` is out of range.
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("", String::as_str)
    }

    /// All names in class order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

fn labels_err(path: &Path, reason: String) -> InferError {
    InferError::Labels {
        path: PathBuf::from(path),
        reason,
    }
}

/// A canonical decimal index: digits only, no sign, no leading zero (except "0" itself).
fn parse_index(key: &str) -> Option<usize> {
    let canonical = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'));
    if canonical { key.parse().ok() } else { None }
}

/// The object's entries in file order, duplicates kept (serde_json's map would drop them).
struct Entries(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping class indices to names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"0": "Aeroplane", "1": "Bicycle", "2": "Bird", "3": "Boat", "4": "Bottle", "5": "Bus", "6": "Car", "7": "Cat", "8": "Chair", "9": "Cow", "10": "Dining Table", "11": "Dog", "12": "Horse", "13": "Motorbike", "14": "Person", "15": "Potted Plant", "16": "Sheep", "17": "Sofa", "18": "Train", "19": "TV Monitor"}"#;

    #[test]
    fn seed_file_parses_in_index_order() {
        let labels = Labels::parse(SEED).unwrap();
        assert_eq!(labels.len(), 20);
        assert_eq!(labels.name(0), "Aeroplane");
        assert_eq!(labels.name(10), "Dining Table");
        assert_eq!(labels.name(19), "TV Monitor");
        assert_eq!(labels.name(20), "");
    }

    #[test]
    fn keys_in_any_order() {
        let labels = Labels::parse(r#"{"2": "c", "0": "a", "1": "b"}"#).unwrap();
        assert_eq!(labels.names(), ["a", "b", "c"]);
    }

    fn refused(text: &str) -> String {
        Labels::parse(text).expect_err(text)
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(refused("").contains("not a JSON object"));
        assert!(refused("[\"a\", \"b\"]").contains("not a JSON object"));
        assert!(refused(r#"{"0": 1}"#).contains("not a JSON object"));
        assert!(refused("{}").contains("no class names"));
        assert!(refused(r#"{"0": "a", "2": "c"}"#).contains("key \"2\" is out of range"));
        assert!(refused(r#"{"1": "b"}"#).contains("out of range"));
        assert!(refused(r#"{"0": "a", "0": "b"}"#).contains("appears twice"));
        assert!(refused(r#"{"0": "a", "01": "b"}"#).contains("not a class index"));
        assert!(refused(r#"{"0": "a", "-1": "b"}"#).contains("not a class index"));
        assert!(refused(r#"{"0": "a", "x": "b"}"#).contains("not a class index"));
        assert!(refused(r#"{"0": "a", "1": " "}"#).contains("class \"1\" has an empty name"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("arbiter-infer-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"0": ""}"#).unwrap();
        let msg = Labels::load(&bad).unwrap_err().to_string();
        assert!(
            msg.contains("bad.json") && msg.contains("empty name"),
            "{msg}"
        );

        let missing = dir.join("missing.json");
        let msg = Labels::load(&missing).unwrap_err().to_string();
        assert!(msg.contains("missing.json"), "{msg}");

        let good = dir.join("good.json");
        std::fs::write(&good, SEED).unwrap();
        assert_eq!(Labels::load(&good).unwrap().len(), 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
