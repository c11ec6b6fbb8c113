//! The image builders: boot.img from a kernel, an initramfs and a dtb; the system
//! partition (ext4 from the closure of the generations it carries, and its Android sparse
//! form). Each output directory holds a `SHA256SUMS` so a build's manifest never rehashes
//! a gigabyte.

use super::Ctx;
use crate::format::vendor_boot::{RamdiskType, VendorBootImage, VendorRamdisk};
use crate::format::{arm64, bootimg::BootImage, bootstate, compress, fdt, sparse, vbmeta as vbmeta_fmt};
use crate::hash::{sha256_file, Hasher, Sha256Digest};
use crate::plan::{BootHeader, DtbPlan, ImageName, Planned};
use crate::profile::{Compression, DtbMode};
use crate::store::StorePath;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use mobix_bootctl::contract::{BootSpec, Generation};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ext4 image's fixed timestamp: every inode and the superblock carry it.
/// (`E2FSPROGS_FAKE_TIME=0` would mean "unset", so it is 1, as store mtimes are.)
const FS_TIME: &str = "1";

/// A writer that hashes what passes through it.
struct Hashing<W>(W, Hasher);

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn write_sums(dir: &Path, names: &[&str]) -> Result<()> {
    let mut s = String::new();
    for n in names {
        s.push_str(&format!("{}  {n}\n", sha256_file(&dir.join(n))?));
    }
    fs::write(dir.join("SHA256SUMS"), s)?;
    Ok(())
}

/// Reads an image directory's `SHA256SUMS`.
pub fn read_sums(dir: &Path) -> Result<BTreeMap<String, Sha256Digest>> {
    let f = dir.join("SHA256SUMS");
    let text = fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
    text.lines()
        .map(|l| {
            let (h, n) = l.split_once("  ").with_context(|| format!("{}: malformed line {l:?}", f.display()))?;
            let d = Sha256Digest::parse_hex(h).with_context(|| format!("{}: bad digest {h:?}", f.display()))?;
            Ok((n.to_string(), d))
        })
        .collect()
}

pub fn boot_image(
    ctx: &Ctx,
    planned: &Planned,
    h: &BootHeader,
    kernel_compression: Compression,
    dtb_plan: Option<&DtbPlan>,
    out: &Path,
) -> Result<()> {
    let kernel_dir = ctx.input(planned, "kernel")?;
    let image = fs::read(kernel_dir.join("Image"))?;
    super::check_kernel(&image)?;
    let mut kernel = compress::compress(&image, kernel_compression)?;
    let ramdisk = fs::read(ctx.input(planned, "initrd")?)?;
    // The device trees: QEMU's (the `dtb` input) or the named files of the kernel's dtbs.
    let mut dtbs = Vec::new();
    if let Some(p) = planned.recipe.inputs.get("dtb") {
        dtbs.push(fs::read(ctx.store.host_path(p))?);
    }
    for f in dtb_plan.map(|d| d.files.as_slice()).unwrap_or_default() {
        let path = kernel_dir.join("dtbs").join(f);
        let data = fs::read(&path).map_err(|e| {
            util::user_error(
                e,
                format!("device tree {f} is not among the kernel's dtbs ({})", kernel_dir.join("dtbs").display()),
            )
        })?;
        fdt::header(&data).map_err(|e| util::user_error(e, format!("device tree {f}")))?;
        dtbs.push(data);
    }
    let mode = dtb_plan.map(|d| d.mode);
    if mode.is_some_and(DtbMode::appended) {
        let refs: Vec<&[u8]> = dtbs.iter().map(|d| d.as_slice()).collect();
        kernel = arm64::append_dtbs(&kernel, &refs).map_err(|e| util::user_error(e, "appending device trees"))?;
    }
    let first = || dtbs.first().cloned().unwrap_or_default();
    let dtb = if mode.is_some_and(DtbMode::in_header) { first() } else { Vec::new() };
    let second = if mode.is_some_and(DtbMode::in_second) { first() } else { Vec::new() };
    fs::create_dir(out)?;
    let boot_name = ImageName::Boot.file_name();
    if h.header_version >= 3 {
        // As mkbootimg makes them from `--vendor_ramdisk --vendor_cmdline --dtb`: boot.img
        // holds the kernel alone; the addresses, the ramdisk, the command line and the
        // device tree go in vendor_boot.img.
        let boot = BootImage {
            header_version: h.header_version,
            page_size: crate::format::bootimg::PAGE_SIZE_V3,
            os_version: h.os_version,
            kernel,
            ..BootImage::default()
        };
        let vendor = VendorBootImage {
            header_version: h.header_version,
            page_size: h.page_size,
            kernel_addr: h.kernel_addr,
            ramdisk_addr: h.ramdisk_addr,
            cmdline: h.cmdline.clone(),
            tags_addr: h.tags_addr,
            board: h.board.clone(),
            dtb,
            dtb_addr: h.dtb_addr,
            ramdisks: vec![VendorRamdisk {
                kind: RamdiskType::Platform,
                name: String::new(),
                board_id: Default::default(),
                data: ramdisk,
            }],
            bootconfig: Vec::new(),
        };
        let vendor_name = ImageName::VendorBoot.file_name();
        fs::write(out.join(boot_name), boot.to_bytes()?)?;
        fs::write(out.join(vendor_name), vendor.to_bytes()?)?;
        return write_sums(out, &[boot_name, vendor_name]);
    }
    let img = BootImage {
        header_version: h.header_version,
        page_size: h.page_size,
        kernel_addr: h.kernel_addr,
        ramdisk_addr: if ramdisk.is_empty() { 0 } else { h.ramdisk_addr },
        second_addr: h.second_addr,
        tags_addr: h.tags_addr,
        dtb_addr: h.dtb_addr,
        os_version: h.os_version,
        board: h.board.clone(),
        cmdline: h.cmdline.clone(),
        kernel,
        ramdisk,
        second,
        dtb,
        ..BootImage::default()
    };
    fs::write(out.join(boot_name), img.to_bytes()?)?;
    write_sums(out, &[boot_name])
}

