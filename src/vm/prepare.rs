//! The emulated phone's files in the out directory: its disk laid out and written as a
//! flash would, what it keeps from one run to the next, and the locks that keep two runs
//! off one disk.

use super::disk::*;
use crate::format::bootimg::BootImage;
use crate::format::misc;
use crate::plan::ImageName;
use crate::profile::Profile;
use crate::publish::{self, Manifest};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use mobix_bootctl::contract::Slot;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The emulated phone, prepared in `<out>/vm/`: its GPT disk as a freshly flashed phone
/// has it. Each boot goes through [`bootloader`], as on a phone.
pub struct Prepared {
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub layout: Layout,
    pub manifest: Manifest,
    /// What boots it: mobix's model of the bootloader, or U-Boot.
    pub firmware: Firmware,
    /// Held while the phone's own disk is in use (see [`use_phone`]).
    pub phone_lock: Option<util::FileLock>,
    /// The phone's network: QEMU's user-mode network on a virtio NIC.
    pub net: Net,
    /// Where its screen shows (`mobix run`): nowhere, in a window, over VNC.
    pub display: Display,
    /// A QMP socket for scripts (`mobix run --qmp`): keys, screenshots.
    pub qmp: Option<PathBuf>,
}

/// Where the emulated phone's screen is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Nowhere (the tests look at it through QMP).
    None,
    /// In a window on the host's desktop (QEMU's GTK display).
    Window,
    /// Served over VNC on 127.0.0.1 at this port (5900 and up).
    Vnc(u16),
}

impl Prepared {
    /// Says who boots the phone (`mobix run`, and where its ssh is forwarded), for the
    /// refusal another mobix process gets meanwhile and for [`emulated_known_hosts`].
    pub fn say_user(&self, command: &str, ssh_port: Option<u16>) {
        if let Some(l) = &self.phone_lock {
            Holder::me(Some(command), ssh_port).write(l);
        }
    }
}

/// Who holds an emulated phone's disk, written into its lock file as JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub pid: u32,
    #[serde(default)]
    pub command: Option<String>,
    /// The host port on 127.0.0.1 forwarded to the phone's ssh.
    #[serde(default)]
    pub ssh_port: Option<u16>,
}

impl Holder {
    pub fn me(command: Option<&str>, ssh_port: Option<u16>) -> Holder {
        Holder { pid: std::process::id(), command: command.map(str::to_string), ssh_port }
    }

    pub fn write(&self, lock: &util::FileLock) {
        lock.note(&serde_json::to_string(self).expect("serialisable"));
    }

    fn read(lock: &Path) -> Option<Holder> {
        serde_json::from_str(&util::FileLock::holder(lock)?).ok()
    }

    /// `pid 12: `mobix run`, ssh on 127.0.0.1:2222`.
    fn words(&self) -> String {
        let mut s = format!("pid {}", self.pid);
        if let Some(c) = &self.command {
            s.push_str(&format!(": `{c}`"));
        }
        if let Some(p) = self.ssh_port {
            s.push_str(&format!(", ssh on 127.0.0.1:{p}"));
        }
        s
    }
}

/// The emulated phone's network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Net {
    /// A virtio NIC on QEMU's user-mode network (the phone gets 10.0.2.15 by DHCP).
    pub nic: bool,
    /// Host port (on 127.0.0.1) forwarded to the phone's ssh port.
    pub ssh: Option<(u16, u16)>,
}

impl Net {
    /// A NIC for systems that configure one (systemd's networkd); none for the minimal
    /// init, which has no network.
    pub fn for_profile(profile: &Profile) -> Net {
        Net { nic: profile.system.init == crate::profile::Init::Systemd, ssh: None }
    }

    /// Forwards 127.0.0.1:`port` to the phone's ssh.
    pub fn with_ssh(profile: &Profile, port: u16) -> Net {
        Net { nic: true, ssh: Some((port, profile.system.ssh.port)) }
    }
}

/// Claims the emulated phone's own disk (`<out>/phone/`) for one user at a time: the
/// fastboot-mode phone writing into it, or a boot of it. Refused while another holds it.
pub fn use_phone(out: &Path, what: &str) -> Result<util::FileLock> {
    claim(&out.join("phone"), what, "it is in fastboot mode (`mobix run --fastboot`) or booting: end that first (`fastboot reboot` ends fastboot mode)")
}

/// Claims the disk `mobix run` and `mobix test` boot (`<out>/vm/`), which each of them
/// makes anew from the build and the last run's state: a second one would take it from
/// under a phone that is still running. Refused while another holds it.
pub fn use_vm(out: &Path, what: &str) -> Result<util::FileLock> {
    claim(
        &out.join("vm"),
        what,
        "end that one first (Ctrl-A X on its console, or stop its mobix process); two phones at once need two \
         builds (`mobix build --out DIR` for the second)",
    )
}

/// Where the host key of the emulated phone of `out` is kept when `host:port` is where a
/// running `mobix run --ssh-port` of it forwards ssh (as its lock's holder says); None
/// for any other address. The file is forgotten with the phone's state ([`prepare`]).
pub fn emulated_known_hosts(out: &Path, host: &str, port: Option<u16>) -> Option<PathBuf> {
    let dir = out.join("vm");
    let lock = dir.join("in-use.lock");
    if !["127.0.0.1", "localhost"].contains(&host) || !lock.exists() {
        return None;
    }
    // Nobody holds the lock: no phone runs there.
    if util::FileLock::try_take(&lock).ok()?.is_some() {
        return None;
    }
    (Holder::read(&lock)?.ssh_port == Some(port.unwrap_or(22))).then(|| dir.join(KNOWN_HOSTS))
}

