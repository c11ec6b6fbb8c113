//! The phone on the desk: the built images booted in QEMU aarch64.
//!
//! Pipeline stage: vm. Input: the out directory of a build (manifest, boot.img,
//! system.img) and the device profile; output: a GPT disk laid out as the profile says,
//! and a QEMU run on it. The kernel, ramdisk, dtb and command line come out of boot.img
//! through mobix's own boot image reader, as a bootloader would take them; the system
//! partition is written from the sparse image through mobix's own sparse reader.

use crate::format::bootimg::BootImage;
use crate::format::gpt;
use crate::format::misc;
use crate::format::sparse;
use crate::plan::ImageName;
use crate::profile::Profile;
use crate::publish::{self, Manifest};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use mobix_bootctl::contract::Slot;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod fastboot;
pub mod scenario;

/// The line stage-2 prints once the system is up.
pub const BOOT_COMPLETE: &str = "mobix: boot-complete";
/// Kernel argument asking stage-2 to power off after boot-complete.
pub const POWEROFF_ARG: &str = "mobix.poweroff";

const MIB: u64 = 1 << 20;

/// Where one partition lies on the emulated phone's disk, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// Where each partition landed on the disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub sector_size: u64,
    /// (GPT name, first byte, size in bytes), in profile order.
    pub partitions: Vec<Extent>,
    pub disk_size: u64,
}

impl Layout {
    pub fn find(&self, name: &str) -> Option<(u64, u64)> {
        self.partitions.iter().find(|p| p.name == name).map(|p| (p.offset, p.size))
    }
}

/// Size of a partition the profile leaves unsized (real phones' sizes vary by model and
/// are read from the device when flashing) on the emulated phone.
const UNSIZED_PARTITION: u64 = 64 * MIB;

/// The emulated phone's partitions: the profile's, with sizes for those it leaves open
/// (the system partition as large as the system image, others [`UNSIZED_PARTITION`]).
pub fn emulated_partitions(profile: &Profile) -> Vec<(String, u64)> {
    let d = &profile.device;
    d.gpt_partitions()
        .into_iter()
        .map(|(name, size)| {
            let size = match size {
                0 if d.system.partition == name.as_str() => d.system_image_size().max(UNSIZED_PARTITION),
                0 => UNSIZED_PARTITION,
                s => s,
            };
            (name, size)
        })
        .collect()
}

/// Creates an empty disk image with the profile's GPT (partitions 1 MiB aligned).
pub fn create_disk(profile: &Profile, path: &Path) -> Result<Layout> {
    create_disk_with(profile, path, false)
}

/// [`create_disk`], its size rounded up to a power of two when `pow2` (QEMU's SD cards
/// want that, and U-Boot flashes only MMC storage).
pub fn create_disk_with(profile: &Profile, path: &Path, pow2: bool) -> Result<Layout> {
    let d = &profile.device;
    let ss = d.storage.sector_size as u64;
    let requests: Vec<gpt::Request> = emulated_partitions(profile)
        .into_iter()
        .map(|(name, size)| gpt::Request { type_guid: gpt::android_type_for(&name), name, size, attributes: 0 })
        .collect();
    let mut disk_size = gpt::disk_size_for(&requests, MIB);
    if pow2 {
        disk_size = disk_size.next_power_of_two();
    }
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_len(disk_size)?;
    let guid = gpt::Guid::parse("6D6F6269-7800-4000-8000-000000000001").expect("valid constant");
    let table = gpt::create(&mut f, disk_size, ss, guid, MIB, &requests)
        .with_context(|| format!("partitioning {}", path.display()))?;
    f.sync_all()?;
    let partitions = (table.partitions.iter())
        .map(|p| Extent { name: p.name.clone(), offset: p.offset(ss), size: p.size(ss) })
        .collect();
    Ok(Layout { sector_size: ss, partitions, disk_size })
}

/// Writes `data` into partition `name`, refusing what does not fit.
pub fn write_partition(disk: &Path, layout: &Layout, name: &str, data: &[u8]) -> Result<()> {
    let (start, size) = layout.find(name).with_context(|| format!("the disk has no partition {name}"))?;
    if data.len() as u64 > size {
        return Err(
            Fail::new(format!("{name}: image of {} bytes does not fit the {size}-byte partition", data.len())).into()
        );
    }
    let mut f = fs::OpenOptions::new().write(true).open(disk)?;
    f.seek(SeekFrom::Start(start))?;
    f.write_all(data)?;
    Ok(())
}

/// Expands a sparse image into partition `name` of the disk. Zero fills become holes
/// (the disk file stays sparse), don't-care regions are left as they are.
pub fn write_sparse_partition(disk: &Path, layout: &Layout, name: &str, sparse_img: &Path) -> Result<()> {
    let (start, size) = layout.find(name).with_context(|| format!("the disk has no partition {name}"))?;
    let input = std::io::BufReader::new(
        fs::File::open(sparse_img).with_context(|| format!("opening {}", sparse_img.display()))?,
    );
    let f = fs::OpenOptions::new().write(true).open(disk)?;
    write_sparse_at(&f, start, size, name, input)
        .map_err(|e| util::user_error(e, format!("writing {} into partition {name}", sparse_img.display())))?;
    Ok(())
}

