//! The user's system config (`--config FILE`): its schema (the types `schemars` renders as
//! the reference) and the checks serde cannot make.

use serde_norway::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    #[schemars(with = "super::reference::InitChoice")]
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
    /// The phone UI started at boot for `ui_user` (systemd only) [default: none].
    #[serde(default)]
    pub ui: Ui,
    /// The user the phone UI runs for; its lock screen unlocks with this user's password
    /// (the phone's PIN) [default: the one user of `users` besides root].
    #[serde(default)]
    pub ui_user: Option<String>,
    /// The persistent state (/var and /home on the device's `state` partition).
    #[serde(default)]
    pub state: StateConfig,
}

/// How the persistent state is kept.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `none`, or `luks2`: the state partition encrypted, made on the phone at its first
    /// boot (after the owner chooses a PIN on its screen) and opened by stage-1 with the PIN
    /// at every boot (systemd only; where the state follows the system image on its
    /// partition, the volume starts there, and a first install flashes with `mobix flash
    /// --erase-state`) [default: none].
    #[serde(default)]
    pub encryption: Encryption,
    /// argon2id's cost for the PIN's key slot, made lower than cryptsetup's own choice for
    /// an emulated phone whose CPU is emulated (tests); a real phone leaves it out, and
    /// cryptsetup measures the phone when it formats [default: measured on the phone].
    #[serde(default)]
    pub kdf: Option<KdfConfig>,
    /// With `encryption: luks2`: while stage-1 waits for the PIN, an ssh server (Debian's
    /// dropbear) on the phone's USB network (the emulated phone: its network) lets root's
    /// `authorized_keys` send the PIN from another machine (`mobix deploy --pin-file`, or
    /// `ssh root@172.16.42.1`), so that a deploy finishes without a hand on the phone
    /// [default: false].
    #[serde(default)]
    pub remote_unlock: bool,
}

impl StateConfig {
    /// Whether the state is encrypted (by any encryption: LUKS2 is the one there is).
    pub fn encrypted(&self) -> bool {
        self.encryption != Encryption::None
    }
}

/// The encryptions of the persistent state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// A plain ext4 filesystem.
    #[default]
    None,
    /// LUKS2 (aes-xts-plain64, argon2id) holding the ext4 filesystem.
    Luks2,
}

/// A key slot's argon2id cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KdfConfig {
    /// Memory in KiB (cryptsetup's `--pbkdf-memory`; at least 32768).
    pub memory_kib: u32,
    /// Time to spend on the phone, in milliseconds (cryptsetup's `--iter-time`).
    pub iter_time_ms: u32,
}

/// The Debian package whose `cryptsetup` stage-1 and the running system use for an
/// encrypted state.
pub const CRYPTSETUP_PACKAGE: &str = "cryptsetup-bin";

/// The Debian package whose `dropbear` serves remote unlock in stage-1 (the running system
/// has its `dropbearkey`, which shows the unlock's host key).
pub const DROPBEAR_PACKAGE: &str = "dropbear-bin";

/// The phone UIs a system config can ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ui {
    /// No UI: the screen shows the console.
    #[default]
    None,
    /// Phosh, GNOME's phone shell, from Debian (`phosh-core`: the shell, its compositor phoc,
    /// the on-screen keyboard squeekboard, the GNOME session's services, NetworkManager;
    /// `phosh-phone` too where the device has a modem), started as Debian's `phosh.service`
    /// starts it, without a greeter: the session opens at boot behind the lock screen.
    Phosh,
}

/// The health check a phone UI adds: a generation whose UI does not come up is bad.
pub const UI_CHECK: &str = "ui";

/// Seconds the UI has to come up (under emulation, without a GPU, phosh takes about a
/// minute).
pub const UI_CHECK_TIMEOUT: u32 = 240;

