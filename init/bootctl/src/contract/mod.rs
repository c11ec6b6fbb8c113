//! The files the host writes for the phone and reads back, as one set of types: the host
//! serialises them, the on-phone init deserialises the very same ones, so a renamed field
//! fails a unit test instead of a boot.
//!
//! - `etc/mobix/stage1.json` in the initramfs: [`Stage1`] (what stage-1 needs to find and
//!   judge the system partition);
//! - `/mobix/generations/<n>.json` on the system partition: [`Generation`];
//! - `boot.json` in a generation's toplevel: [`BootSpec`] (bootspec-like);
//! - `etc/mobix/system.json` in the generation's /etc: [`SystemSpec`] (what stage-2 runs,
//!   checks and waits for);
//! - `/run/mobix/boot.json` on the running phone: [`Booted`] (what stage-1 decided, for
//!   stage-2 and `mobix-bless`);
//! - the boot-state record itself is [`crate::record`], a binary format of its own.
//!
//! The field order is part of the contract: the host's JSON is hashed into store paths.

use serde::{Deserialize, Serialize};

/// The store's path on the phone; every toplevel a generation entry names lies under it.
pub const STORE_DIR: &str = "/mobix/store";
/// Where the system partition keeps one [`Generation`] per carried generation.
pub const GENERATIONS_DIR: &str = "/mobix/generations";
/// Where stage-1 finds its [`Stage1`] inside the initramfs.
pub const STAGE1_FILE: &str = "/etc/mobix/stage1.json";
/// Where stage-2 finds its [`SystemSpec`] (in the generation's /etc).
pub const SYSTEM_FILE: &str = "/etc/mobix/system.json";
/// Where stage-1 leaves its [`Booted`] for stage-2 and `mobix-bless`.
pub const BOOTED_FILE: &str = "/run/mobix/boot.json";

/// An A/B slot. Slot `a` is index 0 in misc's `slot_info` and in the boot-state record,
/// and JSON carries it as that index too (as every stage-1 and stage-2 has read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const BOTH: [Slot; 2] = [Slot::A, Slot::B];

    /// The slot of index `i` (0 = a, 1 = b); None past the two slots mobix knows.
    pub fn from_index(i: usize) -> Option<Slot> {
        match i {
            0 => Some(Slot::A),
            1 => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot a suffix or a letter names: `a`, `b`, `_a`, `_b`.
    pub fn parse(s: &str) -> Option<Slot> {
        match s.trim_start_matches('_') {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    /// The partition-name suffix (`_a`).
    pub fn suffix(self) -> &'static str {
        match self {
            Slot::A => "_a",
            Slot::B => "_b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// Serde helpers for reports to people, where a slot shows as its letter (`"a"`) and not as
/// its byte on the wire: `#[serde(serialize_with = "slot_letter::option")]`.
pub mod slot_letter {
    use super::Slot;
    use serde::Serialize;

    pub fn option<S: serde::Serializer>(slot: &Option<Slot>, s: S) -> Result<S::Ok, S::Error> {
        slot.map(Slot::letter).serialize(s)
    }

    pub fn list<S: serde::Serializer>(slots: &[Slot], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(slots.iter().map(|x| x.letter()))
    }
}

/// Slot a: where a freshly flashed phone starts, and what an unset slot byte (0) reads as.
impl Default for Slot {
    fn default() -> Slot {
        Slot::A
    }
}

impl Serialize for Slot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.index() as u8)
    }
}

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let i = u8::deserialize(d)?;
        Slot::from_index(i as usize)
            .ok_or_else(|| serde::de::Error::custom(format!("slot index {i} is not 0 (a) or 1 (b)")))
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// A system partition's filesystem. On the wire its kernel name (`ext4`, `erofs`), as
/// `/proc/mounts` says it; a name mobix does not make comes back as [`Filesystem::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filesystem {
    Ext4,
    Erofs,
    Other(String),
}

impl Filesystem {
    pub fn name(&self) -> &str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Erofs => "erofs",
            Filesystem::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Filesystem {
        match s {
            "ext4" => Filesystem::Ext4,
            "erofs" => Filesystem::Erofs,
            other => Filesystem::Other(other.to_string()),
        }
    }

    /// Whether a deploy can add store paths to it (erofs is read-only by design).
    pub fn takes_new_paths(&self) -> bool {
        *self == Filesystem::Ext4
    }
}

impl Serialize for Filesystem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Filesystem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Filesystem::parse(&String::deserialize(d)?))
    }
}

