//! The serde types of a device profile, key by key as `devices/README.md` documents them,
//! and the checks serde cannot express (ranges, cross references, uniqueness).

use serde::{Deserialize, Serialize};

/// A byte size: an integer, or a string with a binary unit (`512KiB`, `64MiB`, `1GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size in bytes, or a string such as \"64MiB\" (units KiB, MiB, GiB)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Size, E> {
                parse_size(s).map(Size).ok_or_else(|| E::custom(size_error(s)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Why `s` is not a size, in words: an unknown unit, a number too large, or neither.
pub fn size_error(s: &str) -> String {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if !num.is_empty() && !unit.is_empty() && !["B", "KiB", "MiB", "GiB"].contains(&unit) {
        return format!("{s:?} is not a size: {unit} is not one of its units (B, KiB, MiB, GiB)");
    }
    if !num.is_empty() {
        // A known unit (or none) on digits alone: only too large a number fails.
        return format!("{s:?} is not a size: more bytes than a 64-bit number holds");
    }
    format!("{s:?} is not a size (expected e.g. 4096, \"512KiB\", \"64MiB\", \"1GiB\")")
}

pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Aarch64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Human-readable name ("OnePlus 6").
    pub name: String,
    pub arch: Arch,
    pub identity: Identity,
    pub storage: Storage,
    pub system: SystemPartition,
    pub kernel: KernelRef,
    pub bootimg: BootImg,
    /// The console device stage-1 and stage-2 talk on, without `/dev/` (`ttyAMA0`).
    pub console: String,
    /// Kernel command line arguments, in order.
    #[serde(default)]
    pub cmdline: Vec<String>,
    pub stage1: Stage1,
    /// Firmware files the phone needs, pinned by hash.
    #[serde(default)]
    pub firmware: Option<Firmware>,
    /// A top-level vbmeta to flash (phones with AVB need one to boot unsigned images).
    #[serde(default)]
    pub vbmeta: Option<Vbmeta>,
    /// Extra steps of the flash plan.
    #[serde(default)]
    pub flash: Option<Flash>,
    /// How `mobix run`/`mobix test` emulate this device; only for devices QEMU can play.
    #[serde(default)]
    pub qemu: Option<Qemu>,
    /// Where the running system keeps what survives reboots and generations (/var,
    /// /home, the machine id, ssh host keys): a partition of its own, formatted to fill
    /// it on first boot. Without it they live in memory.
    #[serde(default)]
    pub state: Option<State>,
    /// USB networking (the phone at 172.16.42.1, the host given 172.16.42.2 by DHCP), set
    /// up by stage-1 when the phone has a USB device controller.
    #[serde(default)]
    pub usb_network: Option<UsbNetwork>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbNetwork {
    /// The gadget's USB ids [default: 18d1:d001, as postmarketOS uses].
    #[serde(default = "default_usb_net_vendor")]
    pub vendor_id: u16,
    #[serde(default = "default_usb_net_product")]
    pub product_id: u16,
}

fn default_usb_net_vendor() -> u16 {
    0x18d1
}
fn default_usb_net_product() -> u16 {
    0xd001
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// A partition from `storage.partitions`, not slotted, not the system partition.
    pub partition: PartitionName,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// A `debs` entry of `mobix.lock` whose `lib/firmware` holds the files. Without it,
    /// the files come from the directory the system config names (`firmware_dir`).
    #[serde(default)]
    pub package: Option<String>,
    pub files: Vec<FirmwareFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareFile {
    /// Path under `/lib/firmware` (`qcom/a630_sqe.fw`).
    pub path: String,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    /// Whether stage-1 needs it (it goes into the initramfs too).
    #[serde(default)]
    pub stage1: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vbmeta {
    /// Partition name without slot suffix (`vbmeta`).
    pub partition: PartitionName,
    /// 1 disables verity, 2 verification, 3 both (fastboot's --disable-verity and
    /// --disable-verification).
    pub flags: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flash {
    /// Partitions to erase before flashing (some phones need `dtbo` erased to boot a
    /// mainline kernel). Full names, slot suffixes included.
    #[serde(default)]
    pub erase: Vec<PartitionName>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// What `fastboot getvar product` answers on this phone.
    pub fastboot_products: Vec<String>,
    #[serde(default)]
    pub usb: Option<UsbId>,
    /// The keys that start this phone in fastboot mode from power-off
    /// (`Volume Up + Power`), where known: they differ between phones.
    #[serde(default)]
    pub fastboot_keys: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbId {
    pub vendor_id: u16,
    pub product_id: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Logical sector size of the phone's storage: 512 (eMMC) or 4096 (UFS).
    pub sector_size: u32,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// GPT name without slot suffix (`boot`, `system`).
    pub name: PartitionName,
    /// Size in bytes, when known: the emulated phone needs it, flashing checks against it.
    #[serde(default)]
    pub size: Option<Size>,
    /// A/B: the partition exists twice, as `<name>_a` and `<name>_b`.
    #[serde(default)]
    pub slotted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
    /// Read-only, compact (what Android uses for its system partitions): `mkfs.erofs`.
    Erofs,
}

impl Filesystem {
    /// The kernel's name for it: what `mount` takes, and its module's name.
    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Erofs => "erofs",
        }
    }

    /// The kernel option that builds it.
    pub fn kernel_option(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "EXT4_FS",
            Filesystem::Erofs => "EROFS_FS",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemPartition {
    /// Which partition (from `storage.partitions`) holds the mobix store.
    pub partition: PartitionName,
    pub filesystem: Filesystem,
    /// Size of the filesystem image [default: the partition's size].
    #[serde(default)]
    pub size: Option<Size>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelRef {
    /// A kernel spec under `kernels/<name>/`, built from source by the store.
    #[serde(default)]
    pub source: Option<String>,
    /// A `debs` entry of `mobix.lock`: a prebuilt Debian arm64 kernel image package. With
    /// `source` it is the substitute (`mobix build --kernel-from substitute`).
    #[serde(default)]
    pub package: Option<String>,
    /// A kernel the user supplies (the phone vendor's, one built elsewhere): its `Image`
    /// and device trees, hashed into the recipe like any input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prebuilt: Option<PrebuiltKernel>,
    /// The modules installed on the system partition, by name, each with its dependencies
    /// (and stage-1's modules always). Absent: every module the kernel has. Debian's generic
    /// kernel carries about 300 MB of drivers for every arm64 board; a phone needs a few.
    #[serde(default)]
    pub modules: Option<Vec<String>>,
}

/// `kernel.prebuilt`: files on the build machine. Relative paths are relative to the device's
/// directory (`devices/<codename>/`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrebuiltKernel {
    /// The arm64 kernel `Image` (or `Image.gz`, unpacked by the build).
    pub image: String,
    /// A directory of device trees, as the kernel's `dtbs_install` lays them out
    /// (`qcom/sdm845-oneplus-enchilada.dtb`).
    #[serde(default)]
    pub dtbs: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootImg {
    pub header_version: u32,
    pub page_size: u32,
    pub base: u64,
    pub kernel_offset: u64,
    pub ramdisk_offset: u64,
    #[serde(default = "default_second_offset")]
    pub second_offset: u64,
    pub tags_offset: u64,
    #[serde(default = "default_dtb_offset")]
    pub dtb_offset: u64,
    /// `name[16]` of the header; at most 15 bytes.
    #[serde(default)]
    pub board: String,
    /// `A.B.C`, packed as mkbootimg does.
    #[serde(default)]
    pub os_version: Option<String>,
    /// `YYYY-MM`.
    #[serde(default)]
    pub os_patch_level: Option<String>,
    #[serde(default)]
    pub dtb: Option<Dtb>,
    /// How the kernel Image is stored in boot.img: `none` (raw Image), `gzip` (Image.gz,
    /// needed for appended DTBs) or `lz4`.
    #[serde(default = "default_kernel_compression")]
    pub kernel_compression: Compression,
}

fn default_kernel_compression() -> Compression {
    Compression::None
}

fn default_second_offset() -> u64 {
    0x00f0_0000
}
fn default_dtb_offset() -> u64 {
    0x01f0_0000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dtb {
    /// Where the device tree comes from. `qemu`: dumped from QEMU's machine model with the
    /// device's `qemu` settings, so that it matches what `mobix test` boots. `kernel`: the
    /// `files` from the kernel's dtbs.
    pub source: DtbSource,
    /// `header`: the dtb section (boot.img's with header version 2, vendor_boot.img's with
    /// 3 and 4). `append`: after the gzip-compressed kernel (`Image.gz-dtb`). `second`: the
    /// second-stage slot (versions 0-2). `append+header`, `append+second`: both places.
    #[serde(default = "default_dtb_mode")]
    pub mode: DtbMode,
    /// With `source: kernel`: paths under the kernel's dtbs (`qcom/sdm845-oneplus-enchilada.dtb`).
    #[serde(default)]
    pub files: Vec<String>,
}

fn default_dtb_mode() -> DtbMode {
    DtbMode::Header
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtbSource {
    Qemu,
    Kernel,
}

/// Where boot.img carries the device tree(s). Combinations are what postmarketOS's
/// boot-deploy makes for phones whose deviceinfo asks for two places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DtbMode {
    /// The dtb section: boot.img's (header version 2) or vendor_boot.img's (3 and 4).
    #[serde(rename = "header")]
    Header,
    /// After the gzip-compressed kernel (`Image.gz-dtb`).
    #[serde(rename = "append")]
    Append,
    /// The second-stage slot (header versions 0-2), loaded at base + `second_offset`.
    #[serde(rename = "second")]
    Second,
    #[serde(rename = "append+header")]
    AppendHeader,
    #[serde(rename = "append+second")]
    AppendSecond,
}

impl DtbMode {
    pub fn appended(self) -> bool {
        matches!(self, DtbMode::Append | DtbMode::AppendHeader | DtbMode::AppendSecond)
    }
    pub fn in_header(self) -> bool {
        matches!(self, DtbMode::Header | DtbMode::AppendHeader)
    }
    pub fn in_second(self) -> bool {
        matches!(self, DtbMode::Second | DtbMode::AppendSecond)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage1 {
    /// Kernel modules stage-1 loads, by name; their dependencies come from modules.dep.
    pub modules: Vec<String>,
    /// gzip, lz4 (legacy frame), xz (CRC32), zstd or none.
    #[serde(default = "default_compression")]
    pub compression: Compression,
}

pub use crate::format::compress::Compression;

fn default_compression() -> Compression {
    Compression::Gzip
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    #[serde(default = "default_machine")]
    pub machine: String,
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_smp")]
    pub smp: u32,
    /// How the phone's disk is attached.
    #[serde(default)]
    pub disk: QemuDisk,
    /// A U-Boot spec (`bootloaders/<name>/`) the store builds; `mobix test --bootloader
    /// u-boot` boots the phone through it instead of mobix's model of the A/B rules.
    #[serde(default)]
    pub u_boot: Option<String>,
}

fn default_machine() -> String {
    "virt".into()
}
fn default_cpu() -> String {
    "cortex-a57".into()
}
fn default_memory() -> u32 {
    1024
}
fn default_smp() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QemuDisk {
    #[default]
    VirtioBlkPci,
    VirtioBlkDevice,
}

impl QemuDisk {
    pub fn qemu_device(self) -> &'static str {
        match self {
            QemuDisk::VirtioBlkPci => "virtio-blk-pci",
            QemuDisk::VirtioBlkDevice => "virtio-blk-device",
        }
    }
}

/// A GPT partition name as a profile writes it, without slot suffix: lowercase letters,
/// digits and `_`, at most 31 (GPT holds 36 characters; `_a` must still fit). The only way
/// to make one is [`PartitionName::try_from`], which profiles go through when they load.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartitionName(String);

impl TryFrom<String> for PartitionName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 31
            && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        if ok {
            Ok(PartitionName(s))
        } else {
            Err(format!("{s:?} is not a partition name (lowercase letters, digits, _; at most 31)"))
        }
    }
}

impl TryFrom<&str> for PartitionName {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        PartitionName::try_from(s.to_string())
    }
}

impl From<PartitionName> for String {
    fn from(p: PartitionName) -> String {
        p.0
    }
}

impl PartitionName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for PartitionName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PartitionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for PartitionName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PartitionName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Device {
    /// Every GPT partition name, slot suffixes expanded, in profile order, with its size
    /// (0 where the profile does not know it).
    pub fn gpt_partitions(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for p in &self.storage.partitions {
            let size = p.size.map_or(0, |s| s.0);
            if p.slotted {
                out.push((format!("{}_a", p.name), size));
                out.push((format!("{}_b", p.name), size));
            } else {
                out.push((p.name.to_string(), size));
            }
        }
        out
    }

    /// Size of the system filesystem image.
    pub fn system_image_size(&self) -> u64 {
        self.system.size.or_else(|| self.partition(&self.system.partition).and_then(|p| p.size)).map_or(0, |s| s.0)
    }

    /// Byte offset, inside the system partition, of the boot-state area that ends the
    /// system image (two copies of the record, after the filesystem).
    pub fn state_offset(&self) -> u64 {
        self.system_image_size().saturating_sub(crate::format::bootstate::AREA)
    }

    /// Where the persistent state filesystem starts in its partition: after the system
    /// image (and its boot-state area) when the two share a partition, else at 0.
    pub fn persistent_state_start(&self) -> u64 {
        match &self.state {
            Some(st) if st.partition == self.system.partition => self.system_image_size(),
            _ => 0,
        }
    }

    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.storage.partitions.iter().find(|p| p.name == name)
    }

    pub fn is_ab(&self) -> bool {
        self.partition("boot").is_some_and(|p| p.slotted)
    }
}

pub fn parse_os_version(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split('.').map(|p| p.parse::<u32>().ok().filter(|&n| n < 128));
    let a = it.next()??;
    let b = it.next().unwrap_or(Some(0))?;
    let c = it.next().unwrap_or(Some(0))?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

pub fn parse_patch_level(s: &str) -> Option<(u32, u32)> {
    let (y, m) = s.split_once('-')?;
    let (y, m) = (y.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    ((2000..2128).contains(&y) && (1..=12).contains(&m)).then_some((y, m))
}
