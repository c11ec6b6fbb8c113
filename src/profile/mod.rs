//! Device profiles: `devices/<codename>/device.yaml` loaded into typed, validated values.
//!
//! Pipeline stage: profile. Input: YAML files under the repository; output: a [`Profile`].
//! Reads files, nothing else. Every YAML type rejects unknown keys, and every error names
//! the file, the line and the key, and says what was expected.

pub mod deviceinfo;
pub mod import;
pub mod imported;
mod layers;
pub mod reference;
pub use layers::Layer;
mod locate;
mod specs;
mod system;
mod types;
mod validate;

use serde_norway::Value;

pub use specs::*;
pub use system::*;
pub use types::*;
pub use validate::Invalid;

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

/// A loaded, validated device profile: the merged device (family, device, variant and
/// user overrides) and the user's system settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Profile {
    pub codename: Codename,
    pub variant: Option<String>,
    /// The device file (for messages).
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(flatten)]
    pub device: Device,
    pub system: SystemConfig,
    /// Every file merged into this profile, in merge order.
    pub sources: Vec<PathBuf>,
    /// The system config it was loaded with, if any.
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Whether the variant was asked for (`--variant`) rather than the profile's default.
    #[serde(skip)]
    pub variant_chosen: bool,
    /// Where each package of `system.packages` was named.
    #[serde(skip)]
    pub package_origins: Vec<PackageOrigin>,
    /// The layers the device was merged from, to locate a device key a later check finds
    /// wrong ([`Profile::device_error`]).
    #[serde(skip)]
    pub layers: Vec<Layer>,
}

impl Profile {
    /// The command-line arguments that select this profile, for hints:
    /// `--device NAME` and `--variant V` when one was asked for.
    /// The device as the user named it, for messages: `qemu-aarch64` (its default variant
    /// unsaid), `xiaomi-beryllium (variant tianma)` where a variant was chosen.
    pub fn shown(&self) -> String {
        match (&self.variant, self.variant_chosen) {
            (Some(v), true) => format!("{} (variant {v})", self.codename),
            _ => self.codename.to_string(),
        }
    }

    pub fn selection_args(&self) -> String {
        match (&self.variant, self.variant_chosen) {
            (Some(v), true) => format!("--device {} --variant {v}", self.codename),
            _ => format!("--device {}", self.codename),
        }
    }
}

impl Profile {
    /// An error about package `name` of the system, located where the config (or overlay)
    /// named it; None when no layer named it.
    pub fn package_error(&self, name: &str, msg: String, hint: Option<String>) -> Option<anyhow::Error> {
        let base = crate::lock::apt::Request::name_of;
        let o = self.package_origins.iter().find(|o| base(&o.name) == base(name))?;
        Some(o.layer.error_hinted(&o.key, msg, hint))
    }

    /// An error about device key `key` (`system.size`), located in the layer that set it
    /// (the system config's `device:`, the variant, the device file or its family).
    pub fn device_error(&self, key: &str, msg: String, hint: Option<String>) -> anyhow::Error {
        match self.layers.is_empty() {
            true => Fail { msg, hint }.into(),
            false => layers::origin(&self.layers, key).error_hinted(key, msg, hint),
        }
    }

    /// An error about `key` of the system config, found after loading (a build's check),
    /// naming its file and line; the default system (no config) gets the words alone.
    pub fn system_error(&self, key: &str, msg: String, hint: Option<String>) -> anyhow::Error {
        match self.config.as_deref().map(|c| Layer::read(c, "system config")) {
            Some(Ok(layer)) => layer.error_hinted(key, msg, hint),
            _ => Fail { msg, hint }.into(),
        }
    }

