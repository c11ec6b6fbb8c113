//! Device profiles: `devices/<codename>/device.yaml` loaded into typed, validated values.
//!
//! Pipeline stage: profile. Input: YAML files under the repository; output: a [`Profile`].
//! Reads files, nothing else. Every YAML type rejects unknown keys, and every error names
//! the file, the line and the key, and says what was expected.

pub mod deviceinfo;
pub mod import;
mod layers;
pub mod reference;
pub use layers::Layer;
mod locate;
mod types;

use serde_norway::Value;

pub use types::*;

use crate::util::Fail;
use anyhow::Result;
use std::collections::BTreeMap;
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

/// A kernel built from source: `kernels/<name>/kernel.yaml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// A `debs` entry of `mobix.lock` holding the source tarball (Debian's linux-source-X.Y).
    pub source: String,
    /// The base configuration: a make target of the tree (`tinyconfig`, `defconfig`, ...).
    pub base: String,
    /// Config fragments in the spec's directory, applied in order after the base.
    #[serde(default)]
    pub fragments: Vec<String>,
}

/// A kernel spec with its fragments read.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    pub name: String,
    pub spec: KernelSpec,
    /// (file name, text) of each fragment, in order.
    pub fragments: Vec<(String, String)>,
}

/// Loads `kernels/<name>/kernel.yaml` and its fragments.
pub fn load_kernel(repo: &Path, name: &str) -> Result<LoadedKernel> {
    let dir = repo.join("kernels").join(name);
    let file = dir.join("kernel.yaml");
    if !file.is_file() {
        return Err(Fail::new(format!("no kernel spec {} (looked for {})", name, file.display())).into());
    }
    let layer = Layer::read(&file, "kernel spec")?;
    let spec: KernelSpec = deserialize_layer(&layer, layer.value.clone())?;
    let targets = ["tinyconfig", "allnoconfig", "defconfig", "allmodconfig", "allyesconfig"];
    if !targets.contains(&spec.base.as_str()) && !spec.base.ends_with("_defconfig") {
        return Err(layer.error(
            "base",
            format!("{:?} is not a config target (tinyconfig, allnoconfig, defconfig or *_defconfig)", spec.base),
        ));
    }
    let fragments = read_fragments(&layer, &dir, &spec.fragments)?;
    Ok(LoadedKernel { name: name.to_string(), spec, fragments })
}

/// Reads a spec's config fragments (file names in its directory), in order.
fn read_fragments(layer: &Layer, dir: &Path, names: &[String]) -> Result<Vec<(String, String)>> {
    let mut fragments = Vec::new();
    for (i, f) in names.iter().enumerate() {
        if f.contains('/') || f.starts_with('.') {
            return Err(
                layer.error(&format!("fragments[{i}]"), format!("{f:?} must be a file name in {}", dir.display()))
            );
        }
        let text = std::fs::read_to_string(dir.join(f)).map_err(|e| {
            anyhow::Error::new(e)
                .context(layer.error(&format!("fragments[{i}]"), format!("cannot read {}", dir.join(f).display())))
        })?;
        fragments.push((f.clone(), text));
    }
    Ok(fragments)
}

/// A C program built from a Debian source package with `aarch64-linux-gnu-gcc`:
/// `packages/<name>/package.yaml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// A `sources` entry of `mobix.lock`: the Debian source package (Debian's patches are
    /// applied).
    pub source: String,
    /// Arguments to `make` (targets, `VAR=value`), run in the unpacked tree with `CC`,
    /// `CFLAGS` and `LDFLAGS` set for a static aarch64 build.
    #[serde(default)]
    pub make: Vec<String>,
    /// Extra `CFLAGS` (after mobix's `-O2` and path remapping).
    #[serde(default)]
    pub cflags: Vec<String>,
    /// What the package holds: its path in the output (`bin/mmc`) to the file the build made
    /// (relative to the source tree). ELF files are stripped.
    pub install: std::collections::BTreeMap<String, String>,
}