/// Expands the sparse image read from `input` into the `size` bytes at `start` of `disk`
/// (partition `name`, for the error), as a bootloader's `fastboot flash` does.
pub fn write_sparse_at<R: Read>(
    mut disk: &fs::File,
    start: u64,
    size: u64,
    name: &str,
    input: R,
) -> std::result::Result<(), sparse::Error> {
    sparse::decode(input, |op| {
        let (off, len) = match &op {
            sparse::Op::Data { offset, data } => (*offset, data.len() as u64),
            sparse::Op::Fill { offset, len, .. } | sparse::Op::DontCare { offset, len } => (*offset, *len),
        };
        if off + len > size {
            return Err(std::io::Error::other(format!("image is larger than the {size}-byte partition {name}")));
        }
        match op {
            sparse::Op::Data { offset, data } => {
                disk.seek(SeekFrom::Start(start + offset))?;
                disk.write_all(data)
            }
            sparse::Op::Fill { offset, len, value: 0 } if punch_hole(disk, start + offset, len) => Ok(()),
            sparse::Op::Fill { offset, len, value } => {
                disk.seek(SeekFrom::Start(start + offset))?;
                let pat: Vec<u8> =
                    value.to_le_bytes().iter().copied().cycle().take(len.min(1 << 20) as usize).collect();
                let mut left = len;
                while left > 0 {
                    let n = left.min(pat.len() as u64) as usize;
                    disk.write_all(&pat[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }
            sparse::Op::DontCare { .. } => Ok(()),
        }
    })
    .map(|_| ())
}

/// Zeroes `len` bytes at `offset` of a disk file by deallocating them (the file stays
/// sparse and zeroing takes no time). False if the filesystem cannot.
pub fn punch_hole(f: &fs::File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: fallocate on an open file descriptor with plain integer arguments.
    unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, n) == 0 }
}

/// The emulated phone, prepared in `<out>/vm/`: its GPT disk as a freshly flashed phone
/// has it. Each boot goes through [`bootloader`], as on a phone.
pub struct Prepared {
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub layout: Layout,
    pub manifest: Manifest,
    /// What boots it: mobix's model of the bootloader, or U-Boot.
    pub firmware: Firmware,
}

/// The emulated phone's bootloader.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Firmware {
    /// mobix's model of U-Boot's A/B rules ([`bootloader`]), run on the host before each
    /// boot; QEMU then starts the kernel directly. The fast path.
    #[default]
    Model,
    /// U-Boot itself (`-bios`), its environment in QEMU's second flash bank: it runs
    /// `ab_select` on misc, loads that slot's boot.img and `bootm`s it. Every boot through it
    /// also runs the model on the same misc and fails if the two disagree.
    UBoot { bin: PathBuf },
}

/// Builds the phone's disk from the out directory.
pub fn prepare(profile: &Profile, out: &Path) -> Result<Prepared> {
    let manifest = publish::load_manifest_for(profile, out)?;
    let boot_path = publish::image_file(out, &manifest, ImageName::Boot.file_name())?;
    let system_path = publish::image_file(out, &manifest, ImageName::System.file_name())?;
    let boot_bytes = fs::read(&boot_path).with_context(|| format!("reading {}", boot_path.display()))?;
    prepare_from(profile, &out.join("vm"), &boot_bytes, &system_path, manifest)
        .with_context(|| format!("preparing the emulated phone from {}", out.display()))
}

/// Prepares a phone in `dir` from a boot image and a sparse system image: a fresh GPT disk
/// with boot.img in `boot` (slot a on A/B phones) and the system partition written, as
/// `fastboot flash` leaves a new phone. On A/B phones misc says what flashing slot a and
/// `set_active` leave: slot a active with its tries, slot b (its boot partition empty)
/// unbootable, so a failing generation falls back within slot a as on a phone.
pub fn prepare_from(
    profile: &Profile,
    dir: &Path,
    boot_bytes: &[u8],
    system_img: &Path,
    manifest: Manifest,
) -> Result<Prepared> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    BootImage::parse(boot_bytes).map_err(|e| util::user_error(e, "reading the boot image"))?;
    let disk = dir.join("disk.img");
    let layout = create_disk(profile, &disk)?;
    let slot_boot = if profile.device.is_ab() { "boot_a" } else { "boot" };
    write_partition(&disk, &layout, slot_boot, boot_bytes)?;
    write_sparse_partition(&disk, &layout, &profile.device.system.partition, system_img)?;
    if profile.device.is_ab() {
        patch_partition(&disk, &layout, "misc", misc::CONTROL_OFFSET as u64, &flashed_misc(Slot::A)?)?;
    }
    Ok(Prepared { dir: dir.to_path_buf(), disk, layout, manifest, firmware: Firmware::Model })
}