    /// The device and variant as one name (`xiaomi-beryllium-ebbg`): what generations and
    /// out directories are kept per, since variants are different hardware.
    pub fn instance(&self) -> Codename {
        match &self.variant {
            Some(v) => Codename(format!("{}-{v}", self.codename)),
            None => self.codename.clone(),
        }
    }
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

/// The variant names a device file declares (empty when it has none).
pub fn variant_names(repo: &Path, name: &str) -> Result<Vec<String>> {
    let codename = Codename::new(name).map_err(|m| anyhow::Error::new(Fail::new(m)))?;
    let layer = Layer::read(&device_file(repo, &codename), "device profile")?;
    Ok(match &layer.value {
        Value::Mapping(m) => match m.get("variants") {
            Some(Value::Mapping(v)) => v.keys().filter_map(|k| k.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    })
}

/// A device and variant of the tree, and what loading it gave.
pub type Loaded = (Codename, Option<String>, Result<Profile>);

/// Every device and variant in the tree, loaded.
pub fn load_all(repo: &Path) -> Result<Vec<Loaded>> {
    let mut out = Vec::new();
    for d in list_devices(repo)? {
        let variants = variant_names(repo, d.as_str())?;
        if variants.is_empty() {
            let r = load(repo, d.as_str());
            out.push((d, None, r));
        } else {
            for v in variants {
                let r = load_with(repo, d.as_str(), Selection { variant: Some(&v), config: None });
                out.push((d.clone(), Some(v), r));
            }
        }
    }
    Ok(out)
}

/// What to load besides the device: one of its variants, the user's system config.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    pub variant: Option<&'a str>,
    pub config: Option<&'a Path>,
}

/// Loads and validates `devices/<name>/device.yaml` under `repo` (no variant, no config).
pub fn load(repo: &Path, name: &str) -> Result<Profile> {
    load_with(repo, name, Selection::default())
}

fn check_name(layer: &Layer, key: &str, v: &Value, what: &str) -> Result<String> {
    match v.as_str() {
        Some(s) if Codename::new(s).is_ok() => Ok(s.to_string()),
        _ => Err(layer.error(key, format!("expected the name of a {what} (lowercase letters, digits and dashes)"))),
    }
}

/// Loads a device: its family chain (`family:`), the device file, the chosen variant
/// (`variants:`), and the `device:` overrides of the user's system config, merged in that
/// order (later wins), then deserialised and validated once. Errors name the file and line
/// where the offending key was written.
pub fn load_with(repo: &Path, name: &str, sel: Selection) -> Result<Profile> {
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
    let mut device = Layer::read(&file, "device profile")?;
    let family = device.take("family");
    let variants = device.take("variants");
    let default_variant = device.take("default_variant");
    // The family chain, root first; each family may name its own family.
    let mut chain: Vec<Layer> = Vec::new();
    let mut next = family.map(|f| (device.clone(), f));
    while let Some((from, fam)) = next.take() {
        let fname = check_name(&from, "family", &fam, "family file in devices/families/")?;
        let path = repo.join("devices/families").join(format!("{fname}.yaml"));
        if chain.iter().any(|l| l.file == path) {
            return Err(
                from.error("family", format!("family {fname} includes itself (a cycle through {})", path.display()))
            );
        }
        if !path.is_file() {
            return Err(from.error("family", format!("no family file {}", path.display())));
        }
        let mut layer = Layer::read(&path, "device family")?;
        for meta in ["variants", "default_variant"] {
            if layer.take(meta).is_some() {
                return Err(layer.error(meta, format!("`{meta}` belongs in a device file, not in a family")));
            }
        }
        next = layer.take("family").map(|f| (layer.clone(), f));
        chain.insert(0, layer);
    }
    let mut layers = chain;
    layers.push(device.clone());
    // The variant. A default must name a variant, whichever is chosen now.
    if let (Some(d), Some(Value::Mapping(m))) = (&default_variant, &variants) {
        let d = check_name(&device, "default_variant", d, "variant")?;
        if !m.contains_key(d.as_str()) {
            let names: Vec<&str> = m.keys().filter_map(|k| k.as_str()).collect();
            return Err(
                device.error("default_variant", format!("variant {d} does not exist (variants: {})", names.join(", ")))
            );
        }
    }
    let wanted = match (sel.variant, &default_variant) {
        (Some(v), _) => Some(v.to_string()),
        (None, Some(d)) => Some(check_name(&device, "default_variant", d, "variant")?),
        (None, None) => None,
    };
    let variant = match (&variants, wanted) {
        (None, None) => None,
        (None, Some(v)) => {
            return Err(Fail::new(format!("device {codename} has no variants (asked for {v})")).into());
        }
        (Some(Value::Mapping(m)), wanted) => {
            let names: Vec<String> = m.keys().filter_map(|k| k.as_str().map(String::from)).collect();
            let Some(v) = wanted else {
                return Err(Fail::new(format!("device {codename} has variants; choose one with --variant"))
                    .hint(format!("variants: {}", names.join(", ")))
                    .into());
            };
            let Some(value) = m.get(v.as_str()) else {
                let e = if default_variant.is_some() && sel.variant.is_none() {
                    device.error(
                        "default_variant",
                        format!("variant {v} does not exist (variants: {})", names.join(", ")),
                    )
                } else {
                    anyhow::Error::new(
                        Fail::new(format!("device {codename} has no variant {v}"))
                            .hint(format!("variants: {}", names.join(", "))),
                    )
                };
                return Err(e);
            };
            if !matches!(value, Value::Mapping(_)) {
                return Err(device.error(&format!("variants.{v}"), "expected a mapping of profile keys"));
            }
            layers.push(device.sub(&format!("variants.{v}"), value.clone()));
            Some(v)
        }
        (Some(_), _) => return Err(device.error("variants", "expected a mapping from variant names to profile keys")),
    };
    // The user's system config: its own keys, and `device:` overrides as the last layer.
    let mut system = SystemConfig::default();
    let mut package_origins = Vec::new();
    let mut config_layer = None;
    if let Some(cfg) = sel.config {
        let mut layer = Layer::read(cfg, "system config")?;
        let overrides = layer.take("device");
        // `device:` was taken out above; an unknown key's list of known ones still names it.
        system = deserialize_with::<SystemConfig>(std::slice::from_ref(&layer), layer.value.clone(), &["device"])?;
        if let Some(o) = overrides {
            if !matches!(o, Value::Mapping(_)) {
                return Err(layer.error("device", "expected a mapping of profile keys"));
            }
            layers.push(layer.sub("device", o));
        }
        if let Some(h) = &system.hostname {
            let ok = !h.is_empty()
                && h.len() <= 63
                && h.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !h.starts_with('-');
            if !ok {
                return Err(
                    layer.error("hostname", format!("{h:?} is not a hostname (letters, digits, dashes; at most 63)"))
                );
            }
        }
        if let Some(d) = &system.firmware_dir {
            let base = cfg.parent().unwrap_or(Path::new("."));
            system.firmware_dir = Some(base.join(d));
        }
        for (i, o) in system.overlays.iter().enumerate() {
            let dir = repo.join("overlays").join(o);
            if Codename::new(o).is_err() || !dir.join("files").is_dir() {
                return Err(layer.error(
                    &format!("overlays[{i}]"),
                    format!("no overlay {o:?} (looked for {})", dir.join("files").display()),
                ));
            }
        }
        check_packages(&layer, &system.packages, &mut package_origins)?;
        // Overlays may bring packages (`overlays/<name>/overlay.yaml`): after the system's own.
        for o in &system.overlays {
            let file = repo.join("overlays").join(o).join("overlay.yaml");
            if !file.is_file() {
                continue;
            }
            let ol = Layer::read(&file, "overlay")?;
            let spec: OverlaySpec = deserialize_layer(&ol, ol.value.clone())?;
            check_packages(&ol, &spec.packages, &mut package_origins)?;
            for p in spec.packages {
                if !system.packages.contains(&p) {
                    system.packages.push(p);
                }
            }
        }
        if system.generations.keep == 0 {
            return Err(layer.error("generations.keep", "0 would carry no generation; use 1 or more"));
        }
        if !(1..=7).contains(&system.boot.tries) {
            return Err(layer.error("boot.tries", format!("{} is not from 1 to 7", system.boot.tries)));
        }
        if system.boot.trial_deadline < 5 {
            return Err(layer.error("boot.trial_deadline", "under 5 seconds no system gets to its success point"));
        }
        for (i, sv) in system.services.iter_mut().enumerate() {
            if let Some(script) = sv.script.take() {
                if !sv.command.is_empty() {
                    return Err(layer.error(&format!("services[{i}].script"), "give `command` or `script`, not both"));
                }
                sv.command = vec!["/bin/sh".into(), "-c".into(), script];
            }
        }
        let named: Vec<(String, &String, &Vec<String>)> = (system.services.iter().enumerate())
            .map(|(i, s)| (format!("services[{i}]"), &s.name, &s.command))
            .chain(
                system
                    .health_checks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("health_checks[{i}]"), &c.name, &c.command)),
            )
            .collect();
        for (key, name, command) in named {
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                return Err(
                    layer.error(&format!("{key}.name"), format!("{name:?} is not a name (letters, digits, - and _)"))
                );
            }
            if command.is_empty() {
                return Err(layer.error(&format!("{key}.command"), "give the program and its arguments"));
            }
        }
        for (i, a) in system.cmdline.iter().enumerate() {
            if a.is_empty() || a.contains(char::is_whitespace) {
                return Err(layer.error(&format!("cmdline[{i}]"), format!("{a:?} must be one argument without spaces")));
            }
        }
        check_accounts(&system).map_err(|(key, msg)| layer.error(&key, msg))?;
        check_filesystems(&system).map_err(|(key, msg)| layer.error(&key, msg))?;
        config_layer = Some(layer);
    }
    // What a systemd system is made of, resolved by apt like the config's own names.
    if system.init == Init::Systemd {
        let ssh = system.ssh.enable.then_some("openssh-server");
        for p in SYSTEMD_BASE.iter().copied().chain(ssh) {
            if !system.packages.iter().any(|q| crate::lock::apt::Request::name_of(q) == p) {
                system.packages.push(p.to_string());
            }
        }
    }
    let mut merged = Value::Mapping(Default::default());
    for l in &layers {
        layers::merge(&mut merged, &l.value);
    }
    let dev: Device = deserialize_merged(&layers, merged)?;
    if let Err((key, msg)) = dev.validate() {
        return Err(layers::origin(&layers, &key).error(&key, msg));
    }
    if let (Some(layer), Err((key, msg))) = (&config_layer, check_encryption(&system, &dev)) {
        return Err(layer.error(&key, msg));
    }
    add_ui(&mut system, &dev);
    if system.state.encrypted() {
        add_package(&mut system, CRYPTSETUP_PACKAGE);
    }
    if system.state.remote_unlock {
        add_package(&mut system, DROPBEAR_PACKAGE);
    }
    Ok(Profile {
        codename,
        variant,
        file,
        device: dev,
        system,
        sources: layers.iter().map(|l| l.file.clone()).collect(),
        config: sel.config.map(Path::to_path_buf),
        variant_chosen: sel.variant.is_some(),
        package_origins,
        layers,
    })
}