/// The UI check: the shell (`phosh`) and its compositor (`phoc`) run, and the shell is
/// the same process ten seconds later (a session that fails is restarted every few
/// seconds by its unit, so a crash loop does not pass); a session its unit had to start
/// three times over fails the check at once rather than at its timeout.
pub fn ui_check_command() -> Vec<String> {
    let script = "until p=$(busybox pidof phosh) && busybox pidof phoc >/dev/null && sleep 10 && \
                  [ \"$(busybox pidof phosh)\" = \"$p\" ]; do n=$(systemctl show -P NRestarts phosh.service); \
                  [ \"${n:-0}\" -lt 3 ] || { echo \"phosh.service was restarted $n times\"; exit 1; }; sleep 2; done";
    ["/bin/sh", "-c", script].iter().map(|s| s.to_string()).collect()
}

/// The groups a phone UI's user is in (as Mobian makes its user): the screen, the GPU,
/// the touchscreen and keys, sound, haptic feedback and removable storage.
pub const UI_GROUPS: &[&str] = &["video", "render", "input", "audio", "feedbackd", "plugdev"];

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

    /// The user the phone UI runs for: `ui_user`, else the one user besides root (None
    /// without a UI, or when that is not one user).
    pub fn ui_user(&self) -> Option<&str> {
        if self.ui == Ui::None {
            return None;
        }
        if let Some(u) = &self.ui_user {
            return Some(u);
        }
        let mut people = self.users.keys().filter(|n| *n != "root");
        match (people.next(), people.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
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
    /// Seconds the open generation menu waits for a key before it boots what stage-1 would
    /// have chosen by itself [default: 30].
    #[serde(default = "default_menu_idle")]
    pub menu_idle_timeout: u32,
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
fn default_menu_idle() -> u32 {
    30
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            tries: default_tries(),
            trial_deadline: default_deadline(),
            menu_timeout_ms: default_menu_timeout(),
            menu_idle_timeout: default_menu_idle(),
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
    #[serde(default = "default_restart")]
    #[schemars(with = "super::reference::RestartChoice")]
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
            restart: default_restart(),
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

/// A service's restart policy: the contract's own type, so the host writes what the phone reads.
pub use mobix_bootctl::contract::{Init, Restart};

fn default_restart() -> Restart {
    Restart::OnFailure
}

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
pub(super) fn check_filesystems(s: &SystemConfig) -> std::result::Result<(), (String, String)> {
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

/// A phone UI needs systemd and one user who can unlock it: the dotted key and what is wrong.
fn check_ui(s: &SystemConfig) -> std::result::Result<(), (String, String)> {
    if s.ui == Ui::None {
        return match &s.ui_user {
            Some(_) => Err(("ui_user".into(), "names the user of a phone UI, and `ui` is none".into())),
            None => Ok(()),
        };
    }
    if s.init != Init::Systemd {
        return Err(("ui".into(), "a phone UI needs `init: systemd`".into()));
    }
    let Some(user) = s.ui_user() else {
        let people = s.users.keys().filter(|n| *n != "root").count();
        let why = if people == 0 {
            "the UI runs for a user, and `users` has none besides root: declare the phone's owner there"
        } else {
            "the UI runs for one user, and `users` has several: name it in `ui_user`"
        };
        return Err(("ui".into(), why.into()));
    };
    if user == "root" {
        return Err(("ui_user".into(), "the UI does not run as root: name a user of `users`".into()));
    }
    let Some(u) = s.users.get(user) else {
        return Err(("ui_user".into(), format!("no user {user:?}: declare it in `users`")));
    };
    if u.hashed_password.is_none() {
        return Err((
            format!("users.{user}"),
            format!(
                "the lock screen unlocks with {user}'s password, and it has none, so the phone could never be \
                 unlocked: give `hashed_password`, the hash of the PIN (`mobix config hash-pin` makes it)"
            ),
        ));
    }
    Ok(())
}

/// The checks of users, groups, ssh and services that serde cannot make: the dotted key
/// and what is wrong.
pub(super) fn check_accounts(s: &SystemConfig) -> std::result::Result<(), (String, String)> {
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
    check_ui(s)?;
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