/// The A/B metadata of a phone whose `slot` was just flashed and made active and whose
/// other slot holds nothing: `slot` first with fresh tries, the other unbootable.
pub fn flashed_misc(slot: Slot) -> Result<[u8; misc::CONTROL_SIZE]> {
    let mut c = misc::BootloaderControl::fresh(2, slot.index(), 7).map_err(|e| anyhow::anyhow!("{e}"))?;
    c.set_unbootable(slot.other().index()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(c.encode())
}

/// The emulated phone's own disk, `<out>/phone/disk.img`: what `mobix run --fastboot`
/// writes into and `--flashed` boots. Created the first time, partitioned as the profile
/// says and otherwise empty, like a phone whose partitions were never flashed.
pub fn phone_disk(profile: &Profile, out: &Path) -> Result<(PathBuf, Layout)> {
    let dir = out.join("phone");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let disk = dir.join("disk.img");
    if !disk.exists() {
        // A power of two, so that the same disk can also be U-Boot's SD card.
        let layout = create_disk_with(profile, &disk, true)?;
        return Ok((disk, layout));
    }
    let ss = profile.device.storage.sector_size as u64;
    let mut f = fs::File::open(&disk).with_context(|| format!("opening {}", disk.display()))?;
    let table = gpt::read(&mut f, Some(ss))
        .map_err(|e| util::user_error(e, format!("reading the GPT of {}", disk.display())))?;
    let partitions: Vec<Extent> = (table.partitions.iter())
        .map(|p| Extent { name: p.name.clone(), offset: p.offset(ss), size: p.size(ss) })
        .collect();
    for (name, _) in profile.device.gpt_partitions() {
        if !partitions.iter().any(|p| p.name == name) {
            return Err(Fail::new(format!("{} has no partition {name}, which the profile has", disk.display()))
                .hint("delete it to start a fresh emulated phone")
                .into());
        }
    }
    Ok((disk, Layout { sector_size: ss, partitions, disk_size: f.metadata()?.len() }))
}

/// The emulated phone as flashing left it, to boot the build in `out` (whose generation a
/// test expects).
pub fn flashed_phone(profile: &Profile, out: &Path) -> Result<Prepared> {
    let manifest = publish::load_manifest_for(profile, out)?;
    let (disk, layout) = phone_disk(profile, out)?;
    Ok(Prepared { dir: out.join("phone"), disk, layout, manifest, firmware: Firmware::Model })
}

/// Reads `len` bytes at `offset` of partition `name`.
pub fn read_partition(disk: &Path, layout: &Layout, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
    let (start, size) = layout.find(name).with_context(|| format!("the disk has no partition {name}"))?;
    anyhow::ensure!(offset + len as u64 <= size, "reading past the end of partition {name}");
    let mut f = fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    f.seek(SeekFrom::Start(start + offset))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes `data` at `offset` of partition `name`.
pub fn patch_partition(disk: &Path, layout: &Layout, name: &str, offset: u64, data: &[u8]) -> Result<()> {
    let (start, size) = layout.find(name).with_context(|| format!("the disk has no partition {name}"))?;
    anyhow::ensure!(offset + data.len() as u64 <= size, "writing past the end of partition {name}");
    let mut f = fs::OpenOptions::new().write(true).open(disk)?;
    f.seek(SeekFrom::Start(start + offset))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

/// The boot-state record on the phone's system partition, if a copy is valid.
pub fn read_state(profile: &Profile, p: &Prepared) -> Result<Option<crate::format::bootstate::Record>> {
    use crate::format::bootstate::{read_pair, BLOCK};
    let at = profile.device.state_offset();
    let raw = read_partition(&p.disk, &p.layout, &profile.device.system.partition, at, 2 * BLOCK)?;
    Ok(read_pair(&raw[..BLOCK], &raw[BLOCK..]).0)
}

/// What the bootloader took for one boot.
pub struct Loaded {
    /// The slot on A/B phones.
    pub slot: Option<Slot>,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub dtb: Option<PathBuf>,
    pub cmdline: String,
}

impl Loaded {
    /// The command line with `extra` appended, as a bootloader adds its own arguments.
    pub fn cmdline_with(&self, extra: &str) -> String {
        if extra.is_empty() {
            self.cmdline.clone()
        } else {
            format!("{} {extra}", self.cmdline)
        }
    }
}

/// The phone's bootloader, as Android's A/B rules have it (U-Boot's `ab_select_slot`): on
/// A/B phones it reads misc, picks the slot, spends one try of an unproven slot and writes
/// misc back, all before loading that slot's boot.img; then it takes kernel, ramdisk, dtb
/// and command line out of the boot image and appends `androidboot.slot_suffix`.
pub fn bootloader(profile: &Profile, p: &Prepared) -> Result<std::result::Result<Loaded, String>> {
    let (slot, part) = if profile.device.is_ab() {
        let raw = read_partition(&p.disk, &p.layout, "misc", misc::CONTROL_OFFSET as u64, misc::CONTROL_SIZE)?;
        let sel = misc::select_slot(raw[..].try_into().expect("32 bytes"), true)
            .map_err(|e| util::user_error(e, "reading the A/B metadata in misc"))?;
        if sel.store {
            let mut c = sel.control;
            patch_partition(&p.disk, &p.layout, "misc", misc::CONTROL_OFFSET as u64, &c.encode())?;
        }
        let Some(slot) = sel.slot.and_then(Slot::from_index) else {
            return Ok(Err("no bootable slot in misc".into()));
        };
        (Some(slot), format!("boot{}", slot.suffix()))
    } else {
        (None, "boot".to_string())
    };
    let (_, size) = p.layout.find(&part).with_context(|| format!("the disk has no partition {part}"))?;
    let bytes = read_partition(&p.disk, &p.layout, &part, 0, size as usize)?;
    load(&p.dir, &bytes, slot).map(|r| r.map_err(|e| format!("{part} holds no bootable image ({e})")))
}

/// Takes kernel, ramdisk, dtb and command line out of a boot image (into `dir`), as a
/// bootloader does, appending `androidboot.slot_suffix` for `slot`. The inner error says
/// why the bytes are not a bootable image.
pub fn load(dir: &Path, bytes: &[u8], slot: Option<Slot>) -> Result<std::result::Result<Loaded, String>> {
    let boot = match BootImage::parse(bytes) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let kernel = dir.join("kernel");
    let initrd = dir.join("initrd");
    fs::write(&kernel, &boot.kernel)?;
    fs::write(&initrd, &boot.ramdisk)?;
    let dtb = if boot.dtb.is_empty() {
        None
    } else {
        let d = dir.join("dtb");
        fs::write(&d, &boot.dtb)?;
        Some(d)
    };
    let mut cmdline = boot.cmdline.clone();
    if let Some(s) = slot {
        cmdline.push_str(&format!(" androidboot.slot_suffix={}", s.suffix()));
    }
    Ok(Ok(Loaded { slot, kernel, initrd, dtb, cmdline }))
}

/// QEMU with the phone's machine (no devices yet): console on stdio, a guest restart ends
/// the process, and it dies with mobix.
fn qemu_machine(profile: &Profile) -> Result<Command> {
    let q = profile.device.qemu.as_ref().ok_or_else(|| {
        Fail::new(format!("device {} cannot be emulated (its profile has no qemu section)", profile.codename))
    })?;
    let mut c = Command::new("qemu-system-aarch64");
    // QEMU must not outlive mobix, even one killed with SIGKILL (which no handler sees).
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c.args(["-M", &q.machine, "-cpu", &q.cpu, "-m", &q.memory_mib.to_string(), "-smp", &q.smp.to_string()])
        .args(["-nographic", "-no-reboot"]);
    Ok(c)
}

/// QEMU with the phone's machine and disk, before anything is loaded.
fn qemu_base(profile: &Profile, disk: &Path) -> Result<Command> {
    let mut c = qemu_machine(profile)?;
    let q = profile.device.qemu.as_ref().expect("qemu_machine checked it");
    c.args(["-nic", "none"])
        .arg("-drive")
        .arg(format!("if=none,id=disk0,format=raw,file={}", disk.display()))
        .arg("-device")
        .arg(format!("{},drive=disk0", q.disk.qemu_device()))
        // The phone's keys (volume up and down, as a keyboard), pressed through QMP.
        .args(["-device", "virtio-keyboard-pci"]);
    Ok(c)
}

/// Boots a boot image from RAM on the phone's disk (`fastboot boot`): once, with the
/// console on this terminal, the current slot's suffix appended as bootloaders do.
pub fn boot_from_ram(
    profile: &Profile,
    dir: &Path,
    disk: &Path,
    bytes: &[u8],
    slot: Option<Slot>,
    extra: &str,
    progress: &dyn Fn(&str),
) -> Result<std::process::ExitStatus> {
    let loaded =
        load(dir, bytes, slot)?.map_err(|e| Fail::new(format!("the image sent to boot is not bootable: {e}")))?;
    let mut c = qemu_base(profile, disk)?;
    c.arg("-kernel")
        .arg(&loaded.kernel)
        .arg("-initrd")
        .arg(&loaded.initrd)
        .arg("-append")
        .arg(loaded.cmdline_with(extra));
    if let Some(dtb) = &loaded.dtb {
        c.arg("-dtb").arg(dtb);
    }
    progress(&format!("{} (quit with Ctrl-A X)", util::show_command(&c)));
    let status =
        c.status().map_err(|e| util::user_error(e, "starting qemu-system-aarch64 (package qemu-system-arm)"))?;
    Ok(status)
}

/// The emulated phone's U-Boot in fastboot mode (`fastboot udp`), until the host reboots
/// it: the disk as an SD card on PCI (U-Boot 2023.01 flashes only MMC storage), its NIC
/// with the device's UDP port 5554 forwarded from `127.0.0.1:port`. U-Boot's console goes
/// to `log`.
pub fn u_boot_fastboot(profile: &Profile, dir: &Path, disk: &Path, bin: &Path, port: u16, log: &Path) -> Result<()> {
    let len = fs::metadata(disk).with_context(|| format!("reading {}", disk.display()))?.len();
    if !len.is_power_of_two() {
        return Err(Fail::new(format!("{} is {len} bytes; QEMU's SD card needs a power of two", disk.display()))
            .hint("delete it: `mobix run --fastboot` makes a new one of the right size")
            .into());
    }
    let env = crate::format::ubootenv::encode(
        &[("bootdelay", "0"), ("ipaddr", "10.0.2.15"), ("bootcmd", "mmc list; mmc dev 0; fastboot udp")],
        UBOOT_ENV_SIZE,
    )
    .map_err(|e| anyhow::anyhow!("writing U-Boot's environment: {e}"))?;
    let flash = dir.join("u-boot-fastboot-env.img");
    let mut f = fs::File::create(&flash).with_context(|| format!("creating {}", flash.display()))?;
    f.write_all(&env)?;
    f.set_len(PFLASH_SIZE)?;
    drop(f);
    let mut c = qemu_machine(profile)?;
    c.arg("-bios")
        .arg(bin)
        .arg("-drive")
        .arg(format!("if=pflash,unit=1,format=raw,file={}", flash.display()))
        .args(["-device", "sdhci-pci", "-drive"])
        .arg(format!("if=none,id=card0,format=raw,file={}", disk.display()))
        .args(["-device", "sd-card,drive=card0", "-netdev"])
        .arg(format!("user,id=n0,hostfwd=udp:127.0.0.1:{port}-10.0.2.15:5554"))
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .stdin(Stdio::null())
        .stdout(fs::File::create(log).with_context(|| format!("creating {}", log.display()))?)
        .stderr(Stdio::inherit());
    let status =
        c.status().map_err(|e| util::user_error(e, "starting qemu-system-aarch64 (package qemu-system-arm)"))?;
    if !status.success() {
        return Err(Fail::new(format!("QEMU ended with {status}")).hint(format!("see {}", log.display())).into());
    }
    Ok(())
}

/// The QEMU command line for one boot of what the model loaded.
pub fn qemu_command(profile: &Profile, p: &Prepared, l: &Loaded, cmdline: &str) -> Result<Command> {
    let mut c = qemu_base(profile, &p.disk)?;
    c.arg("-kernel").arg(&l.kernel).arg("-initrd").arg(&l.initrd).arg("-append").arg(cmdline);
    if let Some(dtb) = &l.dtb {
        c.arg("-dtb").arg(dtb);
    }
    Ok(c)
}

/// Where U-Boot loads the boot partition (above the kernel's and ramdisk's load addresses
/// of the qemu-aarch64 header, below U-Boot's own copy at the top of RAM).
const UBOOT_LOAD: u64 = 0x4800_0000;
/// Scratch RAM for the misc sector U-Boot prints.
const UBOOT_SCRATCH: u64 = 0x4700_0000;
/// Size of U-Boot's environment (qemu_arm64_defconfig: CONFIG_ENV_SIZE).
const UBOOT_ENV_SIZE: usize = 0x40000;
/// QEMU's flash banks on virt are 64 MiB each.
const PFLASH_SIZE: u64 = 64 << 20;

/// The marker U-Boot's boot command prints, for the host to follow.
const UBOOT_MARK: &str = "MOBIX-UBOOT";

/// U-Boot's boot command for this phone: on A/B phones `ab_select` on misc (printing the
/// slot and the A/B metadata it left), then that slot's boot partition, `bootm` with the
/// header's command line after `androidboot.slot_suffix` and `extra`. The device tree is
/// the one QEMU hands U-Boot (a v2 header's dtb was dumped without `-bios` and differs).
pub fn u_boot_command(profile: &Profile, p: &Prepared, extra: &str) -> String {
    let ss = p.layout.sector_size;
    let mut cmd = vec!["virtio scan".to_string()];
    let part = if profile.device.is_ab() {
        let off = misc::CONTROL_OFFSET as u64;
        cmd.push(format!(
            "if ab_select slot virtio 0#misc; then echo {UBOOT_MARK} slot=${{slot}}; else echo {UBOOT_MARK} no-slot; poweroff; fi"
        ));
        cmd.push(format!(
            "part start virtio 0 misc mst; setexpr mb ${{mst}} + {:x}; virtio read {UBOOT_SCRATCH:x} ${{mb}} 1; echo {UBOOT_MARK} misc:; md.b {:x} {:x}",
            off / ss,
            UBOOT_SCRATCH + off % ss,
            misc::CONTROL_SIZE
        ));
        "boot_${slot}"
    } else {
        "boot"
    };
    let mut args = Vec::new();
    if profile.device.is_ab() {
        args.push("androidboot.slot_suffix=_${slot}".to_string());
    }
    if !extra.is_empty() {
        args.push(extra.to_string());
    }
    cmd.push(format!(
        "part start virtio 0 {part} bst; part size virtio 0 {part} bsz; virtio read {UBOOT_LOAD:x} ${{bst}} ${{bsz}}"
    ));
    // Double quotes: hush expands ${slot} in them (not in single quotes).
    cmd.push(format!("setenv bootargs \"{}\"", args.join(" ")));
    cmd.push(format!("bootm {UBOOT_LOAD:x} {UBOOT_LOAD:x} ${{fdtcontroladdr}}"));
    cmd.push(format!("echo {UBOOT_MARK} bootm-failed; poweroff"));
    cmd.join("; ")
}

/// QEMU booting U-Boot, its environment (written into `<dir>/u-boot-env.img`) carrying
/// the boot command.
fn qemu_u_boot(profile: &Profile, p: &Prepared, bin: &Path, extra: &str) -> Result<Command> {
    if let Some(c) = extra.chars().find(|c| matches!(c, '"' | '$' | '\\' | ';' | '\'')) {
        return Err(Fail::new(format!("kernel arguments for U-Boot may not contain {c:?}: {extra}"))
            .hint("U-Boot's shell would read it; use --bootloader model for such arguments")
            .into());
    }
    let bootcmd = u_boot_command(profile, p, extra);
    let env = crate::format::ubootenv::encode(&[("bootdelay", "0"), ("bootcmd", &bootcmd)], UBOOT_ENV_SIZE)
        .map_err(|e| anyhow::anyhow!("writing U-Boot's environment: {e}"))?;
    let flash = p.dir.join("u-boot-env.img");
    let mut f = fs::File::create(&flash).with_context(|| format!("creating {}", flash.display()))?;
    f.write_all(&env)?;
    f.set_len(PFLASH_SIZE)?;
    drop(f);
    let mut c = qemu_base(profile, &p.disk)?;
    c.arg("-bios").arg(bin).arg("-drive").arg(format!("if=pflash,unit=1,format=raw,file={}", flash.display()));
    Ok(c)
}

/// How one boot of the emulated phone ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// Reached boot-complete and powered off (or was stopped there).
    Complete,
    /// The guest restarted (a failed trial, a kernel panic): the next power cycle follows.
    Rebooted,
    /// The guest powered off without reaching boot-complete.
    PoweredOff,
    /// Stage-1 found nothing to boot and dropped to its rescue shell.
    Rescue,
    /// The bootloader found nothing to boot.
    NoBoot,
    /// Nothing happened within the time allowed: the battery is pulled.
    Timeout,
    /// QEMU ended on its own (crashed, or quit by the user).
    Exited,
}

/// One power cycle of the emulated phone, as the serial console told it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Boot {
    pub slot: Option<char>,
    pub generation: Option<u32>,
    /// trial, good, degraded or manual: how stage-1 chose the generation.
    pub status: Option<String>,
    pub tries_left: Option<u8>,
    pub toplevel: Option<String>,
    pub health_failed: bool,
    pub trial_timeout: bool,
    pub kernel_panic: bool,
    pub ending: Ending,
    /// The reason for the ending in words (the bootloader's or stage-1's message).
    pub note: String,
    pub seconds: f64,
}

impl Boot {
    /// A boot nothing is known of yet (it ends in a timeout unless the console says more).
    pub fn unseen() -> Boot {
        Boot {
            slot: None,
            generation: None,
            status: None,
            tries_left: None,
            toplevel: None,
            health_failed: false,
            trial_timeout: false,
            kernel_panic: false,
            ending: Ending::Timeout,
            note: String::new(),
            seconds: 0.0,
        }
    }

    /// One line for the user: slot, generation, tries, outcome.
    pub fn summary(&self) -> String {
        let slot = self.slot.map(|c| format!("slot {c}, ")).unwrap_or_default();
        let generation = match (self.generation, &self.status) {
            (Some(g), Some(st)) if st == "trial" => {
                format!("generation {g} (trial, {} tries left)", self.tries_left.unwrap_or(0))
            }
            (Some(g), Some(st)) => format!("generation {g} ({st})"),
            _ => "no generation".into(),
        };
        let outcome = match self.ending {
            Ending::Complete => "boot-complete".to_string(),
            _ if self.health_failed => "health check failed, rebooted".into(),
            _ if self.trial_timeout => "no success point in time, rebooted".into(),
            _ if self.kernel_panic => "kernel panic, rebooted".into(),
            Ending::Rebooted if self.note.starts_with("SLOT-SWITCH") => {
                "nothing to boot with this slot's kernel: back to the other slot, rebooted".into()
            }
            Ending::Rescue => format!("rescue shell: {}", self.note),
            Ending::NoBoot => format!("bootloader: {}", self.note),
            e => format!("{e:?}").to_lowercase(),
        };
        format!("{slot}{generation}: {outcome} ({:.1}s)", self.seconds)
    }
}

/// A reply typed on the serial console when a line containing `when` appears.
pub struct Answer {
    pub when: String,
    pub reply: String,
    /// A key of the phone to press (a QEMU qcode, `volumeup`) instead of typing `reply`.
    pub key: Option<String>,
}

/// Presses a key of the emulated phone (its virtio keyboard) through QEMU's QMP socket,
/// holding it for `hold_ms`.
fn press_key(qmp: &Path, qcode: &str, hold_ms: u32) -> Result<()> {
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(qmp).with_context(|| format!("connecting to {}", qmp.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?; // the greeting
    for cmd in [
        serde_json::json!({"execute": "qmp_capabilities"}),
        serde_json::json!({"execute": "send-key", "arguments": {
            "keys": [{"type": "qcode", "data": qcode}], "hold-time": hold_ms}}),
    ] {
        s.write_all(format!("{cmd}\n").as_bytes())?;
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                anyhow::bail!("QMP closed the connection");
            }
            if line.contains("\"return\"") {
                break;
            }
            anyhow::ensure!(!line.contains("\"error\""), "QMP refused {cmd}: {line}");
        }
    }
    Ok(())
}

/// Runs one power cycle: the bootloader, then QEMU with the serial console captured into
/// `log` until the guest powers off or restarts, or `timeout` passes.
pub fn boot_once(
    profile: &Profile,
    p: &Prepared,
    extra: &str,
    timeout: Duration,
    answers: &[Answer],
    log: &mut fs::File,
) -> Result<Boot> {
    let t0 = Instant::now();
    let mut boot = Boot::unseen();
    let (mut cmd, expect) = match &p.firmware {
        Firmware::Model => {
            let loaded = match bootloader(profile, p)? {
                Ok(l) => l,
                Err(why) => {
                    writeln!(log, "# bootloader: {why}")?;
                    boot.ending = Ending::NoBoot;
                    boot.note = why;
                    return Ok(boot);
                }
            };
            boot.slot = loaded.slot.map(Slot::letter);
            (qemu_command(profile, p, &loaded, &loaded.cmdline_with(extra))?, None)
        }
        Firmware::UBoot { bin } => {
            let expect = if profile.device.is_ab() { Some(model_choice(p)?) } else { None };
            (qemu_u_boot(profile, p, bin, extra)?, expect)
        }
    };
    let mut seen = UBootSaw::default();
    if answers.iter().any(|a| a.key.is_some()) {
        // QMP, to press the phone's keys (a socket path has at most 107 bytes).
        let sock = p.dir.join("qmp.sock");
        anyhow::ensure!(sock.as_os_str().len() < 108, "{} is too long for a socket path", sock.display());
        cmd.arg("-qmp").arg(format!("unix:{},server=on,wait=off", sock.display()));
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    writeln!(log, "# {}", util::show_command(&cmd))?;
    let mut child =
        cmd.spawn().map_err(|e| util::user_error(e, "starting qemu-system-aarch64 (package qemu-system-arm)"))?;
    // QEMU has its own process group (so a timeout can kill all of it); if mobix itself is
    // interrupted, take that group down too instead of leaving QEMU running.
    let _guard = interrupt::KillGroupOnSignal::new(child.id());
    let mut stdin = child.stdin.take();
    let rx = lines_of(&mut child);
    let mut answered = vec![false; answers.len()];
    let mut tail: Vec<String> = Vec::new();
    let deadline = t0 + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            boot.note = format!("nothing more within {}s", timeout.as_secs());
            if boot.ending != Ending::Complete {
                boot.ending = Ending::Timeout;
            }
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                tail.push(line.clone());
                if tail.len() > 30 {
                    tail.remove(0);
                }
                for (i, a) in answers.iter().enumerate() {
                    if !answered[i] && line.contains(&a.when) {
                        answered[i] = true;
                        if let Some(k) = &a.key {
                            if let Err(e) = press_key(&p.dir.join("qmp.sock"), k, 300) {
                                writeln!(log, "# pressing {k} failed: {e:#}")?;
                            }
                            continue;
                        }
                        if let Some(w) = stdin.as_mut() {
                            let _ = w.write_all(a.reply.as_bytes());
                            let _ = w.flush();
                        }
                    }
                }
                scan(&line, &mut boot);
                if !matches!(p.firmware, Firmware::Model) {
                    seen.scan(&line, &mut boot);
                }
                if line.contains("reboot: Restarting system") {
                    boot.ending = Ending::Rebooted;
                } else if line.contains("reboot: Power down") && boot.ending != Ending::Complete {
                    boot.ending = Ending::PoweredOff;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                if boot.kernel_panic && boot.ending == Ending::Timeout {
                    // panic=N restarts without a "reboot:" line; -no-reboot makes that an exit.
                    boot.ending = Ending::Rebooted;
                } else if boot.ending == Ending::Timeout {
                    // (A rescue ends the loop as soon as it is seen.)
                    boot.ending = Ending::Exited;
                    boot.note = format!("QEMU exited ({status})");
                }
                break;
            }
        }
        if boot.ending == Ending::Rescue {
            break;
        }
    }
    kill_group(&mut child);
    boot.seconds = t0.elapsed().as_secs_f64();
    if let Some(want) = expect {
        if let Err(why) = seen.agrees_with(&want) {
            writeln!(log, "# U-Boot and the model disagree: {why}")?;
            return Err(Fail::new(format!("U-Boot and mobix's model of its A/B rules disagree: {why}"))
                .hint("the model (src/vm, init/bootctl misc.rs) must follow U-Boot's ab_select; see the serial log")
                .into());
        }
    }
    if matches!(boot.ending, Ending::Timeout | Ending::Exited | Ending::Rescue | Ending::PoweredOff) {
        boot.note = format!("{}; the serial log ends with:\n{}", boot.note, tail.join("\n"));
    }
    Ok(boot)
}