/// Whether the device can keep the state the system config asks for encrypted.
fn check_encryption(system: &SystemConfig, dev: &Device) -> std::result::Result<(), (String, String)> {
    let key = "state.encryption".to_string();
    if !system.state.encrypted() {
        if system.state.remote_unlock {
            return Err((
                "state.remote_unlock".into(),
                "remote unlock sends the PIN of an encrypted state: it needs `encryption: luks2`".into(),
            ));
        }
        return Ok(());
    }
    if system.init != Init::Systemd {
        return Err((key, "`init: minimal` keeps no state (/var and /home are in memory): nothing to encrypt".into()));
    }
    if dev.state.is_none() {
        return Err((key, "the device has no `state` partition: nothing to encrypt".into()));
    }
    if let Some(k) = &system.state.kdf {
        if k.memory_kib < 32 << 10 || k.iter_time_ms == 0 {
            return Err((
                "state.kdf".into(),
                format!("memory_kib {} and iter_time_ms {}: at least 32768 KiB and 1 ms", k.memory_kib, k.iter_time_ms),
            ));
        }
    }
    if system.state.remote_unlock {
        let key = "state.remote_unlock".to_string();
        if system.users.get("root").is_none_or(|u| u.authorized_keys.is_empty()) {
            return Err((
                key,
                "remote unlock lets root's ssh keys send the PIN, and root has none: add them to `users: root: \
                 authorized_keys`"
                    .into(),
            ));
        }
        if dev.usb_network.is_none() && dev.qemu.is_none() {
            return Err((
                key,
                "the device has no USB network (`identity: usb` in its profile) for stage-1 to serve the unlock on"
                    .into(),
            ));
        }
    }
    Ok(())
}

