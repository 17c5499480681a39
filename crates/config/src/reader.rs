//! A reader over TOML's spanned tree that collects every problem instead of stopping at the first.
//!
//! Each accessor marks its key as known; `finish` then reports the keys nobody asked for as
//! unknown. Errors carry the key path and the line, so one run of `arbiter check` shows them all.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::{ConfigError, units};

/// Where the errors go, with the source text to turn byte offsets into lines.
#[derive(Debug)]
pub(crate) struct Errors<'s> {
    src: &'s str,
    pub(crate) list: Vec<ConfigError>,
}

impl<'s> Errors<'s> {
    pub(crate) fn new(src: &'s str) -> Self {
        Self {
            src,
            list: Vec::new(),
        }
    }

    pub(crate) fn line(&self, span: &Range<usize>) -> usize {
        self.src[..span.start.min(self.src.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// Records a problem with `key` whose value sits at `span`.
    pub(crate) fn at(&mut self, key: &str, span: &Range<usize>, message: impl Into<String>) {
        let line = Some(self.line(span));
        self.list.push(ConfigError {
            key: key.to_string(),
            line,
            message: message.into(),
        });
    }
}

/// A value found under a key: its full path, where it is, and what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a, 'i> {
    pub(crate) path: String,
    pub(crate) span: Range<usize>,
    pub(crate) value: &'a DeValue<'i>,
}

/// Strings read from a list, each with where it is.
pub(crate) type Items = Vec<(String, Range<usize>)>;

/// One TOML table being read.
#[derive(Debug)]
pub(crate) struct Table<'a, 'i> {
    pub(crate) path: String,
    pub(crate) span: Range<usize>,
    table: &'a DeTable<'i>,
    seen: BTreeSet<String>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn root(table: &'a Spanned<DeTable<'i>>) -> Self {
        Self {
            path: String::new(),
            span: table.span(),
            table: table.get_ref(),
            seen: BTreeSet::new(),
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw field under `key`, marking the key as known.
    pub(crate) fn field(&mut self, key: &str) -> Option<Field<'a, 'i>> {
        self.seen.insert(key.to_string());
        let value = self.table.get(key)?;
        Some(Field {
            path: self.child_path(key),
            span: value.span(),
            value: value.get_ref(),
        })
    }

    pub(crate) fn table(&mut self, key: &str, errs: &mut Errors) -> Option<Table<'a, 'i>> {
        let field = self.field(key)?;
        match field.value.as_table() {
            Some(table) => Some(Table {
                path: field.path,
                span: field.span,
                table,
                seen: BTreeSet::new(),
            }),
            None => {
                errs.at(
                    &field.path,
                    &field.span,
                    format!("expected a table, found {}", field.value.type_str()),
                );
                None
            }
        }
    }

    /// An array of tables (`[[program]]`); each element's path is `key[i]`.
    pub(crate) fn tables(&mut self, key: &str, errs: &mut Errors) -> Vec<Table<'a, 'i>> {
        let Some(field) = self.field(key) else {
            return Vec::new();
        };
        let Some(array) = field.value.as_array() else {
            errs.at(
                &field.path,
                &field.span,
                "expected an array of tables like [[program]]",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in array.iter().enumerate() {
            let path = format!("{}[{i}]", field.path);
            match item.get_ref().as_table() {
                Some(table) => out.push(Table {
                    path,
                    span: item.span(),
                    table,
                    seen: BTreeSet::new(),
                }),
                None => errs.at(&path, &item.span(), "expected a table"),
            }
        }
        out
    }

    pub(crate) fn string(
        &mut self,
        key: &str,
        errs: &mut Errors,
    ) -> Option<(String, Field<'a, 'i>)> {
        let field = self.field(key)?;
        match field.value.as_str() {
            Some(s) => Some((s.to_string(), field)),
            None => {
                errs.at(
                    &field.path,
                    &field.span,
                    format!("expected a string, found {}", field.value.type_str()),
                );
                None
            }
        }
    }

    pub(crate) fn integer(&mut self, key: &str, errs: &mut Errors) -> Option<(i64, Field<'a, 'i>)> {
        let field = self.field(key)?;
        match field
            .value
            .as_integer()
            .and_then(|i| i64::from_str_radix(i.as_str(), i.radix()).ok())
        {
            Some(n) => Some((n, field)),
            None => {
                errs.at(
                    &field.path,
                    &field.span,
                    format!("expected an integer, found {}", field.value.type_str()),
                );
                None
            }
        }
    }

    /// A non-negative integer that fits `usize`, at least `min`.
    pub(crate) fn count(&mut self, key: &str, min: i64, errs: &mut Errors) -> Option<usize> {
        let (n, field) = self.integer(key, errs)?;
        if n < min {
            errs.at(
                &field.path,
                &field.span,
                format!("must be at least {min}, got {n}"),
            );
            return None;
        }
        Some(n as usize)
    }

    pub(crate) fn float(&mut self, key: &str, errs: &mut Errors) -> Option<(f64, Field<'a, 'i>)> {
        let field = self.field(key)?;
        match number(field.value) {
            Some(n) => Some((n, field)),
            None => {
                errs.at(
                    &field.path,
                    &field.span,
                    format!("expected a number, found {}", field.value.type_str()),
                );
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, key: &str, errs: &mut Errors) -> Option<bool> {
        let field = self.field(key)?;
        match field.value.as_bool() {
            Some(b) => Some(b),
            None => {
                errs.at(
                    &field.path,
                    &field.span,
                    format!("expected true or false, found {}", field.value.type_str()),
                );
                None
            }
        }
    }

    pub(crate) fn duration(&mut self, key: &str, errs: &mut Errors) -> Option<Duration> {
        let (text, field) = self.string(key, errs)?;
        units::parse_duration(&text)
            .map_err(|e| errs.at(&field.path, &field.span, e))
            .ok()
    }

    /// A size: `"512MiB"`, or a plain integer number of bytes.
    pub(crate) fn size(&mut self, key: &str, errs: &mut Errors) -> Option<u64> {
        let field = self.field(key)?;
        if let Some(text) = field.value.as_str() {
            return units::parse_size(text)
                .map_err(|e| errs.at(&field.path, &field.span, e))
                .ok();
        }
        match field
            .value
            .as_integer()
            .and_then(|i| u64::from_str_radix(i.as_str(), i.radix()).ok())
        {
            Some(n) => Some(n),
            None => {
                errs.at(
                    &field.path,
                    &field.span,
                    "expected a size like \"512MiB\" or a number of bytes",
                );
                None
            }
        }
    }

    /// One string or an array of strings.
    pub(crate) fn strings(
        &mut self,
        key: &str,
        errs: &mut Errors,
    ) -> Option<(Items, Field<'a, 'i>)> {
        let field = self.field(key)?;
        if let Some(s) = field.value.as_str() {
            let span = field.span.clone();
            return Some((vec![(s.to_string(), span)], field));
        }
        let Some(array) = field.value.as_array() else {
            errs.at(
                &field.path,
                &field.span,
                format!(
                    "expected a string or an array of strings, found {}",
                    field.value.type_str()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in array.iter().enumerate() {
            match item.get_ref().as_str() {
                Some(s) => out.push((s.to_string(), item.span())),
                None => errs.at(
                    &format!("{}[{i}]", field.path),
                    &item.span(),
                    "expected a string",
                ),
            }
        }
        Some((out, field))
    }

    /// Every key of this table, in order (for tables of free-form keys like `environment`).
    pub(crate) fn keys(&self) -> Vec<String> {
        self.table.keys().map(|k| k.get_ref().to_string()).collect()
    }

    /// Reports every key of this table that no accessor asked for.
    pub(crate) fn finish(self, errs: &mut Errors) {
        for (key, value) in self.table.iter() {
            if !self.seen.contains(key.get_ref().as_ref()) {
                let known: Vec<&str> = self.seen.iter().map(String::as_str).collect();
                let path = self.child_path(key.get_ref());
                let hint = suggestion(key.get_ref(), &known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| format!(" (known keys: {})", known.join(", ")));
                let _ = value;
                errs.at(&path, &key.span(), format!("unknown key{hint}"));
            }
        }
    }
}

/// A TOML float or integer as an `f64`.
pub(crate) fn number(value: &DeValue) -> Option<f64> {
    if let Some(f) = value.as_float() {
        f.as_str().replace('_', "").parse::<f64>().ok()
    } else {
        value
            .as_integer()
            .and_then(|i| i64::from_str_radix(i.as_str(), i.radix()).ok())
            .map(|i| i as f64)
    }
}

/// The known key closest to a misspelt one, if any is close.
fn suggestion<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// `path` as written in the file: relative to the file's folder `base`.
pub(crate) fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}