/// What mobix's model of the bootloader would do on the phone's misc now: the slot (or
/// why none) and the 32 bytes of A/B metadata it leaves there.
pub fn model_choice(p: &Prepared) -> Result<(std::result::Result<char, String>, [u8; misc::CONTROL_SIZE])> {
    let raw = read_partition(&p.disk, &p.layout, "misc", misc::CONTROL_OFFSET as u64, misc::CONTROL_SIZE)?;
    let raw: [u8; misc::CONTROL_SIZE] = raw[..].try_into().expect("32 bytes");
    Ok(match misc::select_slot(&raw, true) {
        Ok(sel) => {
            let bytes = if sel.store { sel.control.clone().encode() } else { raw };
            (sel.slot.map(misc::slot_letter).ok_or_else(|| "no bootable slot".to_string()), bytes)
        }
        Err(e) => (Err(e.to_string()), raw),
    })
}

/// What U-Boot's boot command printed (see [`u_boot_command`]).
#[derive(Default)]
struct UBootSaw {
    slot: Option<char>,
    no_slot: bool,
    /// The A/B metadata read back right after `ab_select`, as `md.b` printed it.
    misc: Vec<u8>,
    reading_misc: bool,
}

impl UBootSaw {
    fn scan(&mut self, line: &str, boot: &mut Boot) {
        if let Some(i) = line.find(UBOOT_MARK) {
            let rest = line[i + UBOOT_MARK.len()..].trim();
            if let Some(c) = rest.strip_prefix("slot=").and_then(|v| v.chars().next()) {
                self.slot = Some(c);
                boot.slot = Some(c);
            } else if rest == "no-slot" {
                self.no_slot = true;
                boot.ending = Ending::NoBoot;
                boot.note = "U-Boot's ab_select found no bootable slot".into();
            } else if rest == "misc:" {
                self.reading_misc = true;
            } else if rest == "bootm-failed" {
                boot.ending = Ending::NoBoot;
                boot.note = "U-Boot could not boot the slot's boot image".into();
            }
        } else if self.reading_misc {
            // `47000800: 61 00 00 00 42 43 41 42 01 02 00 00 9f 00 7f 00  a...BCAB........`
            let Some((_, bytes)) = line.split_once(": ") else { return };
            let hex = bytes.split("  ").next().unwrap_or("");
            self.misc.extend(hex.split_whitespace().filter_map(|b| u8::from_str_radix(b, 16).ok()));
            if self.misc.len() >= misc::CONTROL_SIZE {
                self.reading_misc = false;
            }
        }
    }