impl From<&str> for Filesystem {
    fn from(s: &str) -> Filesystem {
        Filesystem::parse(s)
    }
}

impl std::fmt::Display for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the boot image tells stage-1 about the phone and about itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stage1Config {
    /// GPT name of the partition holding `/mobix`.
    pub system_partition: String,
    /// The system partition's filesystem: what stage-1 mounts it as.
    pub filesystem: Filesystem,
    pub console: String,
    /// Byte offset of the boot-state area inside the system partition.
    pub state_offset: u64,
    /// The kernel this boot image carries (its `Image` on the phone): generations built
    /// with another kernel are not booted with this one.
    pub kernel: String,
    /// The command line in this boot image: with `kernel`, the identity of what the boot
    /// image starts (a generation built for another command line is not booted with it).
    #[serde(default)]
    pub cmdline: String,
    /// How long stage-1 waits for a key that opens the generation menu.
    pub menu_timeout_ms: u32,
    /// Seconds without a key after which the open menu boots the automatic choice.
    #[serde(default = "default_menu_idle_s")]
    pub menu_idle_s: u32,
    /// The key that, held at power-on, opens the generation menu.
    #[serde(default, skip_serializing_if = "MenuKey::is_default")]
    pub menu_key: MenuKey,
    /// The phone's name, as the screen shows it (the profile's `name`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    /// The USB network gadget stage-1 makes when the phone has a USB device controller.
    /// Written only when the profile asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb_network: Option<UsbNetwork>,
    /// The encrypted state stage-1 opens (or makes, on the first boot) before it spends a
    /// trial's try. Written only when the system config asks for encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// The ssh server stage-1 runs while it asks for the PIN of the encrypted state, where the
    /// system config asks for remote unlock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_unlock: Option<RemoteUnlock>,
}

/// Remote unlock: while stage-1 asks for the PIN, Debian's dropbear in the initramfs takes
/// ssh logins by these keys on `link`; each login runs only [`UNLOCK_PROGRAM`], which hands
/// the PIN it reads to the pad and answers with an [`UnlockReply`]. The server's host key is
/// made on the phone and kept in the LUKS2 header (a token of type [`UNLOCK_TOKEN`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteUnlock {
    /// Root's `authorized_keys` lines.
    pub authorized_keys: Vec<String>,
    pub link: UnlockLink,
    pub port: u16,
}

/// The network stage-1 serves the unlock on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnlockLink {
    /// The USB network gadget ([`UsbNetwork`]) at [`USB_PHONE_ADDRESS`], the host's address
    /// served by DHCP.
    Usb,
    /// The first Ethernet interface, given this address (/24) for the unlock and taken down
    /// again after it: the emulated phone, whose QEMU user network forwards to it.
    Ethernet { address: String },
}

/// The program every remote unlock login runs (stage-1's init under another name).
pub const UNLOCK_PROGRAM: &str = "/bin/mobix-unlock";

/// The LUKS2 token type that keeps the remote unlock's host key.
pub const UNLOCK_TOKEN: &str = "mobix-unlock-host-key";

/// QEMU's user network gives its guest this address.
pub const QEMU_GUEST_ADDRESS: &str = "10.0.2.15";

/// What a remote unlock login answers, as the last line of its standard output (a sentence
/// for a person comes before it on standard error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockReply {
    /// The PIN opened the state: the phone goes on booting.
    Open,
    /// A wrong PIN; the pad takes the next one after `wait_s` seconds.
    Wrong { failures: u32, wait_s: u32 },
    /// Nothing was tried, and why (not a PIN, the phone is not asking for one).
    Refused(String),
}

impl UnlockReply {
    pub fn line(&self) -> String {
        match self {
            UnlockReply::Open => "UNLOCK-OPEN".into(),
            UnlockReply::Wrong { failures, wait_s } => format!("UNLOCK-WRONG failures={failures} wait_s={wait_s}"),
            UnlockReply::Refused(why) => format!("UNLOCK-REFUSED {}", why.replace('\n', " ")),
        }
    }

    /// The reply in `out` (its last `UNLOCK-` line); None where there is none.
    pub fn find(out: &str) -> Option<UnlockReply> {
        let line = out.lines().rev().map(str::trim).find(|l| l.starts_with("UNLOCK-"))?;
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let field =
            |k: &str| rest.split(' ').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')).and_then(|v| v.parse().ok());
        match word {
            "UNLOCK-OPEN" => Some(UnlockReply::Open),
            "UNLOCK-WRONG" => Some(UnlockReply::Wrong { failures: field("failures")?, wait_s: field("wait_s")? }),
            "UNLOCK-REFUSED" => Some(UnlockReply::Refused(rest.to_string())),
            _ => None,
        }
    }
}

