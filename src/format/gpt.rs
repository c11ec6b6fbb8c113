//! GUID partition tables of whole-disk images, written and read through `gptman`.
//!
//! Pipeline stage: format (pure over a stream). Input: a [`Table`] (named partitions with
//! type GUIDs and attribute bits) and any `Read + Write + Seek` the size of the disk;
//! output: the protective MBR, primary and backup GPT written into it. And back.
//! Android bootloaders find partitions by name (`boot_a`, `misc`, `userdata`), not by type.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};

/// A GUID, displayed and parsed as `8-4-4-4-12` text; stored on disk with its first three
/// fields little-endian (the "mixed-endian" GPT form).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub fn parse(s: &str) -> Option<Guid> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let dashes: Vec<usize> = s.match_indices('-').map(|(i, _)| i).collect();
        if hex.len() != 32 || dashes != [8, 13, 18, 23] || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let b: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
        let mut out = [0u8; 16];
        out[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        out[4..6].copy_from_slice(&[b[5], b[4]]);
        out[6..8].copy_from_slice(&[b[7], b[6]]);
        out[8..16].copy_from_slice(&b[8..16]);
        Some(Guid(out))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

pub const LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The Android type GUID gdisk knows for a partition name (slot suffix ignored), or Linux
/// data. Vendor phones may use others; a profile can name the type explicitly.
pub fn android_type_for(name: &str) -> Guid {
    let base = name.strip_suffix("_a").or_else(|| name.strip_suffix("_b")).unwrap_or(name);
    let text = match base {
        "boot" => "49A4D17F-93A3-45C1-A0DE-F50B2EBE2599",
        "recovery" => "4177C722-9E92-4AAB-8644-43502BFD5506",
        "misc" => "EF32A33B-A409-486C-9141-9FFB711F6266",
        "metadata" => "20AC26BE-20B7-11E3-84C5-6CFDB94711E9",
        "system" => "38F428E6-D326-425D-9140-6E0EA133647C",
        "cache" => "A893EF21-E428-470A-9E55-0668FD91A2D9",
        "userdata" => "DC76DDA9-5AC1-491C-AF42-A82591580C0D",
        "vendor" => "C5A0AEEC-13EA-11E5-A1B1-001E67CA0C3C",
        _ => LINUX_DATA,
    };
    Guid::parse(text).expect("valid constant")
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Partition {
    pub name: String,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    /// First and last sector, inclusive (as GPT stores them).
    pub first_lba: u64,
    pub last_lba: u64,
    /// Attribute bits (Qualcomm keeps A/B state in bits 48-55 of boot_a/boot_b).
    pub attributes: u64,
}

impl Partition {
    pub fn offset(&self, sector_size: u64) -> u64 {
        self.first_lba * sector_size
    }
    pub fn size(&self, sector_size: u64) -> u64 {
        (self.last_lba + 1 - self.first_lba) * sector_size
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    pub sector_size: u64,
    pub disk_guid: Guid,
    /// In table order (entry 1 first).
    pub partitions: Vec<Partition>,
}

/// A partition to place: name, size in bytes, type and attributes.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    pub size: u64,
    pub type_guid: Guid,
    pub attributes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sector size {0} is not 512 or 4096")]
    BadSectorSize(u64),
    #[error("partition {name}: size {size} is not a positive multiple of the sector size {sector_size}")]
    BadSize { name: String, size: u64, sector_size: u64 },
    #[error("partition name {0:?} is longer than the 36 UTF-16 units GPT holds")]
    NameTooLong(String),
    #[error("partitions need {need} bytes, but the disk has {have}")]
    DiskTooSmall { need: u64, have: u64 },
    #[error("partition {name}: first sector {first} is after its last sector {last}")]
    BadRange { name: String, first: u64, last: u64 },
    #[error("more than 128 partitions")]
    TooManyPartitions,
    #[error("writing the partition table: {0}")]
    Write(gptman::Error),
    #[error("reading the partition table: {0}")]
    Read(gptman::Error),
    #[error("GPT header at byte {offset} claims {entries} entries of {entry_size} bytes, more than the {len}-byte disk holds")]
    AbsurdHeader { offset: u64, entries: u32, entry_size: u32, len: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The bytes a disk needs for `requests` laid out with `align`-byte alignment: GPT
/// structures at both ends included.
pub fn disk_size_for(requests: &[Request], align: u64) -> u64 {
    let data: u64 = requests.iter().map(|r| r.size.div_ceil(align) * align).sum();
    data + 2 * align.max(1 << 20)
}

/// Partitions `disk` (of `disk_size` bytes; any `Read + Write + Seek`) with `requests` in
/// order, each starting on an `align`-byte boundary. Unique GUIDs are derived from
/// `disk_guid` and the entry number, so the same request gives the same bytes.
pub fn create<D: Read + Write + Seek>(
    disk: &mut D,
    disk_size: u64,
    sector_size: u64,
    disk_guid: Guid,
    align: u64,
    requests: &[Request],
) -> Result<Table, Error> {
    if sector_size != 512 && sector_size != 4096 {
        return Err(Error::BadSectorSize(sector_size));
    }
    if requests.len() > 128 {
        return Err(Error::TooManyPartitions);
    }
    for r in requests {
        if r.size == 0 || r.size % sector_size != 0 {
            return Err(Error::BadSize { name: r.name.clone(), size: r.size, sector_size });
        }
        if r.name.encode_utf16().count() > 36 {
            return Err(Error::NameTooLong(r.name.clone()));
        }
    }
    let need = disk_size_for(requests, align);
    if need > disk_size {
        return Err(Error::DiskTooSmall { need, have: disk_size });
    }
    // gptman reads the device size through Seek::End.
    disk.seek(SeekFrom::Start(disk_size - 1))?;
    let mut last = [0u8; 1];
    if disk.read(&mut last)? == 0 {
        disk.seek(SeekFrom::Start(disk_size - 1))?;
        disk.write_all(&[0])?;
    }
    // Placement only: gptman finds each aligned gap; `write` then writes the table.
    let mut gpt = gptman::GPT::new_from(disk, sector_size, disk_guid.0).map_err(Error::Write)?;
    gpt.align = (align / sector_size).max(1);
    let mut partitions = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let sectors = r.size / sector_size;
        let start = gpt.find_first_place(sectors).ok_or(Error::DiskTooSmall { need, have: disk_size })?;
        let mut unique = disk_guid.0;
        unique[15] = unique[15].wrapping_add(i as u8 + 1);
        let p = Partition {
            name: r.name.clone(),
            type_guid: r.type_guid,
            unique_guid: Guid(unique),
            first_lba: start,
            last_lba: start + sectors - 1,
            attributes: r.attributes,
        };
        gpt[i as u32 + 1] = entry(&p);
        partitions.push(p);
    }
    let table = Table { sector_size, disk_guid, partitions };
    write(disk, &table)?;
    Ok(table)
}

fn entry(p: &Partition) -> gptman::GPTPartitionEntry {
    gptman::GPTPartitionEntry {
        partition_type_guid: p.type_guid.0,
        unique_partition_guid: p.unique_guid.0,
        starting_lba: p.first_lba,
        ending_lba: p.last_lba,
        attribute_bits: p.attributes,
        partition_name: p.name.as_str().into(),
    }
}

/// Writes `table` into `disk` (already the disk's size) exactly as given: each partition
/// at the sectors it names, in table order, with the protective MBR and both headers.
pub fn write<D: Read + Write + Seek>(disk: &mut D, table: &Table) -> Result<(), Error> {
    let ss = table.sector_size;
    if ss != 512 && ss != 4096 {
        return Err(Error::BadSectorSize(ss));
    }
    if table.partitions.len() > 128 {
        return Err(Error::TooManyPartitions);
    }
    let mut gpt = gptman::GPT::new_from(disk, ss, table.disk_guid.0).map_err(Error::Write)?;
    for (i, p) in table.partitions.iter().enumerate() {
        if p.name.encode_utf16().count() > 36 {
            return Err(Error::NameTooLong(p.name.clone()));
        }
        if p.first_lba > p.last_lba {
            return Err(Error::BadRange { name: p.name.clone(), first: p.first_lba, last: p.last_lba });
        }
        gpt[i as u32 + 1] = entry(p);
    }
    gpt.write_into(disk).map_err(Error::Write)?;
    gptman::GPT::write_protective_mbr_into(disk, ss).map_err(Error::Write)?;
    disk.flush()?;
    Ok(())
}

/// Refuses headers whose entry array could not fit the disk, before gptman allocates it:
/// the primary header at LBA 1 and the backup at the last LBA, for each sector size.
fn check_headers<D: Read + Seek>(disk: &mut D) -> Result<(), Error> {
    let len = disk.seek(SeekFrom::End(0))?;
    for ss in [512u64, 4096] {
        for offset in [ss, len.saturating_sub(ss)] {
            if offset + 92 > len {
                continue;
            }
            let mut h = [0u8; 92];
            disk.seek(SeekFrom::Start(offset))?;
            disk.read_exact(&mut h)?;
            if &h[..8] != b"EFI PART" {
                continue;
            }
            let entries = u32::from_le_bytes(h[80..84].try_into().unwrap());
            let entry_size = u32::from_le_bytes(h[84..88].try_into().unwrap());
            if entries as u64 * entry_size as u64 > len || entry_size < 128 {
                return Err(Error::AbsurdHeader { offset, entries, entry_size, len });
            }
        }
    }
    disk.seek(SeekFrom::Start(0))?;
    Ok(())
}

/// Reads the partition table (the backup header if the primary is damaged). With no sector
/// size given, 512 and 4096 are tried.
pub fn read<D: Read + Seek>(disk: &mut D, sector_size: Option<u64>) -> Result<Table, Error> {
    check_headers(disk)?;
    let gpt = match sector_size {
        Some(ss) => gptman::GPT::read_from(disk, ss),
        None => gptman::GPT::find_from(disk),
    }
    .map_err(Error::Read)?;
    let partitions = gpt
        .iter()
        .filter(|(_, e)| e.is_used())
        .map(|(_, e)| Partition {
            name: e.partition_name.as_str().to_string(),
            type_guid: Guid(e.partition_type_guid),
            unique_guid: Guid(e.unique_partition_guid),
            first_lba: e.starting_lba,
            last_lba: e.ending_lba,
            attributes: e.attribute_bits,
        })
        .collect();
    Ok(Table { sector_size: gpt.sector_size, disk_guid: Guid(gpt.header.disk_guid), partitions })
}

impl Table {
    pub fn find(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn req(name: &str, size: u64, attributes: u64) -> Request {
        Request { name: name.into(), size, type_guid: android_type_for(name), attributes }
    }

    #[test]
    fn guid_text_round_trip_and_mixed_endian() {
        let g = Guid::parse("49A4D17F-93A3-45C1-A0DE-F50B2EBE2599").unwrap();
        assert_eq!(&g.0[..4], &[0x7f, 0xd1, 0xa4, 0x49]);
        assert_eq!(g.to_string(), "49A4D17F-93A3-45C1-A0DE-F50B2EBE2599");
        assert!(Guid::parse("49A4D17F93A345C1A0DEF50B2EBE2599").is_none());
        assert!(Guid::parse("49A4D17F-93A3-45C1-A0DE-F50B2EBE25ZZ").is_none());
    }

    #[test]
    fn create_and_read_back_deterministically() {
        let reqs =
            [req("misc", 1 << 20, 0), req("boot_a", 8 << 20, 0x003f_0000_0000_0000), req("userdata", 4 << 20, 0)];
        let size = disk_size_for(&reqs, 1 << 20);
        let guid = Guid::parse("6D6F6269-7800-4000-8000-000000000001").unwrap();
        let mut a = Cursor::new(vec![0u8; size as usize]);
        let t = create(&mut a, size, 512, guid, 1 << 20, &reqs).unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.find("boot_a").unwrap().attributes, 0x003f_0000_0000_0000);
        assert_eq!(t.find("misc").unwrap().offset(512), 1 << 20);
        assert_eq!(t.find("userdata").unwrap().size(512), 4 << 20);
        assert_eq!(read(&mut a, None).unwrap(), t);
        let mut b = Cursor::new(vec![0u8; size as usize]);
        create(&mut b, size, 512, guid, 1 << 20, &reqs).unwrap();
        let (a, b) = (a.into_inner(), b.into_inner());
        assert!(a == b, "same request, same bytes");
        // Golden: the layout of every disk mobix makes.
        use sha2::{Digest, Sha256};
        assert_eq!(format!("{:x}", Sha256::digest(&a)), GOLDEN_DISK, "GPT writer output changed");
    }

    const GOLDEN_DISK: &str = "0ee8400e7c561b9e873f10aa5f00c06bc6fd8f0df57e94f648d9ce5ebc04a33f";

    #[test]
    fn hostile_entry_counts_are_refused_before_allocating() {
        let reqs = [req("misc", 1 << 20, 0)];
        let size = disk_size_for(&reqs, 1 << 20);
        let mut d = Cursor::new(vec![0u8; size as usize]);
        create(&mut d, size, 512, Guid::default(), 1 << 20, &reqs).unwrap();
        let mut bytes = d.into_inner();
        bytes[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read(&mut Cursor::new(bytes), None), Err(Error::AbsurdHeader { .. })));
    }

    #[test]
    fn refusals() {
        let guid = Guid::default();
        let mut d = Cursor::new(vec![0u8; 4 << 20]);
        assert!(matches!(
            create(&mut d, 4 << 20, 512, guid, 1 << 20, &[req("big", 64 << 20, 0)]),
            Err(Error::DiskTooSmall { .. })
        ));
        assert!(matches!(
            create(&mut d, 4 << 20, 512, guid, 1 << 20, &[req("odd", 1000, 0)]),
            Err(Error::BadSize { .. })
        ));
        assert!(matches!(create(&mut d, 4 << 20, 1024, guid, 1 << 20, &[]), Err(Error::BadSectorSize(1024))));
        let mut garbage = Cursor::new(vec![0x5au8; 1 << 20]);
        assert!(read(&mut garbage, None).is_err());
    }
}