    /// Whether U-Boot chose what the model chose and left the same bytes in misc.
    fn agrees_with(
        &self,
        want: &(std::result::Result<char, String>, [u8; misc::CONTROL_SIZE]),
    ) -> std::result::Result<(), String> {
        match (&want.0, self.slot, self.no_slot) {
            (Ok(m), Some(u), _) if *m == u => {}
            (Err(_), None, true) => return Ok(()),
            (m, u, _) => {
                let m = m.as_ref().map(|c| format!("slot {c}")).unwrap_or_else(|e| format!("no slot ({e})"));
                let u = u.map(|c| format!("slot {c}")).unwrap_or_else(|| "no slot".into());
                return Err(format!("U-Boot chose {u}, the model {m}"));
            }
        }
        if self.misc.len() < misc::CONTROL_SIZE {
            return Err("U-Boot did not print the A/B metadata it left in misc".into());
        }
        if self.misc[..misc::CONTROL_SIZE] != want.1[..] {
            let show = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ");
            return Err(format!(
                "misc after U-Boot: {}; after the model: {}",
                show(&self.misc[..misc::CONTROL_SIZE]),
                show(&want.1)
            ));
        }
        Ok(())
    }
}

/// What one serial line says about the boot.
fn scan(line: &str, boot: &mut Boot) {
    let fields = |rest: &str| -> Vec<(String, String)> {
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_end_matches(':').to_string()))
            .collect()
    };
    if let Some(i) = line.find("mobix: GEN-CHOSEN") {
        for (k, v) in fields(&line[i..]) {
            match k.as_str() {
                "generation" => boot.generation = v.parse().ok(),
                "status" => boot.status = Some(v),
                "tries_left" => boot.tries_left = v.parse().ok(),
                _ => {}
            }
        }
    } else if let Some(i) = line.find(BOOT_COMPLETE) {
        for (k, v) in fields(&line[i..]) {
            match k.as_str() {
                "generation" => boot.generation = v.parse().ok(),
                "toplevel" => boot.toplevel = Some(v),
                _ => {}
            }
        }
        boot.ending = Ending::Complete;
    } else if line.contains("mobix: HEALTH-FAILED") {
        boot.health_failed = true;
    } else if line.contains("mobix: TRIAL-TIMEOUT") {
        boot.trial_timeout = true;
    } else if line.contains("Kernel panic") {
        boot.kernel_panic = true;
    } else if let Some(i) = line.find("mobix: SLOT-SWITCH") {
        boot.note = line[i + "mobix: ".len()..].to_string();
    } else if let Some(i) = line.find("mobix: RESCUE:") {
        boot.note = format!("RESCUE{}", &line[i + "mobix: RESCUE".len()..]);
        boot.ending = Ending::Rescue;
    }
}

