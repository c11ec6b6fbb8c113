//! The phone on the desk: the built images booted in QEMU aarch64.
//!
//! Pipeline stage: vm. Input: the out directory of a build (manifest, boot.img,
//! system.img) and the device profile; output: a GPT disk laid out as the profile says,
//! and a QEMU run on it. The kernel, ramdisk, dtb and command line come out of boot.img
//! through mobix's own boot image reader, as a bootloader would take them; the system
//! partition is written from the sparse image through mobix's own sparse reader.

use crate::format::bootimg::BootImage;
use crate::format::gpt;
use crate::format::sparse;
use crate::image::{self, Manifest};
use crate::profile::Profile;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The line stage-2 prints once the system is up.
pub const BOOT_COMPLETE: &str = "mobix: boot-complete";
/// Kernel argument asking stage-2 to power off after boot-complete.
pub const POWEROFF_ARG: &str = "mobix.poweroff";

const MIB: u64 = 1 << 20;

/// Where each partition landed on the disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub sector_size: u64,
    /// (GPT name, first byte, size in bytes), in profile order.
    pub partitions: Vec<(String, u64, u64)>,
    pub disk_size: u64,
}

impl Layout {
    pub fn find(&self, name: &str) -> Option<(u64, u64)> {
        self.partitions.iter().find(|p| p.0 == name).map(|p| (p.1, p.2))
    }
}

