//! The serde types of a device profile; their doc comments are the keys' reference
//! (`mobix config reference`, docs/config-reference.md), with the checks serde cannot
//! express (ranges, cross references, uniqueness).

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

impl schemars::JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["integer", "string"], "format": "size" })
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit Arm.
    Aarch64,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Human-readable name ("OnePlus 6").
    pub name: String,
    /// CPU architecture; only `aarch64` is supported.
    pub arch: Arch,
    /// How fastboot and USB recognise the phone.
    pub identity: Identity,
    /// Sector size and partitions.
    pub storage: Storage,
    /// Which partition holds the mobix store, and its filesystem.
    pub system: SystemPartition,
    /// Which kernel to boot: `source`, `package` (or both: the package substitutes), or
    /// `prebuilt` alone.
    pub kernel: KernelRef,
    /// The boot image's header (AOSP `bootimg.h`). Addresses are `base + offset` modulo
    /// 2^32, as mkbootimg-osm0sis adds them. Header versions 3 and 4 put the addresses,
    /// ramdisk, command line and device tree in vendor_boot.img (a `vendor_boot` partition
    /// is needed, slotted as `boot` is).
    pub bootimg: BootImg,
    /// The console device stage-1 and stage-2 talk on, without `/dev/` (`ttyAMA0`).
    pub console: String,
    /// Kernel command line arguments, one per item (no spaces inside one), in order;
    /// include the `console=`.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// What stage-1 loads.
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
    /// Where an `init: systemd` system keeps what survives reboots, new generations and
    /// updates (/var, /home, the machine id, the ssh host key): `partition`, not slotted.
    /// On the first boot stage-2 makes an ext4 filesystem filling it, and on later boots
    /// grows the filesystem when the partition is larger; flashing never writes it. Where
    /// it is the system partition (phones whose store is on `userdata`), the state is what
    /// follows the `system.size` bytes of the system image (through a loop device; at least
    /// 64 MiB, else /var stays in memory): a flash of a system image of the same size keeps
    /// the owner's data, another `system.size` loses it (`mobix flash` says so first;
    /// `mobix deploy` refuses it). Without `state`, /var and /home live in memory.
    #[serde(default)]
    pub state: Option<State>,
    /// USB networking as postmarketOS has it: stage-1 makes a configfs gadget (NCM, RNDIS
    /// where the kernel has no NCM) on the phone's USB device controller and gives `usb0`
    /// the address 172.16.42.1 before anything that can fail; an `init: systemd` system's
    /// networkd then gives the host 172.16.42.2 by DHCP, so `ssh USER@172.16.42.1` works
    /// over the cable. Stage-1 needs the controller's driver and `usb_f_ncm` (with
    /// `libcomposite`) in `stage1.modules` unless built in, and waits up to 5 s for a
    /// controller. With `mobix.debug-shell` on the command line (and in the rescue shell)
    /// stage-1 serves DHCP and telnet on `usb0` itself, as an `init: minimal` system does
    /// once running.
    #[serde(default)]
    pub usb_network: Option<UsbNetwork>,
    /// How a phone UI draws: `gpu` (the kernel's GPU driver, through Mesa) or `software`
    /// (pixman on the CPU: for phones whose GPU has no driver, and the emulated phone)
    /// [default: gpu].
    #[serde(default)]
    pub renderer: Renderer,
    /// Whether the phone has a modem the system can use: a phone UI then brings calls,
    /// messages and ModemManager (`phosh-phone`) [default: false].
    #[serde(default)]
    pub modem: bool,
}

/// How a phone UI's compositor draws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Renderer {
    /// The GPU, through the kernel's driver and Mesa.
    #[default]
    Gpu,
    /// The CPU (wlroots' pixman renderer).
    Software,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsbNetwork {
    /// The gadget's USB vendor id, postmarketOS's [default: 0x18d1].
    #[serde(default = "default_usb_net_vendor")]
    pub vendor_id: u16,
    /// The gadget's USB product id, postmarketOS's [default: 0xd001].
    #[serde(default = "default_usb_net_product")]
    pub product_id: u16,
}