/// The serial console (QEMU's stdout and stderr), line by line.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).map(|n| n > 0).unwrap_or(false) {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    rx
}

/// How a series of power cycles runs: what to append to every command line, how long one
/// boot may take, at most how many, what to type on the console, and the number the
/// first boot is reported with (boots before it in the same log).
pub struct Cycles<'a> {
    pub extra: &'a str,
    pub per_boot: Duration,
    pub max_boots: usize,
    pub answers: &'a [Answer],
    pub numbered_from: usize,
}

/// Power-cycles the phone until a boot completes, nothing is bootable, or the power
/// cycles are spent; a boot that restarts or hangs is followed by the next one.
pub fn boot_until_complete(
    profile: &Profile,
    p: &Prepared,
    c: &Cycles,
    log: &mut fs::File,
    progress: &dyn Fn(&str),
) -> Result<Vec<Boot>> {
    let mut boots = Vec::new();
    while boots.len() < c.max_boots {
        let n = c.numbered_from + boots.len() + 1;
        writeln!(log, "# power cycle {n}")?;
        let b = boot_once(profile, p, c.extra, c.per_boot, c.answers, log)?;
        progress(&format!("boot {n}: {}", b.summary()));
        let again = matches!(b.ending, Ending::Rebooted | Ending::Timeout);
        boots.push(b);
        if !again {
            break;
        }
    }
    Ok(boots)
}

