//! The user's own settings: `~/.config/mobix/config.yaml` (binary caches to substitute
//! from, in priority order, and the keys trusted to sign them), and the command-line
//! options that add to them or turn them off.
//!
//! ```yaml
//! substituters:
//!   - s3://team-cache/phones?endpoint=https://minio.example.org&region=eu-1
//!   - https://cache.example.org/mobix
//! trusted_keys:
//!   - keys/team-ci-1.pub                      # a file (relative to this one)
//!   - mobix-public-key-1 laptop-1 5be1…       # or the key itself
//! ```

use crate::store::cache::{PublicKey, Substituter};
use crate::util::Fail;
use anyhow::Result;
use clap::Args;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    substituters: Vec<String>,
    #[serde(default)]
    trusted_keys: Vec<String>,
}

/// The configuration file, parsed and checked; or, from [`CacheArgs::resolve`], what a
/// command uses: its options and the file's.
#[derive(Default, Clone)]
pub struct Settings {
    pub substituters: Vec<Substituter>,
    pub trusted: Vec<PublicKey>,
}

/// Where the configuration file is: `$MOBIX_CONFIG`, else `$XDG_CONFIG_HOME/mobix/config.yaml`,
/// else `~/.config/mobix/config.yaml`.
pub fn config_file() -> PathBuf {
    std::env::var_os("MOBIX_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::home_dir("XDG_CONFIG_HOME", ".config").join("mobix/config.yaml"))
}

/// Reads the configuration file (none: no settings). Errors name the file, line and key.
pub fn load() -> Result<Settings> {
    let file = config_file();
    if !file.exists() {
        return Ok(Settings::default());
    }
    let (c, layer): (ConfigFile, _) = crate::profile::read_yaml(&file, "mobix configuration file")?;
    let mut s = Settings::default();
    for (i, text) in c.substituters.iter().enumerate() {
        s.substituters.push(Substituter::parse(text).map_err(|e| layer.error(&format!("substituters[{i}]"), e))?);
    }
    let base = file.parent().unwrap_or(Path::new("."));
    for (i, k) in c.trusted_keys.iter().enumerate() {
        let key = if k.trim_start().starts_with("mobix-public-key-1") {
            PublicKey::parse(k, &format!("trusted_keys[{i}]"))
        } else {
            PublicKey::load(&expand(base, k))
        };
        s.trusted.push(key.map_err(|e| layer.error(&format!("trusted_keys[{i}]"), format!("{e:#}")))?);
    }
    Ok(s)
}

/// A path from the file: `~/` is the home directory, a relative path is relative to the file.
fn expand(base: &Path, p: &str) -> PathBuf {
    if let (Some(rest), Some(home)) = (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        return PathBuf::from(home).join(rest);
    }
    base.join(p)
}

/// Binary cache options of the commands that build.
#[derive(Args, Debug, Clone, Default)]
pub(super) struct CacheArgs {
    /// A binary cache to take store paths from before building them: a directory,
    /// `https://HOST/PATH` or `s3://BUCKET[/PREFIX]?endpoint=URL&region=R`; repeatable, asked
    /// before those of the configuration file (~/.config/mobix/config.yaml).
    #[arg(long, value_name = "URL|DIR", value_parser = parse_substituter)]
    substituter: Vec<Substituter>,
    /// A public key whose signatures on cache entries are trusted (FILE.pub from `mobix
    /// store keygen`); repeatable, added to the configuration file's.
    #[arg(long, value_name = "FILE")]
    trust: Vec<PathBuf>,
    /// Use no binary cache at all (neither given here nor configured): build everything.
    #[arg(long, conflicts_with = "substituter")]
    no_substitute: bool,
}

fn parse_substituter(s: &str) -> Result<Substituter, String> {
    Substituter::parse(s)
}

impl CacheArgs {
    /// The substituters and trusted keys a command uses: these options, then the
    /// configuration file's (read here, once per command).
    pub fn resolve(&self) -> Result<Settings> {
        let s = load()?;
        if self.no_substitute {
            return Ok(Settings { substituters: Vec::new(), trusted: s.trusted });
        }
        let substituters: Vec<Substituter> = self.substituter.iter().cloned().chain(s.substituters).collect();
        let mut trusted = self.trust.iter().map(|f| PublicKey::load(f)).collect::<Result<Vec<_>>>()?;
        trusted.extend(s.trusted);
        for sub in &substituters {
            if let crate::store::cache::Location::Dir(d) = &sub.location {
                if !d.is_dir() {
                    return Err(Fail::new(format!("the binary cache directory {} does not exist", d.display())).into());
                }
            }
        }
        Ok(Settings { substituters, trusted })
    }
}