fn add_package(system: &mut SystemConfig, p: &str) {
    if !system.packages.iter().any(|q| crate::lock::apt::Request::name_of(q) == p) {
        system.packages.push(p.to_string());
    }
}

/// What a phone UI adds to the system config (checked already): its packages, its user's
/// groups, and the health check that the UI runs.
fn add_ui(system: &mut SystemConfig, dev: &Device) {
    if system.ui != Ui::Phosh {
        return;
    }
    // phosh-session starts the session with `bash -l`, which Debian's package does not
    // depend on (every Debian system has bash).
    let packages = ["phosh-core", "bash"].into_iter().chain(dev.modem.then_some("phosh-phone"));
    for p in packages {
        if !system.packages.iter().any(|q| crate::lock::apt::Request::name_of(q) == p) {
            system.packages.push(p.to_string());
        }
    }
    let user = system.ui_user().expect("checked: a UI has its user").to_string();
    let u = system.users.get_mut(&user).expect("checked: the UI's user is declared");
    for g in UI_GROUPS {
        if !u.groups.iter().any(|h| h == g) {
            u.groups.push(g.to_string());
        }
    }
    if !system.health_checks.iter().any(|c| c.name == UI_CHECK) {
        system.health_checks.push(HealthCheck {
            name: UI_CHECK.into(),
            command: ui_check_command(),
            timeout: UI_CHECK_TIMEOUT,
        });
    }
}