/// What `mobix test` saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    pub version: u32,
    pub passed: bool,
    pub generation: Option<u32>,
    pub toplevel: Option<String>,
    pub seconds: f64,
    pub serial_log: PathBuf,
    pub reason: String,
    /// The generation the phone fell back to by itself when the build's did not boot.
    pub fell_back_to: Option<u32>,
    /// Every power cycle, in order.
    pub boots: Vec<Boot>,
}

/// What became of generation `g` in `boots`, in words: "failed its health check 3 times".
pub fn failures_of(boots: &[Boot], g: u32) -> String {
    let mine: Vec<&Boot> = boots.iter().filter(|b| b.generation == Some(g)).collect();
    let count = |f: &dyn Fn(&Boot) -> bool| mine.iter().filter(|b| f(b)).count();
    let times = |n: usize| if n == 1 { "once".to_string() } else { format!("{n} times") };
    let mut what = Vec::new();
    for (n, words) in [
        (count(&|b| b.health_failed), "failed its health check"),
        (count(&|b| b.trial_timeout), "missed its success point"),
        (count(&|b| b.kernel_panic), "ended in a kernel panic"),
    ] {
        if n > 0 {
            what.push(format!("{words} {}", times(n)));
        }
    }
    match (mine.len(), what.is_empty()) {
        (0, _) => "never booted".into(),
        (n, true) => format!("booted {} without reaching boot-complete", times(n)),
        _ => what.join(" and "),
    }
}

mod interrupt {
    use std::sync::atomic::{AtomicI32, Ordering};

    static GROUP: AtomicI32 = AtomicI32::new(0);

    extern "C" fn on_signal(sig: libc::c_int) {
        let g = GROUP.load(Ordering::SeqCst);
        // SAFETY: killpg and _exit are async-signal-safe.
        unsafe {
            if g > 0 {
                libc::killpg(g, libc::SIGKILL);
            }
            libc::_exit(128 + sig);
        }
    }

    /// While alive, SIGINT, SIGTERM and SIGHUP kill the process group `pgid` and end mobix.
    pub struct KillGroupOnSignal;

    impl KillGroupOnSignal {
        pub fn new(pgid: u32) -> Self {
            GROUP.store(pgid as i32, Ordering::SeqCst);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                // SAFETY: installing a handler that only calls async-signal-safe functions.
                unsafe {
                    libc::signal(s, on_signal as *const () as libc::sighandler_t);
                }
            }
            KillGroupOnSignal
        }
    }

    impl Drop for KillGroupOnSignal {
        fn drop(&mut self) {
            GROUP.store(0, Ordering::SeqCst);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                // SAFETY: restoring the default disposition.
                unsafe {
                    libc::signal(s, libc::SIG_DFL);
                }
            }
        }
    }
}