/// A state partition encrypted with LUKS2 ([`crate::pin`]): stage-1 asks for the PIN on the
/// screen, opens it as `/dev/mapper/mobix-state` with the initramfs's cryptsetup, and makes it
/// where the partition is blank.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Encryption {
    /// GPT name of the state partition.
    pub partition: String,
    /// Where the encrypted state starts in the partition: 0 for a partition of its own, the
    /// end of the system image where the two share one (stage-1 reaches it through a loop
    /// device from there).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// argon2id's memory in KiB and time in ms when a new PIN is set, where a profile lowers
    /// them (the emulated phone's tests); None: cryptsetup measures the phone and chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfCost>,
}

/// argon2id's cost for a key slot, as `--pbkdf-memory` (KiB) and `--iter-time` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KdfCost {
    pub memory_kib: u32,
    pub iter_time_ms: u32,
}

fn default_menu_idle_s() -> u32 {
    30
}

/// A phone key that opens the generation menu when held at power-on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MenuKey {
    #[default]
    VolumeDown,
    VolumeUp,
}

impl MenuKey {
    pub fn is_default(&self) -> bool {
        *self == MenuKey::default()
    }

    /// Its Linux key code (`KEY_VOLUMEDOWN`, `KEY_VOLUMEUP`).
    pub fn code(self) -> u16 {
        match self {
            MenuKey::VolumeDown => 114,
            MenuKey::VolumeUp => 115,
        }
    }
}

/// The phone's end of USB networking, as postmarketOS sets it up: a configfs gadget with an
/// NCM function (RNDIS where the kernel has no NCM), the phone at [`USB_PHONE_ADDRESS`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsbNetwork {
    pub vendor_id: u16,
    pub product_id: u16,
    /// The product string the host sees.
    pub product: String,
}

/// The phone's address on its USB network; the host gets [`USB_HOST_ADDRESS`] by DHCP.
pub const USB_PHONE_ADDRESS: &str = "172.16.42.1";
pub const USB_HOST_ADDRESS: &str = "172.16.42.2";

/// `etc/mobix/stage1.json`: the boot image's [`Stage1Config`] and the modules stage-1 loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage1 {
    #[serde(flatten)]
    pub config: Stage1Config,
    pub kernel_release: String,
    /// Absolute paths inside the initramfs, in load order.
    pub modules: Vec<String>,
    /// The screen's modules (and their dependencies not in `modules`), in load order: loaded
    /// by a thread of their own beside the rest of stage-1's work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub screen_modules: Vec<String>,
    /// An encrypted state's modules (and their dependencies not in `modules`), in load
    /// order, loaded before the state is opened; one that fails (a cipher for instructions
    /// the CPU lacks) is passed over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crypt_modules: Vec<String>,
}

/// `/mobix/generations/<n>.json`: one generation the system partition carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub generation: u32,
    /// The toplevel's path on the phone (`/mobix/store/<hash>-<name>`).
    pub toplevel: String,
    /// The kernel `Image` it was built with (from its boot.json); empty in entries older
    /// than boot images that name their kernel.
    #[serde(default)]
    pub kernel: String,
    /// The command line its boot image carries (from its boot.json).
    #[serde(default)]
    pub cmdline: String,
    /// When the generation was made, in seconds since 1970 (0: not known, in entries older
    /// than the screen that shows it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created: u64,
}

impl Generation {
    /// Whether this generation was built for the boot image that `cfg` describes.
    pub fn runs_under(&self, cfg: &Stage1Config) -> bool {
        self.kernel.is_empty()
            || (self.kernel == cfg.kernel && (self.cmdline.is_empty() || self.cmdline == cfg.cmdline))
    }

    /// Whether the entry names a store path (`/mobix/store/<hash>-<name>`, by the one rule
    /// of [`crate::stream::StoreName`]), so nothing that climbs out of the store.
    pub fn toplevel_is_in_store(&self) -> bool {
        crate::stream::StoreName::of_path(&self.toplevel).is_ok()
    }
}

/// `boot.json` of a generation's toplevel: what a bootloader entry for it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSpec {
    pub version: u32,
    pub label: String,
    pub kernel: String,
    pub kernel_release: String,
    pub initrd: String,
    pub init: String,
    pub cmdline: String,
    pub toplevel: String,
}

