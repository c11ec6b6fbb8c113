//! The emulated phone's machine and bootloaders: the QEMU command lines, mobix's model of
//! an A/B bootloader (misc, slot choice, the boot image taken apart) and U-Boot's.

use super::*;

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

/// QEMU with the phone's machine (no devices yet): console on stdio, the screen where
/// `display` says, a guest restart ends the process, and it dies with mobix.
pub(super) fn qemu_machine(profile: &Profile, display: Display) -> Result<Command> {
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
        .arg("-no-reboot");
    match display {
        Display::None => c.arg("-nographic"),
        // The console stays on stdio (with QEMU's Ctrl-A monitor keys) beside the screen.
        Display::Window => c.args(["-display", "gtk", "-serial", "mon:stdio"]),
        Display::Vnc(port) => {
            c.arg("-display").arg(format!("vnc=127.0.0.1:{}", port.saturating_sub(5900))).args(["-serial", "mon:stdio"])
        }
    };
    Ok(c)
}

/// QEMU with the phone's machine and disk, before anything is loaded.
pub(super) fn qemu_base(profile: &Profile, disk: &Path, net: &Net, display: Display) -> Result<Command> {
    let mut c = qemu_machine(profile, display)?;
    let q = profile.device.qemu.as_ref().expect("qemu_machine checked it");
    // `-M virt` adds a NIC of its own unless told not to.
    c.args(["-nic", "none"]);
    if net.nic {
        let fwd = net.ssh.map(|(host, guest)| format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}")).unwrap_or_default();
        // romfile= : the NIC's boot ROM (for firmware network boot) is neither needed nor
        // installed by Debian's qemu-system-arm.
        c.arg("-netdev").arg(format!("user,id=net0{fwd}")).args(["-device", "virtio-net-pci,netdev=net0,romfile="]);
    }
    c.arg("-drive")
        .arg(format!("if=none,id=disk0,format=raw,file={}", disk.display()))
        .arg("-device")
        .arg(format!("{},drive=disk0", q.disk.qemu_device()))
        // The phone's keys (volume up and down, power, as a keyboard), pressed through QMP.
        .args(["-device", "virtio-keyboard-pci"])
        // A hardware random number generator, as every phone's SoC has one: without it the
        // kernel's pool is ready only seconds into userspace, and what waits for it
        // (systemd-random-seed, sysinit.target behind it) waits too.
        .args(["-device", "virtio-rng-pci"]);
    if let Some(s) = q.screen {
        // The phone's screen (stage-1 draws on its framebuffer) and a touch device over it
        // (absolute positions, as a touchscreen gives).
        c.arg("-device").arg(format!("virtio-gpu-pci,xres={},yres={}", s.width, s.height));
        c.args(["-device", "virtio-tablet-pci"]);
    }
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
    let mut c = qemu_base(profile, disk, &Net::for_profile(profile), Display::None)?;
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
    let mut c = qemu_machine(profile, Display::None)?;
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
    let mut c = qemu_base(profile, &p.disk, &p.net, p.display)?;
    if let Some(sock) = &p.qmp {
        c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", sock.display()));
    }
    c.arg("-kernel").arg(&l.kernel).arg("-initrd").arg(&l.initrd).arg("-append").arg(cmdline);
    if let Some(dtb) = &l.dtb {
        c.arg("-dtb").arg(dtb);
    }
    Ok(c)
}

/// Where U-Boot loads the boot partition (above the kernel's and ramdisk's load addresses
/// of the qemu-aarch64 header, below U-Boot's own copy at the top of RAM).
pub(super) const UBOOT_LOAD: u64 = 0x4800_0000;

/// Scratch RAM for the misc sector U-Boot prints.
pub(super) const UBOOT_SCRATCH: u64 = 0x4700_0000;

/// Size of U-Boot's environment (qemu_arm64_defconfig: CONFIG_ENV_SIZE).
pub(super) const UBOOT_ENV_SIZE: usize = 0x40000;

/// QEMU's flash banks on virt are 64 MiB each.
pub(super) const PFLASH_SIZE: u64 = 64 << 20;

/// The marker U-Boot's boot command prints, for the host to follow.
pub(super) const UBOOT_MARK: &str = "MOBIX-UBOOT";

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
pub(super) fn qemu_u_boot(profile: &Profile, p: &Prepared, bin: &Path, extra: &str) -> Result<Command> {
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
    let mut c = qemu_base(profile, &p.disk, &p.net, p.display)?;
    if let Some(sock) = &p.qmp {
        c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", sock.display()));
    }
    c.arg("-bios").arg(bin).arg("-drive").arg(format!("if=pflash,unit=1,format=raw,file={}", flash.display()));
    Ok(c)
}

/// What mobix's model of the bootloader would do on the phone's misc now: the slot (or
/// why none) and the 32 bytes of A/B metadata it leaves there.
pub fn model_choice(p: &Prepared) -> Result<(std::result::Result<Slot, String>, [u8; misc::CONTROL_SIZE])> {
    let raw = read_partition(&p.disk, &p.layout, "misc", misc::CONTROL_OFFSET as u64, misc::CONTROL_SIZE)?;
    let raw: [u8; misc::CONTROL_SIZE] = raw[..].try_into().expect("32 bytes");
    Ok(match misc::select_slot(&raw, true) {
        Ok(sel) => {
            let bytes = if sel.store { sel.control.clone().encode() } else { raw };
            (sel.slot.and_then(Slot::from_index).ok_or_else(|| "no bootable slot".to_string()), bytes)
        }
        Err(e) => (Err(e.to_string()), raw),
    })
}
