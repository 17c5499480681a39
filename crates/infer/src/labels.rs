//! The class-name file, in any of three forms: the seed's JSON object (`{"0": "Aeroplane", ...,
//! "19": "TV Monitor"}`), a JSON list (`["tench", "goldfish", ...]`), or a text file with one name
//! a line (ImageNet's usual `imagenet_classes.txt`).

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
    /// Reads and validates a label file. A `.json` file is JSON, a `.txt` file is text; any other
    /// name is JSON when it starts (after white space) with `{` or `[`, text otherwise.
    pub fn load(path: &Path) -> Result<Labels, InferError> {
        let text = std::fs::read_to_string(path).map_err(|e| labels_err(path, e.to_string()))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let extension = path.extension().and_then(|e| e.to_str());
        let json = match extension.map(str::to_ascii_lowercase).as_deref() {
            Some("json") => true,
            Some("txt") => false,
            _ => text.trim_start().starts_with(['{', '[']),
        };
        let parsed = if json {
            Self::parse(text)
        } else {
            Self::parse_lines(text)
        };
        parsed.map_err(|reason| labels_err(path, reason))
    }

    /// Parses a label file's JSON: the seed's object (keys exactly `"0"`..`"C-1"`, each once) or
    /// a list, names non-empty; the error is the reason it was refused.
    pub fn parse(text: &str) -> Result<Labels, String> {
        if text.trim_start().starts_with('[') {
            return Self::parse_list(text);
        }
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

    /// Parses a JSON list of names, the class index being the position.
    fn parse_list(text: &str) -> Result<Labels, String> {
        let names: Vec<String> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON list of strings: {e}"))?;
        if names.is_empty() {
            return Err("no class names".to_owned());
        }
        if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
            return Err(format!("class {i} has an empty name"));
        }
        Ok(Labels { names })
    }

    /// Parses a text file of one name a line, as Python's `[line.strip() for line in f]` reads
    /// it: each name without the white space around it (`\r\n` line ends included), a last
    /// line end optional. A blank line is refused (it would shift every class after it), except
    /// blank lines at the very end.
    pub fn parse_lines(text: &str) -> Result<Labels, String> {
        let mut names: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
        while names.last().is_some_and(String::is_empty) {
            names.pop();
        }
        if names.is_empty() {
            return Err("no class names".to_owned());
        }
        if let Some(i) = names.iter().position(String::is_empty) {
            return Err(format!(
                "line {} is blank: every line up to the last name must name a class",
                i + 1
            ));
        }
        Ok(Labels { names })
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
        assert!(refused("[\"a\", 1]").contains("not a JSON list of strings"));
        assert!(refused("[]").contains("no class names"));
        assert!(refused("[\"a\", \" \"]").contains("class 1 has an empty name"));
        assert!(refused("\"a\"").contains("not a JSON object"));
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
    fn a_json_list_is_in_index_order() {
        let labels = Labels::parse(r#"["tench", "goldfish", "great white shark"]"#).unwrap();
        assert_eq!(labels.names(), ["tench", "goldfish", "great white shark"]);
    }

    #[test]
    fn text_lines_as_python_strips_them() {
        let names = |text: &str| Labels::parse_lines(text).unwrap().names().to_vec();
        assert_eq!(names("tench\ngoldfish\n"), ["tench", "goldfish"]);
        assert_eq!(names("tench\r\ngoldfish\r\n\r\n"), ["tench", "goldfish"]);
        assert_eq!(names("  tench \ngoldfish"), ["tench", "goldfish"]);
        assert_eq!(names("{odd}\n[names]"), ["{odd}", "[names]"]);
        let refused = |text: &str| Labels::parse_lines(text).unwrap_err();
        assert_eq!(refused("\n\n"), "no class names");
        assert_eq!(
            refused("tench\n\ngoldfish\n"),
            "line 2 is blank: every line up to the last name must name a class"
        );
    }

    #[test]
    fn load_picks_the_form_by_extension_then_content() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            Labels::load(&path)
        };
        let names = |r: Result<Labels, InferError>| r.unwrap().names().to_vec();
        assert_eq!(names(write("a.json", SEED)).len(), 20);
        assert_eq!(names(write("b.json", "[\"x\", \"y\"]")), ["x", "y"]);
        assert_eq!(names(write("c.txt", "[x]\n{y}\n")), ["[x]", "{y}"]);
        assert_eq!(names(write("d", "\u{feff}x\r\ny\r\n")), ["x", "y"]);
        assert_eq!(names(write("e.names", " [\"x\"]")), ["x"]);
        let msg = write("f.json", "x\ny\n").unwrap_err().to_string();
        assert!(msg.contains("f.json: not a JSON object"), "{msg}");
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
