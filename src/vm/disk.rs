//! The emulated phone's disk: a GPT image with the profile's partitions, and reading and
//! writing partitions in it (sparse images expanded as a bootloader does). File I/O only.

use super::*;

pub(super) const MIB: u64 = 1 << 20;

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
pub(super) const UNSIZED_PARTITION: u64 = 64 * MIB;
/// Room for the state after the system image in an unsized partition holding both.
const STATE_ROOM: u64 = 256 * MIB;

/// The emulated phone's partitions: the profile's, with sizes for those it leaves open
/// (the system partition as large as the system image, with [`STATE_ROOM`] more where the
/// state follows the image; others [`UNSIZED_PARTITION`]).
pub fn emulated_partitions(profile: &Profile) -> Vec<(String, u64)> {
    let d = &profile.device;
    d.gpt_partitions()
        .into_iter()
        .map(|(name, size)| {
            let size = match size {
                0 if d.system.partition == name.as_str() && d.persistent_state_start() > 0 => {
                    d.system_image_size() + STATE_ROOM
                }
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

/// The A/B metadata of a phone whose `slot` was just flashed and made active and whose
/// other slot holds nothing: `slot` first with fresh tries, the other unbootable.
pub fn flashed_misc(slot: Slot) -> Result<[u8; misc::CONTROL_SIZE]> {
    let mut c = misc::BootloaderControl::fresh(2, slot, 7).map_err(|e| anyhow::anyhow!("{e}"))?;
    c.set_unbootable(slot.other()).map_err(|e| anyhow::anyhow!("{e}"))?;
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