fn default_usb_net_vendor() -> u16 {
    0x18d1
}
fn default_usb_net_product() -> u16 {
    0xd001
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// A partition from `storage.partitions`, not slotted, not the system partition.
    pub partition: PartitionName,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// A `debs` entry of `mobix.lock` whose `lib/firmware` holds the files. Without it,
    /// the files come from the directory the system config names (`firmware_dir`).
    #[serde(default)]
    pub package: Option<String>,
    /// The files, each pinned by its sha256 (a file that differs stops the build); all are
    /// installed in the system, `/lib/firmware` pointing there.
    pub files: Vec<FirmwareFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vbmeta {
    /// The partition it is flashed to, without slot suffix (`vbmeta`).
    pub partition: PartitionName,
    /// 1 disables verity, 2 verification, 3 both (fastboot's `--disable-verity` and
    /// `--disable-verification`); the build writes `vbmeta.img` (the minimal image, as
    /// avbtool makes it) and the flash plan flashes it.
    pub flags: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flash {
    /// Partitions to erase before flashing (some phones need `dtbo` erased to boot a
    /// mainline kernel). Full names, slot suffixes included.
    #[serde(default)]
    pub erase: Vec<PartitionName>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// What `fastboot getvar product` answers on this phone (at least one); `mobix flash`
    /// refuses other phones.
    pub fastboot_products: Vec<String>,
    /// USB ids in fastboot mode.
    #[serde(default)]
    pub usb: Option<UsbId>,
    /// The keys held at power-on that start the phone in fastboot mode (`Volume Up +
    /// Power`), where known: `mobix build` says them in its next steps.
    #[serde(default)]
    pub fastboot_keys: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsbId {
    /// The 16-bit USB vendor id.
    pub vendor_id: u16,
    /// The 16-bit USB product id.
    pub product_id: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Logical sector size of the phone's storage: 512 (eMMC) or 4096 (UFS).
    pub sector_size: u32,
    /// The partitions mobix knows about, in disk order; a `boot` partition is required and
    /// no GPT name may appear twice (counting the `_a`/`_b` names of slotted ones).
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// GPT name without slot suffix (`boot`, `system`): lowercase letters, digits and `_`,
    /// at most 31.
    pub name: PartitionName,
    /// A positive multiple of `sector_size`, where known: the emulated phone needs it
    /// (partitions without one get one there), and flashing checks images against it.
    #[serde(default)]
    pub size: Option<Size>,
    /// A/B: the partition exists as `<name>_a` and `<name>_b`; a slotted `boot` makes the
    /// phone A/B.
    #[serde(default)]
    pub slotted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// Writable by deploys: `mke2fs -d`.
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

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPartition {
    /// A non-slotted partition from `storage.partitions` that holds `/mobix` (the store and
    /// the generation entries); on phones often `userdata`.
    pub partition: PartitionName,
    /// Its filesystem: `ext4` (made by `mke2fs -d`, checked by `e2fsck`) or `erofs`
    /// (read-only and compact, `mkfs.erofs`, checked by `fsck.erofs`; a deploy cannot add
    /// to it).
    pub filesystem: Filesystem,
    /// Size of the filesystem image, a multiple of 4096, at most the partition's (required
    /// where the partition has no size) [default: the partition's size].
    #[serde(default)]
    pub size: Option<Size>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelRef {
    /// A kernel spec under `kernels/<name>/`, built from source by the store.
    #[serde(default)]
    pub source: Option<String>,
    /// A `debs` entry of `mobix.lock`: a prebuilt arm64 Debian kernel package
    /// (`linux-image-…-arm64-unsigned`), whose `Image`, device trees and modules mobix uses
    /// (with a fresh `modules.dep`). With `source` it is the substitute (`mobix build
    /// --kernel-from substitute`); the build says which kernel it used.
    #[serde(default)]
    pub package: Option<String>,
    /// A kernel you supply (the vendor's, one built elsewhere): `image` and `dtbs`,
    /// relative to the device's directory, hashed into the build like any input. It brings
    /// no modules, so `stage1.modules` must be empty; its release is what the Image's
    /// `Linux version` banner says. `mobix device import` writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prebuilt: Option<PrebuiltKernel>,
    /// The modules the system partition carries, by name, each with what it depends on
    /// (modules.dep and soft pre-dependencies); `stage1.modules` are always added. Absent:
    /// every module of the kernel (Debian's generic arm64 kernel has about 300 MB of them).
    /// A name neither a module nor built in is refused; `null` in a variant undoes a
    /// family's list.
    #[serde(default)]
    pub modules: Option<Vec<String>>,
}

/// `kernel.prebuilt`: files on the build machine. Relative paths are relative to the device's
/// directory (`devices/<codename>/`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrebuiltKernel {
    /// The arm64 kernel `Image` (or `Image.gz`, unpacked by the build).
    pub image: String,
    /// A directory of device trees, as the kernel's `dtbs_install` lays them out
    /// (`qcom/sdm845-oneplus-enchilada.dtb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtbs: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootImg {
    /// The header version, 0 to 4: version 2 needs `dtb` in the header; 3 and 4 write
    /// vendor_boot.img too.
    pub header_version: u32,
    /// A power of two from 2048 to 16384 (vendor_boot's with header versions 3 and 4).
    pub page_size: u32,
    /// Physical base address.
    pub base: u64,
    /// Kernel load address = base + this.
    pub kernel_offset: u64,
    /// Ramdisk load address = base + this.
    pub ramdisk_offset: u64,
    /// Second-stage address offset, used where the device tree goes in the second stage
    /// (`dtb.mode: second`) [default: 0x00f00000].
    #[serde(default = "default_second_offset")]
    pub second_offset: u64,
    /// Kernel tags (ATAGS or device tree) address offset.
    pub tags_offset: u64,
    /// Device-tree load address offset (header version 2; vendor_boot's for 3 and 4)
    /// [default: 0x01f00000].
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
    /// The device tree: where it comes from and where boot.img carries it (required with
    /// header version 2).
    #[serde(default)]
    pub dtb: Option<Dtb>,
    /// How the kernel Image is stored in boot.img: `none` (raw Image), `gzip` (Image.gz,
    /// needed for appended DTBs) or `lz4`.
    #[serde(default = "default_kernel_compression")]
    #[schemars(with = "super::reference::KernelCompressionChoice")]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DtbSource {
    /// Dumped from QEMU's machine model with the device's `qemu` settings.
    Qemu,
    /// The `files` from the kernel's device trees.
    Kernel,
}

/// Where boot.img carries the device tree(s). Combinations are what postmarketOS's
/// boot-deploy makes for phones whose deviceinfo asks for two places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Appended and in the dtb section.
    #[serde(rename = "append+header")]
    AppendHeader,
    /// Appended and in the second-stage slot.
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

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage1 {
    /// Kernel modules stage-1 loads before it looks for the system partition (`virtio_blk`,
    /// `ext4`), with their dependencies (modules.dep) and soft pre-dependencies in load
    /// order; built-in names are accepted and skipped.
    pub modules: Vec<String>,
    /// The screen's modules, where the kernel has its display driver as a module (the
    /// emulated phone's `virtio_gpu`; a phone whose bootloader's framebuffer `simplefb`
    /// takes needs none): loaded, with their dependencies, by a thread of stage-1's own
    /// beside its other work, so that the screen costs the boot little.
    #[serde(default)]
    pub screen_modules: Vec<String>,
    /// The key that, held at power-on, opens the generation menu [default: volume-down].
    #[serde(default)]
    pub menu_key: MenuKey,
    /// The initramfs's compression, in the form the kernel accepts; the kernel must have
    /// the matching `CONFIG_RD_*`.
    #[serde(default = "default_compression")]
    #[schemars(with = "super::reference::CompressionChoice")]
    pub compression: Compression,
}

pub use crate::format::compress::Compression;

/// A key of the phone that opens the generation menu when held at power-on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MenuKey {
    /// Volume down (on Qualcomm phones usually the PMIC's `resin`).
    #[default]
    VolumeDown,
    VolumeUp,
}

fn default_compression() -> Compression {
    Compression::Gzip
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    /// QEMU's machine.
    #[serde(default = "default_machine")]
    pub machine: String,
    /// QEMU's CPU model (`max` is about five times slower under TCG).
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// RAM in MiB, at least 128.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Emulated CPUs, each a host thread: `2` boots a systemd system about twice as fast
    /// on a 2-core host (`device: { qemu: { smp: 2 } }` in a system config).
    #[serde(default = "default_smp")]
    pub smp: u32,
    /// How the phone's disk is attached (PCI or MMIO transport); stage-1 must load the
    /// matching modules.
    #[serde(default)]
    pub disk: QemuDisk,
    /// A U-Boot spec (`bootloaders/<name>/`) the store builds; `mobix test --bootloader
    /// u-boot` boots the phone through it instead of mobix's model of the A/B rules.
    #[serde(default)]
    pub u_boot: Option<String>,
    /// The phone's screen: a virtio GPU of this size in pixels, with a touch device beside
    /// it; `null` for a phone without one (stage-1 then uses the console alone)
    /// [default: { width: 720, height: 1440 }].
    #[serde(default = "default_screen")]
    pub screen: Option<QemuScreen>,
}

/// The emulated phone's display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QemuScreen {
    /// Pixels across, as the phone is held upright.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

fn default_screen() -> Option<QemuScreen> {
    Some(QemuScreen { width: 720, height: 1440 })
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QemuDisk {
    /// virtio over PCI.
    #[default]
    VirtioBlkPci,
    /// virtio over MMIO.
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

impl schemars::JsonSchema for PartitionName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PartitionName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^[a-z0-9_]{1,31}$" })
    }
}

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