/// Creates an empty disk image with the profile's GPT (partitions 1 MiB aligned).
pub fn create_disk(profile: &Profile, path: &Path) -> Result<Layout> {
    let d = &profile.device;
    let ss = d.storage.sector_size as u64;
    let requests: Vec<gpt::Request> = d
        .gpt_partitions()
        .into_iter()
        .map(|(name, size)| gpt::Request { type_guid: gpt::android_type_for(&name), name, size, attributes: 0 })
        .collect();
    let disk_size = gpt::disk_size_for(&requests, MIB);
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
    let partitions = table.partitions.iter().map(|p| (p.name.clone(), p.offset(ss), p.size(ss))).collect();
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

/// Expands a sparse image into partition `name` of a freshly created (all-zero) disk.
/// Zero fills and don't-care regions stay holes.
pub fn write_sparse_partition(disk: &Path, layout: &Layout, name: &str, sparse_img: &Path) -> Result<()> {
    let (start, size) = layout.find(name).with_context(|| format!("the disk has no partition {name}"))?;
    let input = std::io::BufReader::new(
        fs::File::open(sparse_img).with_context(|| format!("opening {}", sparse_img.display()))?,
    );
    let mut f = fs::OpenOptions::new().write(true).open(disk)?;
    let res = sparse::decode(input, |op| {
        let (off, len) = match &op {
            sparse::Op::Data { offset, data } => (*offset, data.len() as u64),
            sparse::Op::Fill { offset, len, .. } | sparse::Op::DontCare { offset, len } => (*offset, *len),
        };
        if off + len > size {
            return Err(std::io::Error::other(format!("image is larger than the {size}-byte partition {name}")));
        }
        match op {
            sparse::Op::Data { offset, data } => {
                f.seek(SeekFrom::Start(start + offset))?;
                f.write_all(data)
            }
            sparse::Op::Fill { offset, len, value } if value != 0 => {
                f.seek(SeekFrom::Start(start + offset))?;
                let pat: Vec<u8> =
                    value.to_le_bytes().iter().copied().cycle().take(len.min(1 << 20) as usize).collect();
                let mut left = len;
                while left > 0 {
                    let n = left.min(pat.len() as u64) as usize;
                    f.write_all(&pat[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    });
    res.map_err(|e| util::user_error(e, format!("writing {} into partition {name}", sparse_img.display())))?;
    Ok(())
}

/// Everything a QEMU run needs, prepared in `<out>/vm/`.
pub struct Prepared {
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub dtb: Option<PathBuf>,
    pub cmdline: String,
    pub manifest: Manifest,
}

/// Builds the phone's disk from the out directory and unpacks boot.img for QEMU.
pub fn prepare(profile: &Profile, out: &Path) -> Result<Prepared> {
    let manifest = image::load_manifest(out)?;
    if manifest.device != profile.codename.as_str() || manifest.variant != profile.variant {
        return Err(Fail::new(format!(
            "{} holds a build for {}, not {}",
            out.display(),
            manifest.device,
            profile.codename
        ))
        .into());
    }
    let boot_path = image::image_file(out, &manifest, "boot.img")?;
    let system_path = image::image_file(out, &manifest, "system.img")?;
    let boot_bytes = fs::read(&boot_path).with_context(|| format!("reading {}", boot_path.display()))?;
    prepare_from(profile, &out.join("vm"), &boot_bytes, &system_path, manifest)
        .with_context(|| format!("preparing the emulated phone from {}", out.display()))
}

/// Prepares a run in `dir` from a boot image and a sparse system image: the disk as a
/// freshly flashed phone has it, and what a bootloader takes out of boot.img.
pub fn prepare_from(
    profile: &Profile,
    dir: &Path,
    boot_bytes: &[u8],
    system_img: &Path,
    manifest: Manifest,
) -> Result<Prepared> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let boot = BootImage::parse(boot_bytes).map_err(|e| util::user_error(e, "reading the boot image"))?;
    let disk = dir.join("disk.img");
    let layout = create_disk(profile, &disk)?;
    let slot_boot = if profile.device.is_ab() { "boot_a" } else { "boot" };
    write_partition(&disk, &layout, slot_boot, boot_bytes)?;
    write_sparse_partition(&disk, &layout, &profile.device.system.partition, system_img)?;
    let kernel = dir.join("kernel");
    let initrd = dir.join("initrd");
    fs::write(&kernel, &boot.kernel)?;
    fs::write(&initrd, &boot.ramdisk)?;
    let dtb = if boot.dtb.is_empty() {
        None
    } else {
        let p = dir.join("dtb");
        fs::write(&p, &boot.dtb)?;
        Some(p)
    };
    Ok(Prepared { dir: dir.to_path_buf(), disk, kernel, initrd, dtb, cmdline: boot.cmdline, manifest })
}

/// The QEMU command line for a prepared run.
pub fn qemu_command(profile: &Profile, p: &Prepared, cmdline: &str) -> Result<Command> {
    let q = profile.device.qemu.as_ref().ok_or_else(|| {
        Fail::new(format!("device {} cannot be emulated (its profile has no qemu section)", profile.codename))
    })?;
    let mut c = Command::new("qemu-system-aarch64");
    c.args(["-M", &q.machine, "-cpu", &q.cpu, "-m", &q.memory_mib.to_string(), "-smp", &q.smp.to_string()])
        .args(["-nographic", "-nic", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&p.kernel)
        .arg("-initrd")
        .arg(&p.initrd)
        .arg("-append")
        .arg(cmdline)
        .arg("-drive")
        .arg(format!("if=none,id=disk0,format=raw,file={}", p.disk.display()))
        .arg("-device")
        .arg(format!("{},drive=disk0", q.disk.qemu_device()));
    if let Some(dtb) = &p.dtb {
        c.arg("-dtb").arg(dtb);
    }
    Ok(c)
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

/// Boots the prepared disk and waits for boot-complete.
pub fn test(profile: &Profile, p: &Prepared, timeout: Duration, progress: &dyn Fn(&str)) -> Result<TestOutcome> {
    let cmdline = format!("{} {POWEROFF_ARG}", p.cmdline);
    let mut cmd = qemu_command(profile, p, &cmdline)?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let shown = util::show_command(&cmd);
    let log_path = p.dir.join("serial.log");
    let mut log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    writeln!(log, "# {shown}")?;
    let t0 = Instant::now();
    let mut child =
        cmd.spawn().map_err(|e| util::user_error(e, "starting qemu-system-aarch64 (package qemu-system-arm)"))?;
    // QEMU has its own process group (so a timeout can kill all of it); if mobix itself is
    // interrupted, take that group down too instead of leaving QEMU running.
    let _guard = interrupt::KillGroupOnSignal::new(child.id());
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
    drop(tx);
    progress(&format!(
        "booting {} in QEMU (timeout {}s, serial log {})",
        profile.codename,
        timeout.as_secs(),
        log_path.display()
    ));
    let mut outcome = TestOutcome {
        version: 1,
        passed: false,
        generation: None,
        toplevel: None,
        seconds: 0.0,
        serial_log: log_path.clone(),
        reason: String::new(),
    };
    let mut tail: Vec<String> = Vec::new();
    let deadline = t0 + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            outcome.reason = format!("no boot-complete line within {}s", timeout.as_secs());
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                tail.push(line.clone());
                if tail.len() > 30 {
                    tail.remove(0);
                }
                if let Some(rest) = line.find(BOOT_COMPLETE).map(|i| &line[i + BOOT_COMPLETE.len()..]) {
                    for kv in rest.split_whitespace() {
                        match kv.split_once('=') {
                            Some(("generation", v)) => outcome.generation = v.parse().ok(),
                            Some(("toplevel", v)) => outcome.toplevel = Some(v.to_string()),
                            _ => {}
                        }
                    }
                    outcome.seconds = t0.elapsed().as_secs_f64();
                    let want_top = p.manifest.toplevel.phone_path();
                    if outcome.generation == Some(p.manifest.generation)
                        && outcome.toplevel.as_deref() == Some(want_top.as_str())
                    {
                        outcome.passed = true;
                        outcome.reason = "boot-complete".into();
                    } else {
                        outcome.reason = format!(
                            "booted generation {:?} toplevel {:?}, expected generation {} toplevel {want_top}",
                            outcome.generation, outcome.toplevel, p.manifest.generation
                        );
                    }
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                outcome.reason = format!("QEMU exited ({status}) before boot-complete");
                break;
            }
        }
    }
    if outcome.passed {
        // Stage-2 powers off when asked; give it a moment to do so cleanly, and record it.
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => writeln!(log, "{line}")?,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(_) => {}
            }
        }
    }
    kill_group(&mut child);
    if !outcome.passed {
        outcome.reason = format!("{}; the serial log ends with:\n{}", outcome.reason, tail.join("\n"));
    }
    Ok(outcome)
}

/// Boots the prepared disk with the console attached to this terminal.
pub fn run(profile: &Profile, p: &Prepared, extra_cmdline: &str) -> Result<std::process::ExitStatus> {
    let cmdline = if extra_cmdline.is_empty() { p.cmdline.clone() } else { format!("{} {extra_cmdline}", p.cmdline) };
    let mut cmd = qemu_command(profile, p, &cmdline)?;
    eprintln!("mobix: {} (quit with Ctrl-A X)", util::show_command(&cmd));
    cmd.status().map_err(|e| util::user_error(e, "starting qemu-system-aarch64 (package qemu-system-arm)"))
}
