//! Profile layers: the YAML documents a profile is merged from (family chain, device,
//! variant, the user's overrides), each remembered with its file and text so that an error
//! in the merged result is reported where the offending key was written.
//!
//! Merge rule: mappings merge key by key, recursively; anything else (lists, scalars) in a
//! later layer replaces what an earlier one had.

use super::{locate, ProfileError};
use crate::util::Fail;
use anyhow::Result;
use serde_norway::{Mapping, Value};
use std::path::{Path, PathBuf};

/// One YAML document (or a part of one) taking part in a profile.
#[derive(Debug, Clone)]
pub struct Layer {
    pub file: PathBuf,
    /// What the file is, for messages ("device profile", "system config", …).
    pub kind: &'static str,
    pub text: String,
    /// Where this layer's value sits inside its file (`variants.tianma`, `device`), for
    /// locating lines; empty for a whole file.
    pub prefix: String,
    pub value: Value,
}

impl Layer {
    /// Reads and parses a YAML file; syntax errors name the file and line.
    pub fn read(file: &Path, kind: &'static str) -> Result<Layer> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| crate::util::user_error(e, format!("reading {}", file.display())))?;
        let value = parse_value(&text, &file.display().to_string())?;
        Ok(Layer { file: file.to_path_buf(), kind, text, prefix: String::new(), value })
    }

    /// A part of this layer's file, at `key` of its value.
    pub fn sub(&self, key: &str, value: Value) -> Layer {
        let prefix = if self.prefix.is_empty() { key.to_string() } else { format!("{}.{key}", self.prefix) };
        Layer { file: self.file.clone(), kind: self.kind, text: self.text.clone(), prefix, value }
    }

    /// An error about `key` (a dotted path within this layer).
    pub fn error(&self, key: &str, msg: impl Into<String>) -> anyhow::Error {
        self.error_hinted(key, msg, None)
    }

    /// An error about `key`, with a hint for the user.
    pub fn error_hinted(&self, key: &str, msg: impl Into<String>, hint: Option<String>) -> anyhow::Error {
        let full = if self.prefix.is_empty() { key.to_string() } else { format!("{}.{key}", self.prefix) };
        // A missing key has no line: report its nearest enclosing key, else the document.
        let mut path = full.as_str();
        let line = loop {
            if let Some(l) = locate::line_of(&self.text, path) {
                break Some(l);
            }
            match path.rfind(['.', '[']) {
                Some(i) => path = &path[..i],
                None => {
                    break self
                        .text
                        .lines()
                        .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                        .map(|i| i + 1)
                }
            }
        };
        anyhow::Error::new(ProfileError { file: self.file.display().to_string(), line, key: full, msg: msg.into() })
            .context(Fail { msg: format!("invalid {} {}", self.kind, self.file.display()), hint })
    }

    /// Removes and returns a top-level key of this layer's mapping.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        match &mut self.value {
            Value::Mapping(m) => m.remove(key),
            _ => None,
        }
    }
}

pub fn parse_value(text: &str, file: &str) -> Result<Value> {
    let v: Value = serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let mut msg = e.to_string();
        if let Some(i) = msg.find(" at line ") {
            msg.truncate(i);
        }
        anyhow::Error::new(ProfileError { file: file.to_string(), line, key: String::new(), msg })
            .context(Fail::new(format!("invalid YAML in {file}")))
    })?;
    match v {
        Value::Mapping(_) => Ok(v),
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        _ => Err(anyhow::Error::new(ProfileError {
            file: file.to_string(),
            line: Some(1),
            key: String::new(),
            msg: "expected a mapping of keys to values".into(),
        })
        .context(Fail::new(format!("invalid YAML in {file}")))),
    }
}

/// Merges `over` onto `base`: mappings key by key, everything else replaced.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The segments of a dotted key path with `[i]` indices (`a.b[2].c`).
fn segments(path: &str) -> Vec<either::Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(either::Seg::Key(name.to_string()));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(either::Seg::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

mod either {
    pub enum Seg {
        Key(String),
        Index(usize),
    }
}

/// How many leading segments of `path` exist in `v`.
fn depth_in(v: &Value, path: &[either::Seg]) -> usize {
    let mut cur = v;
    for (i, seg) in path.iter().enumerate() {
        let next = match (seg, cur) {
            (either::Seg::Key(k), Value::Mapping(m)) => m.get(k.as_str()),
            (either::Seg::Index(n), Value::Sequence(s)) => s.get(*n),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return i,
        }
    }
    path.len()
}

/// The layer that set `key` (the last one holding the longest part of its path): where an
/// error about the merged value is to be reported.
pub fn origin<'a>(layers: &'a [Layer], key: &str) -> &'a Layer {
    let segs = segments(key);
    let mut best: Option<(usize, &Layer)> = None;
    for l in layers {
        let d = depth_in(&l.value, &segs);
        if best.is_none_or(|(bd, _)| d >= bd && d > 0) {
            best = Some((d, l));
        }
    }
    match best {
        Some((d, l)) if d > 0 => l,
        // No layer has any part of the key (a missing top-level key): the device file, the
        // last whole file before variants and overrides.
        _ => layers.iter().rev().find(|l| l.prefix.is_empty()).unwrap_or(&layers[layers.len() - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn merge_maps_deeply_and_replaces_the_rest() {
        let mut base = v("a: {x: 1, y: [1, 2]}\nb: 2\n");
        merge(&mut base, &v("a: {y: [3], z: 4}\nc: 5\n"));
        assert_eq!(base, v("a: {x: 1, y: [3], z: 4}\nb: 2\nc: 5\n"));
    }

    #[test]
    fn origin_is_the_last_layer_with_the_key() {
        let mk = |file: &str, text: &str| Layer {
            file: file.into(),
            kind: "device profile",
            text: text.into(),
            prefix: String::new(),
            value: v(text),
        };
        let layers = [mk("family", "a: {x: 1}\nb: 1\n"), mk("device", "a: {y: 2}\n")];
        assert_eq!(origin(&layers, "a.y").file, Path::new("device"));
        assert_eq!(origin(&layers, "a.x").file, Path::new("family"));
        assert_eq!(origin(&layers, "b").file, Path::new("family"));
        assert_eq!(origin(&layers, "a.nothing").file, Path::new("device"), "the last layer with the parent");
    }
}