pub fn vbmeta(flags: u32, out: &Path) -> Result<()> {
    fs::create_dir(out)?;
    let name = ImageName::Vbmeta.file_name();
    fs::write(out.join(name), vbmeta_fmt::disabled(flags, vbmeta_fmt::DEFAULT_RELEASE, 4096)?)?;
    write_sums(out, &[name])
}

/// A UUID (RFC 4122 version 4 layout) derived from a store path: fixed for fixed inputs.
fn uuid_from(p: &StorePath) -> String {
    let d = Sha256Digest::of(p.base_name().as_bytes());
    let mut b: [u8; 16] = d.bytes()[..16].try_into().unwrap();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Explicit ext4 features, so that the host's /etc/mke2fs.conf does not shape the image.
/// The journal is not zeroed (`lazy_journal_init`): it is made in a new file, whose holes
/// read as zeros, so the image is the same bytes without writing them (checked against
/// images made with it zeroed: the minimal and the README's systemd system).
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 0
\tlazy_itable_init = 0
\tlazy_journal_init = 1
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// The system partition: a filesystem over all but its last 64 KiB, which hold two copies
/// of the boot-state record `state`.
pub fn system_image(
    ctx: &Ctx,
    planned: &Planned,
    size: u64,
    filesystem: crate::profile::Filesystem,
    gens: &BTreeMap<u32, StorePath>,
    state: &bootstate::Record,
    out: &Path,
) -> Result<()> {
    if size <= bootstate::AREA + (1 << 20) {
        return Err(Fail::new(format!("a system partition of {size} bytes is too small for a filesystem"))
            .hint("give `system.size` (or the system partition's size) room for the system's closure")
            .into());
    }
    let fs_size = size - bootstate::AREA;
    let roots: Vec<StorePath> = gens.values().cloned().collect();
    let closure = ctx.store.closure(&roots)?;
    let t0 = std::time::Instant::now();
    let step = |what: &str| {
        if std::env::var_os("MOBIX_TIMING").is_some() {
            ctx.progress.note(&format!("  system image: {what} at {:.2}s", t0.elapsed().as_secs_f64()));
        }
    };
    fs::create_dir(out)?;
    let work = out.parent().context("output has a parent")?;
    let root = work.join("rootfs");
    let store_dir = root.join("mobix/store");
    let gen_dir = root.join("mobix/generations");
    fs::create_dir_all(&store_dir)?;
    fs::create_dir_all(&gen_dir)?;
    for p in &closure {
        match filesystem {
            // Links, not copies: mke2fs only reads them, and `ext4` gives the image's files
            // the owner-writable modes copies would have had (the image is as before).
            crate::profile::Filesystem::Ext4 => {
                util::link_tree(&ctx.store.host_path(p), &store_dir.join(p.base_name()))?
            }
            crate::profile::Filesystem::Erofs => {
                util::copy_tree(&ctx.store.host_path(p), &store_dir.join(p.base_name()))?
            }
        }
    }
    for (n, top) in gens {
        let boot_json = ctx.store.host_path(top).join("boot.json");
        let boot: BootSpec =
            serde_json::from_slice(&fs::read(&boot_json).with_context(|| format!("reading {}", boot_json.display()))?)
                .with_context(|| format!("parsing {}", boot_json.display()))?;
        // No date: the same inputs must give the same image (a deploy's entries carry one).
        let e = Generation {
            generation: *n,
            toplevel: top.phone_path(),
            kernel: boot.kernel,
            cmdline: boot.cmdline,
            created: 0,
        };
        fs::write(gen_dir.join(format!("{n}.json")), serde_json::to_string_pretty(&e)? + "\n")?;
    }
    step("closure copied");
    let uuid = uuid_from(&planned.path);
    let raw = match filesystem {
        crate::profile::Filesystem::Ext4 => ext4(work, &root, &uuid, fs_size, &step)?,
        crate::profile::Filesystem::Erofs => erofs(work, &root, &uuid, fs_size)?,
    };
    step("filesystem checked");
    let block = state.encode().context("encoding the boot-state record")?;
    let mut f = fs::OpenOptions::new().write(true).open(&raw)?;
    f.set_len(size)?;
    f.seek(std::io::SeekFrom::Start(fs_size))?;
    f.write_all(&block)?;
    f.write_all(&block)?;
    drop(f);
    let sparse_path = out.join(ImageName::System.file_name());
    let input = util::map_file(&raw)?;
    // The raw image is a sparse file, mostly holes: the encoder is told where they are
    // rather than reading a gigabyte of zeros (the same bytes either way).
    let holes = util::hole_ranges(&fs::File::open(&raw)?, 0, size);
    // Its digest is taken as it is written, rather than by reading it back.
    let mut w = Hashing(BufWriter::with_capacity(1 << 20, fs::File::create(&sparse_path)?), Hasher::new());
    sparse::encode_slice_with_holes(&input, 4096, sparse::Zeros::Fill, &holes, &mut w)?;
    w.0.flush()?;
    let digest = w.1.finish();
    step("sparse written");
    util::remove_tree(&root)?;
    fs::remove_file(&raw)?;
    fs::write(out.join("SHA256SUMS"), format!("{digest}  {}\n", ImageName::System.file_name()))?;
    step("digests written");
    Ok(())
}

/// The ext4 filesystem of `root`, `fs_size` bytes, reproducible: fixed UUID, hash seed and
/// times, owners root (checked by e2fsck).
fn ext4(work: &Path, root: &Path, uuid: &str, fs_size: u64, step: &dyn Fn(&str)) -> Result<PathBuf> {
    let conf = work.join("mke2fs.conf");
    fs::write(&conf, MKE2FS_CONF)?;
    // The raw filesystem is only a step: the store keeps the sparse image (simg2img or
    // `mobix inspect sparse unpack` give the raw one back).
    let raw = work.join("system.ext4");
    // One inode per 16 KiB (MKE2FS_CONF's inode_ratio) runs out on a small partition
    // carrying generations of many small files (systemd's closure has thousands): then ask
    // for what the tree needs, with room to spare. The images that had enough stay as they were.
    let mut entries: u64 = 0;
    util::walk(root, &mut |_, _| {
        entries += 1;
        Ok(true)
    })?;
    let needed = entries + entries / 8 + 64;
    let mut mke2fs = Command::new("mke2fs");
    if needed > fs_size / 16384 {
        mke2fs.arg("-N").arg(needed.to_string());
    }
    util::run(
        mke2fs
            .env("MKE2FS_CONFIG", &conf)
            .env("E2FSPROGS_FAKE_TIME", FS_TIME)
            .args(["-q", "-t", "ext4", "-L", "system", "-U", uuid])
            .arg("-E")
            .arg(format!("hash_seed={uuid},root_owner=0:0"))
            .arg("-d")
            .arg(root)
            .arg("-F")
            .arg(&raw)
            .arg(format!("{}k", fs_size / 1024)),
    )
    .map_err(|e| {
        // Full: the closure fitted the size but not with the filesystem's own tables.
        let full = format!("{e:#}");
        match full.contains("Could not allocate") || full.contains("No space left") {
            true => e.context(
                Fail::new(format!("the system's files do not fit in a filesystem of {} MiB", fs_size >> 20))
                    .hint("give `system.size` more room, or carry fewer generations (`generations.keep`)"),
            ),
            false => e,
        }
    })?;
    step("mke2fs done");
    // mke2fs -d copies owners, atime and ctime (which no one can set on the host) from the
    // host tree, and mtime of the few directories made here: pin what differs. crtime is
    // E2FSPROGS_FAKE_TIME already.
    let fs_time: i64 = FS_TIME.parse().expect("a number");
    let mut cmds = String::new();
    let mut sif = |p: &str, m: Option<&fs::Metadata>| {
        use std::os::unix::fs::MetadataExt;
        for f in ["atime", "ctime"] {
            cmds.push_str(&format!("sif \"{p}\" {f} {FS_TIME}\n"));
        }
        // A file linked from the store keeps its read-only mode; the image's files are
        // owner-writable, as copies of them were (`util::link_tree`).
        if let Some(m) = m.filter(|m| m.is_file() && m.mode() & 0o200 == 0) {
            cmds.push_str(&format!("sif \"{p}\" mode 0{:o}\n", m.mode() | 0o200));
        }
        if m.is_none_or(|m| m.mtime() != fs_time) {
            cmds.push_str(&format!("sif \"{p}\" mtime {FS_TIME}\n"));
        }
        if m.is_none_or(|m| m.uid() != 0 || m.gid() != 0) {
            cmds.push_str(&format!("sif \"{p}\" uid 0\nsif \"{p}\" gid 0\n"));
        }
    };
    sif("/", None);
    sif("/lost+found", None);
    util::walk(root, &mut |rel, m| {
        sif(&format!("/{rel}"), Some(m));
        Ok(true)
    })?;
    let cmdfile = work.join("debugfs.cmds");
    fs::write(&cmdfile, cmds)?;
    util::run(Command::new("debugfs").env("E2FSPROGS_FAKE_TIME", FS_TIME).arg("-w").arg("-f").arg(&cmdfile).arg(&raw))?;
    step("debugfs done");
    util::run(Command::new("e2fsck").args(["-fn"]).arg(&raw)).context("the new system image failed e2fsck")?;
    Ok(raw)
}

/// The erofs filesystem of `root` (uncompressed), reproducible: fixed UUID, every time 0,
/// owners root (checked by fsck.erofs). Refused if it does not fit in `fs_size` bytes.
fn erofs(work: &Path, root: &Path, uuid: &str, fs_size: u64) -> Result<PathBuf> {
    let raw = work.join("system.erofs");
    util::run(
        Command::new("mkfs.erofs").args(["--quiet", "-T0", "--all-root"]).arg(format!("-U{uuid}")).arg(&raw).arg(root),
    )?;
    util::run(Command::new("fsck.erofs").arg(&raw)).context("the new system image failed fsck.erofs")?;
    let len = fs::metadata(&raw)?.len();
    if len > fs_size {
        return Err(Fail::new(format!(
            "the system's erofs image is {len} bytes, more than the {fs_size} the partition leaves for it"
        ))
        .hint("carry fewer generations (generations.keep) or give `system.size` more room")
        .into());
    }
    Ok(raw)
}