/// Reads a YAML file of mobix's own (not a profile layer) into `T`; errors name the file,
/// line and key. The layer is returned to locate the caller's own checks.
pub fn read_yaml<T: serde::de::DeserializeOwned>(file: &Path, kind: &'static str) -> Result<(T, Layer)> {
    let layer = Layer::read(file, kind)?;
    let v = deserialize_layer(&layer, layer.value.clone())?;
    Ok((v, layer))
}

/// Deserialises a whole layer (errors located in it).
pub(super) fn deserialize_layer<T: serde::de::DeserializeOwned>(layer: &Layer, value: Value) -> Result<T> {
    deserialize_merged(std::slice::from_ref(layer), value)
}

/// Deserialises the merged value; an error is reported in the layer that set the key.
fn deserialize_merged<T: serde::de::DeserializeOwned>(layers: &[Layer], merged: Value) -> Result<T> {
    deserialize_with(layers, merged, &[])
}

/// [`deserialize_merged`], where `extra` are top-level keys the loader took out before
/// (they are known keys all the same).
fn deserialize_with<T: serde::de::DeserializeOwned>(layers: &[Layer], merged: Value, extra: &[&str]) -> Result<T> {
    match serde_path_to_error::deserialize::<_, T>(merged) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let mut said = e.into_inner().to_string();
            // A top-level unknown key: serde's path is the document, or the key itself.
            let field = said.strip_prefix("unknown field `").and_then(|r| r.split('`').next()).unwrap_or("");
            if !field.is_empty() && (path == "." || path == field) {
                for k in extra {
                    said.push_str(&format!(", `{k}`"));
                }
            }
            let (key, msg, hint) = describe(if path == "." { String::new() } else { path }, said);
            let origin = layers::origin(layers, &key);
            // The origin's own key path: strip nothing, the layer adds its prefix.
            Err(origin.error_hinted(&key, msg, hint))
        }
    }
}