/// A long-running program stage-2 starts (under systemd: a unit the host wrote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// The program and its arguments (no shell).
    pub command: Vec<String>,
    /// When it is started again after it exits: `always`, `on-failure` or `no`. Older
    /// hosts wrote nothing, which meant always.
    #[serde(default, skip_serializing_if = "Restart::is_always")]
    pub restart: Restart,
}

/// When stage-2 starts a service again after it exits. On the wire its kebab-case name;
/// absent (as older hosts wrote it) means `always`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Always,
    OnFailure,
    No,
}

impl Restart {
    fn is_always(&self) -> bool {
        *self == Restart::Always
    }

    /// Its name on the wire, which is also systemd's `Restart=` value.
    pub fn name(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::No => "no",
        }
    }
}

/// A command that must succeed before a boot counts as good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub name: String,
    pub command: Vec<String>,
    /// Seconds before the check counts as failed.
    #[serde(default = "default_check_timeout")]
    pub timeout: u32,
}

fn default_check_timeout() -> u32 {
    60
}

fn default_trial_deadline() -> u32 {
    300
}

/// `etc/mobix/system.json`: what stage-2 runs, checks and waits for. Fields in the order
/// the host has always written them (alphabetical).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemSpec {
    /// Files of /etc that must be real files with their own mode and group (not links
    /// into the read-only store): `shadow`. Written only when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<EtcCopy>,
    /// Programs of the software tree that Debian installs setuid or setgid (a store keeps
    /// no such bits): stage-2 gives each a privileged copy for this boot. Written only when
    /// there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub privileged: Vec<Privileged>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// What runs as PID 1 after activation. Written only for systemd (older hosts wrote
    /// nothing, and meant mobix's own stage-2).
    #[serde(default, skip_serializing_if = "Init::is_minimal")]
    pub init: Init,
    #[serde(default)]
    pub services: Vec<Service>,
    /// The writable filesystem that survives reboots and generations (/var, /home, the
    /// machine id, ssh host keys). Written only when the device has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateSpec>,
    /// Seconds a trial boot has to reach its success point before it reboots.
    #[serde(default = "default_trial_deadline")]
    pub trial_deadline: u32,
}

impl Default for SystemSpec {
    fn default() -> Self {
        SystemSpec {
            copies: Vec::new(),
            privileged: Vec::new(),
            health_checks: Vec::new(),
            init: Init::Minimal,
            services: Vec::new(),
            state: None,
            trial_deadline: default_trial_deadline(),
        }
    }
}

/// PID 1 of the running system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// mobix's own small stage-2: services, health checks and a shell on the console.
    #[default]
    Minimal,
    /// Debian's systemd, after mobix's activation; health checks and blessing are units.
    Systemd,
}

impl Init {
    pub fn is_minimal(&self) -> bool {
        *self == Init::Minimal
    }
}

/// An /etc file stage-2 copies out of the generation instead of linking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcCopy {
    /// Relative to /etc.
    pub path: String,
    pub mode: u32,
    pub gid: u32,
}

/// A program Debian installs setuid or setgid (`sbin/unix_chkpwd`, mode 0o2755, group
/// shadow): its path in the software tree, its mode and its group's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privileged {
    pub path: String,
    pub mode: u32,
    pub gid: u32,
}

/// The persistent state filesystem: the partition (by GPT name) stage-2 mounts at
/// [`STATE_DIR`], making an ext4 filesystem filling it on first boot and growing it when
/// the partition is larger than the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSpec {
    pub partition: String,
    /// Where the filesystem starts in the partition: 0, or, where the partition also holds
    /// the system image (the store on userdata), the end of that image.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// LUKS2-encrypted: stage-1 opened it as `/dev/mapper/mobix-state` (stage-2 mounts that,
    /// and never makes a filesystem on a partition holding a LUKS header).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

/// The smallest state filesystem stage-2 makes: a partition with less room after the
/// system image keeps /var and /home in memory.
pub const MIN_STATE: u64 = 64 << 20;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where the persistent state is mounted on the running phone; `/var` and `/home` are its
/// `var/` and `home/`, bound in place.
pub const STATE_DIR: &str = "/mobix-state";

/// Where the boot-state record lives: a block device and its state area's byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLocation {
    pub device: std::path::PathBuf,
    pub offset: u64,
}