/// A package spec, read.
#[derive(Debug, Clone)]
pub struct LoadedPackage {
    pub name: String,
    pub spec: PackageSpec,
}

/// Whether a relative path stays where it is put (no `..`, not absolute, not empty).
fn plain_rel(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// What an overlay adds besides its files: `overlays/<name>/overlay.yaml`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlaySpec {
    /// Packages the overlay needs, as in the system config's `packages`.
    #[serde(default)]
    pub packages: Vec<String>,
}

/// Where a package of the system was named: the layer (system config or overlay) and
/// its key, so that an error found later (apt knows no such package) points at it.
#[derive(Debug, Clone)]
pub struct PackageOrigin {
    pub name: String,
    pub layer: Layer,
    pub key: String,
}

/// Checks a `packages` list of `layer`: each a `packages/` spec, a `debs` entry of the
/// lock, or a Debian package name (`htop`, `vim=2:9.0.1378-2`) that apt resolves; no
/// package twice. Records where each was named.
fn check_packages(layer: &Layer, packages: &[String], origins: &mut Vec<PackageOrigin>) -> Result<()> {
    let name_of = crate::lock::apt::Request::name_of;
    for (i, p) in packages.iter().enumerate() {
        let key = format!("packages[{i}]");
        if crate::lock::apt::Request::parse(p).is_none() && Codename::new(p).is_err() {
            return Err(layer.error_hinted(
                &key,
                format!("{p:?} is not a package name"),
                Some(
                    "a Debian package name (`htop`), optionally with a version (`vim=2:9.0.1378-2`), or a \
                      packages/ spec's name"
                        .into(),
                ),
            ));
        }
        if packages[..i].iter().any(|q| name_of(q) == name_of(p)) {
            return Err(layer.error(&key, format!("{} is listed twice", name_of(p))));
        }
        origins.push(PackageOrigin { name: p.clone(), layer: layer.clone(), key });
    }
    Ok(())
}

/// Where the spec of package `name` is: `packages/<name>/package.yaml` (a package without
/// one is a `debs` entry of the lock or a Debian package apt resolves).
pub fn package_spec(repo: &Path, name: &str) -> PathBuf {
    repo.join("packages").join(name).join("package.yaml")
}

/// Loads `packages/<name>/package.yaml`.
pub fn load_package(repo: &Path, name: &str) -> Result<LoadedPackage> {
    let file = package_spec(repo, name);
    if !file.is_file() {
        return Err(Fail::new(format!("no package spec {} (looked for {})", name, file.display())).into());
    }
    let layer = Layer::read(&file, "package spec")?;
    let spec: PackageSpec = deserialize_layer(&layer, layer.value.clone())?;
    if spec.install.is_empty() {
        return Err(layer.error("install", "a package must install at least one file"));
    }
    for (dest, built) in &spec.install {
        if !plain_rel(dest) || dest == "share/mobix" || dest.starts_with("share/mobix/") {
            return Err(layer.error(&format!("install.{dest}"), "must be a relative path inside the package"));
        }
        if !plain_rel(built) {
            return Err(
                layer.error(&format!("install.{dest}"), format!("{built:?} must be a path inside the source tree"))
            );
        }
    }
    for (i, a) in spec.make.iter().chain(&spec.cflags).enumerate() {
        if a.is_empty() || a.contains(char::is_whitespace) {
            let key =
                if i < spec.make.len() { format!("make[{i}]") } else { format!("cflags[{}]", i - spec.make.len()) };
            return Err(layer.error(&key, format!("{a:?} must be one argument without spaces")));
        }
    }
    Ok(LoadedPackage { name: name.to_string(), spec })
}

/// A U-Boot built from Debian's source package: `bootloaders/<name>/u-boot.yaml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UBootSpec {
    /// A `sources` entry of `mobix.lock` (Debian's `u-boot` source package).
    pub source: String,
    /// The board's defconfig (`qemu_arm64_defconfig`).
    pub defconfig: String,
    /// Config fragments in the spec's directory, applied in order after the defconfig.
    #[serde(default)]
    pub fragments: Vec<String>,
}