/// Turns serde's path and message into the key to report, the message and a hint.
fn describe(mut key: String, mut msg: String) -> (String, String, Option<String>) {
    if let Some(i) = msg.find(" at line ") {
        msg.truncate(i);
    }
    // serde_norway may start its message with its own key path (`bootimg: ...`).
    if let Some((pre, rest)) = msg.split_once(": ") {
        if !pre.contains(' ') {
            msg = rest.to_string();
        }
    }
    msg = plain_types(&msg);
    let unknown = unknown_field_hint(&msg);
    if let Some((field, _)) = unknown.as_ref().filter(|(f, _)| !key.ends_with(f.as_str())) {
        // Name the unknown key itself, not only its parent.
        key = if key.is_empty() { field.clone() } else { format!("{key}.{field}") };
    }
    if let Some(field) = msg.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        key = if key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
    }
    let hint =
        unknown.and_then(|(_, close)| close).map(|c| format!("did you mean `{c}`?")).or_else(|| quote_hint(&msg));
    (key, msg, hint)
}

/// serde's words for Rust's number types (`expected u8`, `as u128`) in the user's words.
fn plain_types(msg: &str) -> String {
    let words = [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number of 0 or more"),
        ("u128", "a whole number of 0 or more"),
        ("usize", "a whole number of 0 or more"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
    ];
    let mut out = String::new();
    let mut rest = msg;
    // Word by word, so that `u8` inside a quoted value or a key is left alone.
    while let Some(i) = rest.find(|c: char| c.is_ascii_alphanumeric()) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        let quoted = out.ends_with('`') || out.ends_with('"');
        match words.iter().find(|(t, _)| *t == word).filter(|_| !quoted) {
            Some((_, plain)) => {
                // `integer `300` as u128`: "integer `300`, out of range" reads better.
                if out.ends_with(" as ") {
                    out.truncate(out.len() - 4);
                    out.push_str(", which is not ");
                }
                out.push_str(plain)
            }
            None => out.push_str(word),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// For a YAML scalar read as something other than the text meant (`command: [false]`,
/// `hostname: 1234`): the hint to quote it.
fn quote_hint(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("invalid type: ")?;
    let (what, rest) = rest.split_once(' ')?;
    let what = match what {
        "boolean" => "a boolean",
        "integer" => "a number",
        "floating" => "a number",
        _ => return None,
    };
    let rest = rest.strip_prefix("point ").unwrap_or(rest);
    let value = rest.strip_prefix('`')?.split('`').next()?;
    rest.contains("expected a string")
        .then(|| format!("YAML reads {value} as {what}: quote it to mean the text (\"{value}\")"))
}

/// Parses and validates one device profile's text, alone (no family, variant or config).
/// `file` is only used in messages.
pub fn parse_device(text: &str, file: &str) -> Result<Device> {
    let value = layers::parse_value(text, file)?;
    let mut layer = Layer {
        file: PathBuf::from(file),
        kind: "device profile",
        text: text.to_string(),
        prefix: String::new(),
        value,
    };
    // The loader's keys; their targets (families, variants) are not part of one file.
    for meta in ["family", "variants", "default_variant"] {
        layer.take(meta);
    }
    let dev: Device = deserialize_layer(&layer, layer.value.clone())?;
    if let Err((key, msg)) = dev.validate() {
        return Err(layer.error(&key, msg));
    }
    Ok(dev)
}

/// For "unknown field `x`, expected one of `a`, `b`": the field and the closest valid key.
fn unknown_field_hint(msg: &str) -> Option<(String, Option<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = crate::util::closest(field, candidates, 2).map(str::to_string);
    Some((field.to_string(), best))
}

#[cfg(test)]
mod tests;