/// The emulated phone's ssh host key as ssh's known_hosts file, beside its disk.
pub const KNOWN_HOSTS: &str = "known_hosts";

fn claim(dir: &Path, what: &str, hint: &str) -> Result<util::FileLock> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("in-use.lock");
    let lock = util::FileLock::try_take(&path)?.ok_or_else(|| {
        let who = Holder::read(&path).map(|h| format!(" ({})", h.words())).unwrap_or_default();
        Fail::new(format!(
            "the emulated phone in {} is in use by another mobix process{who}; cannot {what}",
            dir.display()
        ))
        .hint(hint)
    })?;
    Holder::me(None, None).write(&lock);
    Ok(lock)
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

/// Builds the phone's disk from the out directory; with `keep_state`, the state partition
/// of the disk before it stays (as flashing keeps a phone's data).
pub fn prepare(profile: &Profile, out: &Path, keep_state: bool) -> Result<Prepared> {
    let manifest = publish::load_manifest_for(profile, out)?;
    let boot_path = publish::image_file(out, &manifest, ImageName::Boot.file_name())?;
    let system_path = publish::image_file(out, &manifest, ImageName::System.file_name())?;
    let boot_bytes = fs::read(&boot_path).with_context(|| format!("reading {}", boot_path.display()))?;
    let lock = use_vm(out, "boot it")?;
    // Flashing keeps a phone's data: the state partition of the last run stays.
    let dir = out.join("vm");
    let old = dir.join("disk.img.old");
    let had = fs::rename(dir.join("disk.img"), &old).is_ok();
    let mut p = prepare_from(profile, &dir, &boot_bytes, &system_path, manifest)
        .with_context(|| format!("preparing the emulated phone from {}", out.display()))?;
    p.phone_lock = Some(lock);
    let mut carried = false;
    if had {
        if keep_state {
            carried = carry_state(profile, &old, &p)?;
        }
        fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    if !carried {
        // An empty state: the phone makes a new host key at this boot.
        let _ = fs::remove_file(dir.join(KNOWN_HOSTS));
    }
    Ok(p)
}

/// Copies the state partition of an earlier disk (with the same layout) into `p`'s, for
/// systems that keep state there (the minimal init keeps none: nothing to read).
fn carry_state(profile: &Profile, old: &Path, p: &Prepared) -> Result<bool> {
    if profile.system.init != crate::profile::Init::Systemd {
        return Ok(false);
    }
    let Some(st) = &profile.device.state else { return Ok(false) };
    let Some((start, size)) = p.layout.find(&st.partition) else { return Ok(false) };
    // Beside the store, only what follows the system image is state.
    let skip = profile.device.persistent_state_start().min(size);
    let (offset, size) = (start + skip, size - skip);
    if fs::metadata(old)?.len() != p.layout.disk_size {
        return Ok(false);
    }
    let mut from = fs::File::open(old)?;
    let mut to = fs::OpenOptions::new().write(true).open(&p.disk)?;
    use std::io::{Seek, SeekFrom};
    let mut buf = vec![0u8; MIB as usize];
    // Only the old disk's data is read: its holes (most of a young state partition) stay
    // holes, found by the filesystem instead of by reading gigabytes of zeros.
    for (data, hole) in util::data_ranges(&from, offset, offset + size) {
        let mut pos = data;
        while pos < hole {
            let n = buf.len().min((hole - pos) as usize);
            from.seek(SeekFrom::Start(pos))?;
            from.read_exact(&mut buf[..n])?;
            if buf[..n].iter().any(|b| *b != 0) {
                to.seek(SeekFrom::Start(pos))?;
                to.write_all(&buf[..n])?;
            }
            pos += n as u64;
        }
    }
    Ok(true)
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
    Ok(Prepared {
        dir: dir.to_path_buf(),
        disk,
        layout,
        manifest,
        firmware: Firmware::Model,
        phone_lock: None,
        net: Net::for_profile(profile),
        display: Display::None,
        qmp: None,
    })
}

/// The emulated phone as flashing left it, to boot the build in `out` (whose generation a
/// test expects).
pub fn flashed_phone(profile: &Profile, out: &Path) -> Result<Prepared> {
    let manifest = publish::load_manifest_for(profile, out)?;
    let lock = use_phone(out, "boot it")?;
    let (disk, layout) = phone_disk(profile, out)?;
    Ok(Prepared {
        dir: out.join("phone"),
        disk,
        layout,
        manifest,
        firmware: Firmware::Model,
        phone_lock: Some(lock),
        net: Net::for_profile(profile),
        display: Display::None,
        qmp: None,
    })
}

/// The boot-state record on the phone's system partition, if a copy is valid.
pub fn read_state(profile: &Profile, p: &Prepared) -> Result<Option<crate::format::bootstate::Record>> {
    use crate::format::bootstate::{read_pair, BLOCK};
    let at = profile.device.state_offset();
    let raw = read_partition(&p.disk, &p.layout, &profile.device.system.partition, at, 2 * BLOCK)?;
    Ok(read_pair(&raw[..BLOCK], &raw[BLOCK..]).0)
}