/// A U-Boot spec with its fragments read.
#[derive(Debug, Clone)]
pub struct LoadedUBoot {
    pub name: String,
    pub spec: UBootSpec,
    pub fragments: Vec<(String, String)>,
}

/// Loads `bootloaders/<name>/u-boot.yaml` and its fragments.
pub fn load_u_boot(repo: &Path, name: &str) -> Result<LoadedUBoot> {
    let dir = repo.join("bootloaders").join(name);
    let file = dir.join("u-boot.yaml");
    if !file.is_file() {
        return Err(Fail::new(format!("no U-Boot spec {} (looked for {})", name, file.display())).into());
    }
    let layer = Layer::read(&file, "U-Boot spec")?;
    let spec: UBootSpec = deserialize_layer(&layer, layer.value.clone())?;
    if !spec.defconfig.ends_with("_defconfig") || spec.defconfig.contains('/') {
        return Err(layer.error("defconfig", format!("{:?} is not a board defconfig (NAME_defconfig)", spec.defconfig)));
    }
    let fragments = read_fragments(&layer, &dir, &spec.fragments)?;
    Ok(LoadedUBoot { name: name.to_string(), spec, fragments })
}

/// The user's system configuration (`--config FILE`). Its `device:` mapping overrides
/// device keys (merged after the variant); the keys here describe the system itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// The system's hostname [default: the device codename].
    #[serde(default)]
    pub hostname: Option<String>,
    /// PID 1 after stage-1: `systemd` (Debian's, after mobix's activation) or `minimal`
    /// (mobix's own small stage-2: services and health checks, a shell on the console,
    /// for tiny systems and fast tests) [default: systemd].
    #[serde(default = "default_init")]
    #[schemars(with = "reference::InitChoice")]
    pub init: Init,
    /// Login accounts, by name (systemd only). Their uids and gids are kept in mobix.lock.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Extra groups users can be members of (besides the system's own, such as `wheel`,
    /// `audio`, `video`, `input`, `dialout`, `plugdev`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The OpenSSH server (systemd only).
    #[serde(default)]
    pub ssh: Ssh,
    /// Units of the packages to start at boot (systemd only): `systemd-timesyncd.service`,
    /// `fstrim.timer`. A package's units with an install section start only when listed.
    #[serde(default)]
    pub enable_units: Vec<String>,
    /// Mount points (systemd only), as NixOS's `fileSystems`: they become /etc/fstab,
    /// which systemd turns into mount units. A mount that fails fails the boot (a trial
    /// falls back) unless its options say `nofail`.
    #[serde(default)]
    pub filesystems: Vec<FileSystem>,
    /// Kernel arguments appended to the device's command line.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// A directory holding the firmware files the device profile lists (for firmware that
    /// comes from the phone or its vendor rather than a package). Relative to this file.
    #[serde(default)]
    pub firmware_dir: Option<PathBuf>,
    /// Overlays (`overlays/<name>/files/`) layered onto the system, in order (later wins):
    /// their `etc/` merges into /etc, the rest into the software tree.
    #[serde(default)]
    pub overlays: Vec<String>,
    /// Packages in the software tree, in order: each a `packages/<name>/` spec (built from
    /// source), a `debs` entry of `mobix.lock` (with what it `depends` on), or a Debian
    /// package name (`htop`, `vim=2:9.0.1378-2`) resolved by apt into the lock's `apt`.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Which generations the system partition carries.
    #[serde(default)]
    pub generations: GenerationsConfig,
    /// Boot counting: how a new generation proves itself.
    #[serde(default)]
    pub boot: BootConfig,
    /// Long-running programs stage-2 starts and restarts when they exit.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Commands that must all succeed before a boot counts as good (the success point).
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
}

fn default_init() -> Init {
    Init::Systemd
}

/// A build without `--config` is a build with an empty one: every key its default.
impl Default for SystemConfig {
    fn default() -> Self {
        serde_norway::from_value(Value::Mapping(Default::default())).expect("every system config key has a default")
    }
}

