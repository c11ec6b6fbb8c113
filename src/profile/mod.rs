//! Device profiles: `devices/<codename>/device.yaml` loaded into typed, validated values.
//!
//! Pipeline stage: profile. Input: YAML files under the repository; output: a [`Profile`].
//! Reads files, nothing else. Every YAML type rejects unknown keys, and every error names
//! the file, the line and the key, and says what was expected.

mod locate;
mod types;

pub use types::*;

use crate::util::Fail;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// A device codename: lowercase letters, digits and dashes (`qemu-aarch64`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Codename(String);

impl Codename {
    pub fn new(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(Codename(s.to_string()))
        } else {
            Err(format!("{s:?} is not a device codename (lowercase letters, digits and dashes)"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Codename {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A loaded, validated device profile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Profile {
    pub codename: Codename,
    /// The file it was loaded from (for messages).
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(flatten)]
    pub device: Device,
}

/// Where a profile error is: file, line (1-based, if known) and dotted key path.
#[derive(Debug, thiserror::Error)]
#[error("{file}{line}: {key}{msg}", line = line.map(|l| format!(":{l}")).unwrap_or_default(),
        key = if key.is_empty() { String::new() } else { format!("key `{key}`: ") })]
pub struct ProfileError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub msg: String,
}

pub fn device_file(repo: &Path, codename: &Codename) -> PathBuf {
    repo.join("devices").join(codename.as_str()).join("device.yaml")
}

/// The codenames of every profile under `devices/`, sorted.
pub fn list_devices(repo: &Path) -> Result<Vec<Codename>> {
    let dir = repo.join("devices");
    let mut out = Vec::new();
    let rd = std::fs::read_dir(&dir)
        .map_err(|e| crate::util::user_error(e, format!("reading the device directory {}", dir.display())))?;
    for e in rd {
        let e = e?;
        if let Some(name) = e.file_name().to_str() {
            if e.path().join("device.yaml").is_file() {
                if let Ok(c) = Codename::new(name) {
                    out.push(c);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Loads and validates `devices/<name>/device.yaml` under `repo`.
pub fn load(repo: &Path, name: &str) -> Result<Profile> {
    let codename = Codename::new(name).map_err(|m| anyhow::Error::new(Fail::new(m)))?;
    let file = device_file(repo, &codename);
    if !file.is_file() {
        let known = list_devices(repo).unwrap_or_default();
        let names: Vec<&str> = known.iter().map(|c| c.as_str()).collect();
        let mut f = Fail::new(format!("no device profile {} (looked for {})", codename, file.display()));
        f = f.hint(if names.is_empty() {
            format!("no profiles found under {}", repo.join("devices").display())
        } else {
            format!("known devices: {}", names.join(", "))
        });
        return Err(f.into());
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| crate::util::user_error(e, format!("reading {}", file.display())))?;
    let device = parse_device(&text, &file.display().to_string())?;
    Ok(Profile { codename, file, device })
}

/// Parses and validates a device profile's text. `file` is only used in messages.
pub fn parse_device(text: &str, file: &str) -> Result<Device> {
    let device: Device = parse_yaml(text, file)?;
    if let Err((key, msg)) = device.validate() {
        let line = locate::line_of(text, &key);
        return Err(anyhow::Error::new(ProfileError { file: file.to_string(), line, key, msg })
            .context(Fail::new(format!("invalid device profile {file}"))));
    }
    Ok(device)
}

/// Deserialises YAML into `T`, turning serde's error into file, line and key.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T> {
    let de = serde_norway::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.location().map(|l| l.line());
            let mut msg = inner.to_string();
            // serde_norway appends " at line L column C"; the line is reported separately.
            if let Some(i) = msg.find(" at line ") {
                msg.truncate(i);
            }
            let mut key = if path == "." { String::new() } else { path };
            // ...and starts it with its own key path (`bootimg: ...`), reported separately too.
            if let Some((pre, rest)) = msg.split_once(": ") {
                if !pre.contains(' ') {
                    msg = rest.to_string();
                }
            }
            let hint = unknown_field_hint(&msg);
            if let Some((field, _)) = hint.as_ref().filter(|(f, _)| !key.ends_with(f.as_str())) {
                // Name the unknown key itself, not only its parent.
                key = if key.is_empty() { field.clone() } else { format!("{key}.{field}") };
            }
            if let Some(field) = msg.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
                key = if key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
            }
            let err = ProfileError { file: file.to_string(), line, key, msg };
            let mut fail = Fail::new(format!("invalid YAML in {file}"));
            if let Some((_, Some(close))) = hint {
                fail = fail.hint(format!("did you mean `{close}`?"));
            }
            Err(anyhow::Error::new(err).context(fail))
        }
    }
}

/// For "unknown field `x`, expected one of `a`, `b`": the field and the closest valid key.
fn unknown_field_hint(msg: &str) -> Option<(String, Option<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (edit_distance(field, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(field.len()) / 3).max(2))
        .min()
        .map(|(_, c)| c.to_string());
    Some((field.to_string(), best))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