/// Kills a child's whole process group (QEMU and anything it started).
fn kill_group(child: &mut Child) {
    // SAFETY: the child was started in its own process group (process_group(0)), whose id
    // is its pid; signalling it cannot reach mobix itself.
    unsafe {
        libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Boots the prepared phone (power cycling it while it restarts by itself) and checks
/// that the build's generation reaches boot-complete.
pub fn test(profile: &Profile, p: &Prepared, timeout: Duration, progress: &dyn Fn(&str)) -> Result<TestOutcome> {
    let log_path = p.dir.join("serial.log");
    let mut log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    progress(&format!(
        "booting {} in QEMU (timeout {}s per boot, serial log {})",
        profile.codename,
        timeout.as_secs(),
        log_path.display()
    ));
    let cycles = Cycles { extra: POWEROFF_ARG, per_boot: timeout, max_boots: 8, answers: &[], numbered_from: 0 };
    let boots = boot_until_complete(profile, p, &cycles, &mut log, progress)?;
    let last = boots.last().expect("at least one boot");
    let want_top = p.manifest.toplevel.phone_path();
    let mut outcome = TestOutcome {
        version: 2,
        passed: false,
        generation: last.generation,
        toplevel: last.toplevel.clone(),
        seconds: boots.iter().map(|b| b.seconds).sum(),
        serial_log: log_path,
        reason: String::new(),
        fell_back_to: None,
        boots: boots.clone(),
    };
    let want = p.manifest.generation;
    if last.ending == Ending::Complete && last.generation == Some(want) && last.toplevel.as_deref() == Some(&want_top) {
        outcome.passed = true;
        outcome.reason = "boot-complete".into();
    } else if let (Ending::Complete, Some(other)) = (last.ending, last.generation.filter(|g| *g != want)) {
        outcome.fell_back_to = Some(other);
        outcome.reason = format!(
            "generation {want} {}; the phone fell back to generation {other}, which is good",
            failures_of(&boots, want)
        );
    } else if last.ending != Ending::Complete {
        outcome.reason = format!("no boot-complete after {} power cycles; last: {}", boots.len(), last.note);
    } else {
        outcome.reason = format!(
            "booted generation {:?} toplevel {:?}, expected generation {want} toplevel {want_top}",
            last.generation, last.toplevel
        );
    }
    Ok(outcome)
}

/// Boots the prepared phone with the console on this terminal; a guest restart is a power
/// cycle through the bootloader again, a power-off (or quitting QEMU) ends it.
pub fn run(
    profile: &Profile,
    p: &Prepared,
    extra_cmdline: &str,
    progress: &dyn Fn(&str),
) -> Result<std::process::ExitStatus> {
    loop {
        let mut cmd = match &p.firmware {
            Firmware::Model => {
                let loaded = match bootloader(profile, p)? {
                    Ok(l) => l,
                    Err(why) => return Err(Fail::new(format!("the emulated bootloader cannot boot: {why}")).into()),
                };
                qemu_command(profile, p, &loaded, &loaded.cmdline_with(extra_cmdline))?
            }
            Firmware::UBoot { bin } => qemu_u_boot(profile, p, bin, extra_cmdline)?,
        };
        progress(&format!("{} (quit with Ctrl-A X)", util::show_command(&cmd)));
        cmd.stdout(Stdio::piped());
        let mut child =
            cmd.spawn().map_err(|e| util::user_error(e, "starting qemu-system-aarch64 (package qemu-system-arm)"))?;
        // Pass the console through while watching for a restart.
        let mut out = child.stdout.take().expect("piped");
        let mut restarted = false;
        let mut window: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        loop {
            let n = out.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
            window.extend_from_slice(&buf[..n]);
            if memchr::memmem::find(&window, b"reboot: Restarting system").is_some() {
                restarted = true;
            }
            let keep = window.len().saturating_sub(64);
            window.drain(..keep);
        }
        let status = child.wait()?;
        if !restarted {
            return Ok(status);
        }
        progress("the phone restarted: power cycle through the bootloader");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> Boot {
        Boot::unseen()
    }

    /// What U-Boot printed on this machine after re-initialising an all-zero misc.
    const SEEN: &str =
        "ANDROID: Booting slot: a\nMOBIX-UBOOT slot=a\n\nvirtio read: device 0 block # 2052, count 1 ... OK\n\
        MOBIX-UBOOT misc:\n47000000: 61 00 00 00 42 43 41 42 01 02 00 00 6f 00 7f 00  a...BCAB....o...\n\
        47000010: 00 00 00 00 00 00 00 00 00 00 00 00 91 a3 0d 81  ................\n\nvirtio read: ...";

    #[test]
    fn reads_what_u_boot_printed_and_compares_it_with_the_model() {
        let mut saw = UBootSaw::default();
        let mut b = boot();
        for l in SEEN.lines() {
            saw.scan(l, &mut b);
        }
        assert_eq!(b.slot, Some('a'));
        assert_eq!(saw.misc.len(), 32);
        // The model on an all-zero misc: re-initialised, slot a, one try spent.
        let sel = misc::select_slot(&[0; 32], true).unwrap();
        let want = (Ok('a'), sel.control.clone().encode());
        assert_eq!(saw.agrees_with(&want), Ok(()));
        let mut other = want.1;
        other[12] ^= 0x10;
        assert!(saw.agrees_with(&(Ok('a'), other)).unwrap_err().contains("misc after U-Boot"));
        assert!(saw.agrees_with(&(Ok('b'), want.1)).unwrap_err().contains("U-Boot chose slot a, the model slot b"));
    }

    #[test]
    fn no_slot_agrees_only_with_no_slot() {
        let mut saw = UBootSaw::default();
        let mut b = boot();
        saw.scan("MOBIX-UBOOT no-slot", &mut b);
        assert_eq!(b.ending, Ending::NoBoot);
        assert_eq!(saw.agrees_with(&(Err("no bootable slot".into()), [0; 32])), Ok(()));
        assert!(saw.agrees_with(&(Ok('a'), [0; 32])).is_err());
    }
}