impl SystemConfig {
    /// Whether any account (root included) has a key or a password: a systemd system
    /// without one has no way in but the debug shell.
    pub fn can_log_in(&self) -> bool {
        self.users.values().any(|u| !u.authorized_keys.is_empty() || u.hashed_password.is_some())
    }

    /// The account an ssh login is suggested for: the first user with a key, else the
    /// first user, else root.
    pub fn login_user(&self) -> &str {
        (self.users.iter().find(|(_, u)| !u.authorized_keys.is_empty()))
            .or_else(|| self.users.iter().next())
            .map_or("root", |(name, _)| name.as_str())
    }

    /// The public keys of [`login_user`](Self::login_user).
    pub fn login_keys(&self) -> &[String] {
        self.users.get(self.login_user()).map_or(&[], |u| u.authorized_keys.as_slice())
    }

    /// `ssh [-i KEY] [-p PORT] USER@HOST`: the command that logs in at `host` (on the ssh
    /// port the config gives, or `port` where a forward decides it), with `identity` the
    /// private key to offer when ssh would not offer it by itself.
    pub fn ssh_command(&self, host: &str, port: Option<u16>, identity: Option<&str>) -> String {
        let i = identity.map_or(String::new(), |k| format!("-i {k} "));
        match port.unwrap_or(self.ssh.port) {
            22 => format!("ssh {i}{}@{host}", self.login_user()),
            p => format!("ssh {i}-p {p} {}@{host}", self.login_user()),
        }
    }
}

/// One entry of `filesystems`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSystem {
    /// Where it is mounted (an absolute path outside what mobix manages).
    pub mount_point: String,
    /// What is mounted: `PARTLABEL=NAME` (a GPT partition name), `LABEL=…`, `UUID=…`, a
    /// `/dev/…` path, or a name for filesystems without a device (`tmpfs`).
    pub device: String,
    /// The filesystem type (`ext4`, `vfat`, `tmpfs`, …).
    #[serde(rename = "type")]
    pub fstype: String,
    /// Mount options [default: defaults].
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationsConfig {
    /// The newest this many generations go onto the system partition [default: 3].
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Generation numbers carried whatever their age.
    #[serde(default)]
    pub pinned: Vec<u32>,
}

fn default_keep() -> u32 {
    3
}