/// `/run/mobix/boot.json`: what stage-1 decided, handed to stage-2 and `mobix-bless`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booted {
    pub generation: u32,
    pub toplevel: String,
    pub mode: BootMode,
    pub state: Option<RecordLocation>,
    /// The A/B slot the bootloader booted (from `androidboot.slot_suffix`), if any.
    pub slot: Option<Slot>,
    /// When stage-1 and activation ran (zeros from a stage-1 that did not mark them).
    #[serde(default)]
    pub clock: BootClock,
    /// Why this is not the default generation, where stage-1 fell back from it: the
    /// notice the screen showed, for a program or a phone UI to show again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackNotice>,
    /// The public host key (an `authorized_keys`-style line) of stage-1's remote unlock
    /// server, where it ran: a deploy pins it for the unlock after its reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_host_key: Option<String>,
}

/// A fallback in words for a person (`counting::fallback_notice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackNotice {
    /// The generation that failed (the default).
    pub from: u32,
    /// `Generation 8 failed`.
    pub title: String,
    /// What happened and what boots instead.
    pub text: String,
}

/// Milliseconds since the kernel started (`CLOCK_BOOTTIME`) at the marks mobix's init sets
/// on the way to the system, for the `BOOT-TIMES` console event; 0 is unmarked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootClock {
    /// Stage-1 began: the kernel's own start-up lies before it.
    pub stage1_start_ms: u32,
    /// Stage-1 handed over to the generation.
    pub stage1_done_ms: u32,
    /// The generation was activated and its init (systemd, or the minimal init's services)
    /// started.
    pub activated_ms: u32,
}

/// How stage-1 chose the generation it booted. On the wire its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// A trial of a new generation: a try was spent, the health checks decide.
    Trial,
    /// A generation already found good.
    Good,
    /// The boot-state record was unreadable: the newest generation, nothing counted.
    Degraded,
    /// Picked by hand in the generation menu.
    Manual,
}

impl std::fmt::Display for BootMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootMode::Trial => "trial",
            BootMode::Good => "good",
            BootMode::Degraded => "degraded",
            BootMode::Manual => "manual",
        })
    }
}

/// What `mobix-init phone-status` prints for `mobix deploy`: what the running phone has and
/// how it booted, so the host sends only what is missing and reads the outcome back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneStatus {
    /// The kernel's boot id: it changes with every boot.
    pub boot_id: String,
    pub booted: Booted,
    /// The booted toplevel's `boot.json` (what its boot image was made from).
    pub boot_spec: BootSpec,
    /// The generation entries on the system partition.
    pub generations: Vec<Generation>,
    /// The base names (`<hash>-<name>`) in the phone's store.
    pub store: Vec<String>,
    /// The system filesystem's type and its free bytes.
    pub filesystem: Filesystem,
    pub free_bytes: u64,
    /// Both copies of the boot-state record as the phone read them (None: no record
    /// location).
    pub record: Option<RecordCopies>,
    /// Why generations failed their health checks, by generation (from [`FAILURES_DIR`]).
    #[serde(default)]
    pub failures: std::collections::BTreeMap<u32, String>,
    /// How the persistent state is kept: None where nothing is mounted at [`STATE_DIR`]
    /// (or from a phone older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateKind>,
}

/// The persistent state as the running phone keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// A plain filesystem on the partition.
    Plain,
    /// LUKS2, opened by stage-1 as `/dev/mapper/mobix-state`.
    Encrypted,
}

impl PhoneStatus {
    /// The boot-state record the phone's copies hold (the newer valid one), if any.
    pub fn boot_record(&self) -> Option<crate::record::Record> {
        self.record.as_ref()?.record()
    }
}

/// Both copies of the boot-state record, as read from the phone's disk. On the wire a hex
/// string, as every phone has sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCopies(pub Vec<u8>);

impl RecordCopies {
    /// The record by stage-1's two-copy rule; None when neither copy is valid or the bytes
    /// are not two blocks.
    pub fn record(&self) -> Option<crate::record::Record> {
        use crate::record::{read_pair, BLOCK};
        (self.0.len() == 2 * BLOCK).then(|| read_pair(&self.0[..BLOCK], &self.0[BLOCK..]).0)?
    }
}

impl Serialize for RecordCopies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::content::hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for RecordCopies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(d)?;
        let digit = |c: u8| (c as char).to_digit(16);
        let bytes: Option<Vec<u8>> = (hex.len() % 2 == 0)
            .then(|| hex.as_bytes().chunks(2).map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8)).collect())
            .flatten();
        bytes.map(RecordCopies).ok_or_else(|| serde::de::Error::custom("the record copies are not hex"))
    }
}

/// Where a failed health check leaves its reason (one file per generation, named by its
/// number), on the state filesystem where there is one, so that it outlives the reboot.
pub const FAILURES_DIR: &str = "/var/lib/mobix/failures";

#[cfg(test)]
mod tests;