impl Default for GenerationsConfig {
    fn default() -> Self {
        GenerationsConfig { keep: default_keep(), pinned: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// Boots a new generation gets to reach its success point before it is bad [default: 3].
    #[serde(default = "default_tries")]
    pub tries: u8,
    /// Seconds a trial boot may take to reach its success point before stage-2 reboots
    /// (a hang is a failure) [default: 300].
    #[serde(default = "default_deadline")]
    pub trial_deadline: u32,
    /// Milliseconds stage-1 waits for a key on the console that opens the generation menu
    /// (0: only `mobix.menu` on the kernel command line opens it) [default: 1000].
    #[serde(default = "default_menu_timeout")]
    pub menu_timeout_ms: u32,
}

fn default_tries() -> u8 {
    3
}
fn default_deadline() -> u32 {
    300
}
fn default_menu_timeout() -> u32 {
    1000
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            tries: default_tries(),
            trial_deadline: default_deadline(),
            menu_timeout_ms: default_menu_timeout(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The service's name: its unit is `NAME.service` under systemd. Example: `hello`.
    pub name: String,
    /// The program and its arguments (no shell; `script` for one).
    #[serde(default)]
    pub command: Vec<String>,
    /// A shell script instead of `command` (run as `/bin/sh -c SCRIPT`).
    #[serde(default)]
    pub script: Option<String>,
    /// When it starts again after it exits [default: on-failure].
    #[serde(default)]
    pub restart: Restart,
    /// systemd: units it starts after (`network.target`, `ssh.service`).
    #[serde(default)]
    pub after: Vec<String>,
    /// systemd: units it starts with it.
    #[serde(default)]
    pub wants: Vec<String>,
    /// systemd: the target that starts it [default: multi-user.target].
    #[serde(default = "default_wanted_by")]
    pub wanted_by: String,
    /// systemd: the user it runs as [default: root].
    #[serde(default)]
    pub user: Option<String>,
    /// systemd: environment variables.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

impl Service {
    /// A service running `command`, every other key at its default.
    pub fn new(name: &str, command: &[&str]) -> Service {
        Service {
            name: name.to_string(),
            command: command.iter().map(|c| c.to_string()).collect(),
            script: None,
            restart: Restart::default(),
            after: Vec::new(),
            wants: Vec::new(),
            wanted_by: default_wanted_by(),
            user: None,
            environment: BTreeMap::new(),
        }
    }
}

fn default_wanted_by() -> String {
    "multi-user.target".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Always,
    #[default]
    OnFailure,
    No,
}

impl Restart {
    /// The same choice in the host↔phone contract.
    pub fn on_the_phone(self) -> mobix_bootctl::contract::Restart {
        use mobix_bootctl::contract::Restart as R;
        match self {
            Restart::Always => R::Always,
            Restart::OnFailure => R::OnFailure,
            Restart::No => R::No,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::No => "no",
        }
    }
}

pub use mobix_bootctl::contract::Init;

/// A login account of the system config.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Groups besides its own (`wheel`, `audio`, or one of `groups`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Login shell [default: /bin/sh].
    #[serde(default)]
    pub shell: Option<String>,
    /// Home directory, on the persistent state [default: /home/NAME; /root for root].
    #[serde(default)]
    pub home: Option<String>,
    /// OpenSSH public keys (`ssh-ed25519 AAAA… comment`).
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    /// A crypt(3) hash (`mkpasswd -m yescrypt`); without it the password is locked.
    #[serde(default)]
    pub hashed_password: Option<String>,
}

/// The OpenSSH server.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// Run OpenSSH's server (Debian's `openssh-server`) with a generated `sshd_config`; each
    /// user's keys go to `/etc/ssh/authorized_keys.d/<user>`.
    #[serde(default)]
    pub enable: bool,
    /// The port sshd listens on.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// `prohibit-password` (keys only), `yes` or `no` [default: prohibit-password].
    #[serde(default = "default_root_login")]
    pub permit_root_login: String,
    /// Password logins [default: false: keys only].
    #[serde(default)]
    pub password_authentication: bool,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_root_login() -> String {
    "prohibit-password".into()
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            enable: false,
            port: default_ssh_port(),
            permit_root_login: default_root_login(),
            password_authentication: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The check's name (its unit is `mobix-check-NAME.service` under systemd).
    pub name: String,
    /// The program and its arguments; exit 0 passes. Example: `[systemctl, is-active, ssh.service]`.
    pub command: Vec<String>,
    /// Seconds before the check counts as failed [default: 60].
    #[serde(default = "default_check_timeout")]
    pub timeout: u32,
}

fn default_check_timeout() -> u32 {
    60
}

/// The Debian packages every `init: systemd` system has: systemd and udev, what a console
/// login and a user's `systemctl` need (util-linux, login, dbus, libpam-systemd), kmod for
/// udev's module loading, e2fsprogs to make the state filesystem, coreutils and hostname
/// for the everyday commands, and usr-is-merged (which keeps apt from pulling usrmerge
/// and perl).
pub const SYSTEMD_BASE: &[&str] = &[
    "systemd",
    "udev",
    "kmod",
    "util-linux",
    "login",
    "dbus",
    "libpam-systemd",
    "e2fsprogs",
    "coreutils",
    "hostname",
    "usr-is-merged",
];

/// `filesystems` (systemd only): mount points outside what mobix manages (below /var and
/// /home, the state partition, is the user's), each field one fstab word. The dotted key
/// and what is wrong.
fn check_filesystems(s: &SystemConfig) -> std::result::Result<(), (String, String)> {
    // Mounted over whole; the next list also below.
    const EXACT: [&str; 3] = ["/", "/var", "/home"];
    const TREES: [&str; 11] =
        ["/mobix", "/mobix-state", "/etc", "/usr", "/bin", "/sbin", "/lib", "/run", "/proc", "/sys", "/dev"];
    if s.init != Init::Systemd && !s.filesystems.is_empty() {
        return Err(("filesystems[0]".into(), "mount points need `init: systemd`".into()));
    }
    let word = |v: &str| !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c == '#' || c.is_control());
    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in s.filesystems.iter().enumerate() {
        let key = |k: &str| format!("filesystems[{i}].{k}");
        let mp = match f.mount_point.trim_end_matches('/') {
            "" => "/",
            m => m,
        };
        if !f.mount_point.starts_with('/') || !word(mp) || mp.split('/').any(|c| c == "..") {
            return Err((key("mount_point"), format!("{:?} is not an absolute path without spaces", f.mount_point)));
        }
        let owned = EXACT
            .iter()
            .chain(&TREES)
            .find(|o| mp == **o)
            .or_else(|| TREES.iter().find(|o| mp.starts_with(&format!("{o}/"))));
        if let Some(o) = owned {
            return Err((key("mount_point"), format!("{} is mobix's own ({o})", f.mount_point)));
        }
        if !seen.insert(mp) {
            return Err((key("mount_point"), format!("{} is mounted twice", f.mount_point)));
        }
        if !word(&f.device) {
            return Err((
                key("device"),
                format!("{:?}: give PARTLABEL=, LABEL=, UUID=, a /dev path or a name", f.device),
            ));
        }
        if f.fstype.is_empty() || !f.fstype.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_') {
            return Err((key("type"), format!("{:?} is not a filesystem type", f.fstype)));
        }
        if let Some((j, o)) = f.options.iter().enumerate().find(|(_, o)| !word(o) || o.contains(',')) {
            return Err((format!("filesystems[{i}].options[{j}]"), format!("{o:?} must be one option")));
        }
    }
    Ok(())
}

/// The checks of users, groups, ssh and services that serde cannot make: the dotted key
/// and what is wrong.
fn check_accounts(s: &SystemConfig) -> std::result::Result<(), (String, String)> {
    let err = |k: String, m: String| Err((k, m));
    let systemd = s.init == Init::Systemd;
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 32
            && n.bytes().next().is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
            && n.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    };
    if !systemd {
        if let Some(u) = s.users.keys().next() {
            return err(format!("users.{u}"), "users need `init: systemd` (the minimal init has only root)".into());
        }
        if s.ssh.enable {
            return err("ssh.enable".into(), "ssh needs `init: systemd`".into());
        }
    }
    for (i, g) in s.groups.iter().enumerate() {
        if !name_ok(g) {
            return err(
                format!("groups[{i}]"),
                format!("{g:?} is not a group name (lowercase letters, digits, _ and -)"),
            );
        }
        if crate::lock::ids::is_system_group(g) {
            return err(format!("groups[{i}]"), format!("{g} is a system group already"));
        }
    }
    for (name, u) in &s.users {
        let key = |k: &str| format!("users.{name}.{k}");
        if !name_ok(name) {
            return err(
                format!("users.{name}"),
                format!("{name:?} is not a user name (lowercase letters, digits, _ and -; at most 32)"),
            );
        }
        if name != "root" && crate::lock::ids::is_system_user(name) {
            return err(format!("users.{name}"), format!("{name} is a system account"));
        }
        for (i, g) in u.groups.iter().enumerate() {
            if !crate::lock::ids::is_system_group(g) && !s.groups.contains(g) {
                return err(
                    format!("{}[{i}]", key("groups")),
                    format!("no group {g:?}: declare it in `groups` (system groups: wheel, audio, video, input, …)"),
                );
            }
        }
        for (k, v) in [("shell", &u.shell), ("home", &u.home)] {
            if let Some(v) = v {
                if !v.starts_with('/') || v.contains(':') || v.contains(char::is_whitespace) {
                    return err(key(k), format!("{v:?} is not an absolute path"));
                }
            }
        }
        for (i, k) in u.authorized_keys.iter().enumerate() {
            let kind = k.split_whitespace().next().unwrap_or("");
            let known = kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-");
            if !known || k.split_whitespace().count() < 2 || k.contains('\n') {
                return err(
                    format!("{}[{i}]", key("authorized_keys")),
                    "not an OpenSSH public key (one line: `ssh-ed25519 AAAA… comment`)".into(),
                );
            }
        }
        if let Some(h) = &u.hashed_password {
            if !h.starts_with('$') || h.contains(':') || h.contains(char::is_whitespace) {
                return err(
                    key("hashed_password"),
                    "not a crypt(3) hash (make one with `mkpasswd -m yescrypt`); never the password itself".into(),
                );
            }
        }
        if name == "root" && !u.groups.is_empty() {
            return err(key("groups"), "root's groups are fixed".into());
        }
    }
    if !["prohibit-password", "yes", "no"].contains(&s.ssh.permit_root_login.as_str()) {
        return err(
            "ssh.permit_root_login".into(),
            format!("{:?} is not prohibit-password, yes or no", s.ssh.permit_root_login),
        );
    }
    if s.ssh.port == 0 {
        return err("ssh.port".into(), "0 is not a port".into());
    }
    for (i, u) in s.enable_units.iter().enumerate() {
        if !systemd {
            return err(format!("enable_units[{i}]"), "units need `init: systemd`".into());
        }
        let known = [".service", ".socket", ".timer", ".path"].iter().any(|x| u.ends_with(x));
        if !known || u.contains('/') || u.contains(char::is_whitespace) {
            return err(format!("enable_units[{i}]"), format!("{u:?} is not a service, socket, timer or path unit"));
        }
    }
    for (i, sv) in s.services.iter().enumerate() {
        let key = |k: &str| format!("services[{i}].{k}");
        if !systemd {
            let set = !sv.after.is_empty()
                || !sv.wants.is_empty()
                || sv.user.is_some()
                || !sv.environment.is_empty()
                || sv.wanted_by != "multi-user.target";
            if set {
                return err(key("name"), "after, wants, wanted_by, user and environment need `init: systemd`".into());
            }
        }
        let unit_ok =
            |u: &str| u.contains('.') && !u.contains('/') && !u.contains(char::is_whitespace) && !u.starts_with('.');
        for (k, list) in [("after", &sv.after), ("wants", &sv.wants)] {
            for (j, u) in list.iter().enumerate() {
                if !unit_ok(u) {
                    return err(format!("{}[{j}]", key(k)), format!("{u:?} is not a unit name (such as ssh.service)"));
                }
            }
        }
        if !sv.wanted_by.ends_with(".target") || !unit_ok(&sv.wanted_by) {
            return err(key("wanted_by"), format!("{:?} is not a target (such as multi-user.target)", sv.wanted_by));
        }
        if let Some(u) = &sv.user {
            if !s.users.contains_key(u) && !crate::lock::ids::is_system_user(u) {
                return err(key("user"), format!("no user {u:?}: declare it in `users`"));
            }
        }
        for k in sv.environment.keys() {
            let ok = !k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
            if !ok {
                return err(format!("{}.{k}", key("environment")), format!("{k:?} is not a variable name"));
            }
        }
    }
    Ok(())
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

/// Reads a YAML file of mobix's own (not a profile layer) into `T`; errors name the file,
/// line and key. The layer is returned to locate the caller's own checks.
pub fn read_yaml<T: serde::de::DeserializeOwned>(file: &Path, kind: &'static str) -> Result<(T, Layer)> {
    let layer = Layer::read(file, kind)?;
    let v = deserialize_layer(&layer, layer.value.clone())?;
    Ok((v, layer))
}

/// Deserialises a whole layer (errors located in it).
fn deserialize_layer<T: serde::de::DeserializeOwned>(layer: &Layer, value: Value) -> Result<T> {
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
