//! The boot-state record stage-1 keeps on the phone: per generation its status (trial with
//! tries left, good, bad), the default, and what was booted. One 4 KiB block, two copies;
//! the reader takes the valid copy with the highest sequence number, the writer writes the
//! other copy with the next one, so a write torn by a crash leaves the older copy intact.
//!
//! Pipeline stage: format (pure). Layout (little-endian): magic "PHGEN\0\1", version u16, seq u64,
//! default_gen u32, booted_gen u32, last_good[2] u32, pending_slot {from u8, to u8,
//! gen u32, valid u8}, entry count u8, entries {gen u32, id [16]u8, kernel_slot u8,
//! tries_left u8, tries_done u8, status u8, bad_reason u8} (at most 32), then CRC-32 (as
//! zlib computes it, like `bootloader_control`) of everything before it.

use crate::contract::Slot;
use crate::crc32::crc32;

pub const BLOCK: usize = 4096;
pub const MAGIC: &[u8; 7] = b"PHGEN\0\x01";
pub const VERSION: u16 = 1;
pub const MAX_ENTRIES: usize = 32;
/// The state area at the end of the system partition, outside its filesystem: copy A at
/// its start, copy B right after it; the rest is reserved.
pub const AREA: u64 = 64 * 1024;

/// A generation's identity in the record: the first 16 characters of its toplevel's hash
/// part (the name of `/mobix/store/<hash>-<name>`), so that a renumbered generation is
/// never mistaken for another.
pub fn id_of(toplevel_base_name: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    for (d, s) in id.iter_mut().zip(toplevel_base_name.bytes().take_while(|&c| c != b'-')) {
        *d = s;
    }
    id
}
const ENTRY_LEN: usize = 4 + 16 + 5;
const HEADER_LEN: usize = 7 + 2 + 8 + 4 + 4 + 8 + 7 + 1;

/// A generation's standing; a bad one carries why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Trial,
    Good,
    Bad(BadReason),
}

impl Status {
    pub fn is_bad(self) -> bool {
        matches!(self, Status::Bad(_))
    }

    /// `trial`, `good` or `bad`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Trial => "trial",
            Status::Good => "good",
            Status::Bad(_) => "bad",
        }
    }
}

/// Why a generation became bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReason {
    /// A record written without a reason (older versions, or by hand).
    Unspecified,
    /// Its tries ran out without a blessing (crash, hang, failed health check).
    Tries,
    /// The bootloader went back to the old slot: the new kernel did not come up.
    Kernel,
    /// Marked bad by hand (`mobix-bless bad`).
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub generation: u32,
    /// The first 16 bytes of the toplevel's hash part: the generation's identity.
    pub id: [u8; 16],
    /// The A/B slot whose kernel this generation runs with (a byte on the wire, 0 = a).
    pub kernel_slot: Slot,
    pub tries_left: u8,
    pub tries_done: u8,
    pub status: Status,
}

impl BadReason {
    /// `tries`, `kernel`, `user` (and `none` for a reason never written).
    pub fn name(self) -> &'static str {
        match self {
            BadReason::Unspecified => "none",
            BadReason::Tries => "tries",
            BadReason::Kernel => "kernel",
            BadReason::User => "user",
        }
    }
}

/// In JSON an entry keeps the shape it always had (a `status` and a `bad_reason` field):
/// the host's recipes hash it.
impl serde::Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Wire {
            generation: u32,
            id: [u8; 16],
            kernel_slot: Slot,
            tries_left: u8,
            tries_done: u8,
            status: &'static str,
            bad_reason: &'static str,
        }
        Wire {
            generation: self.generation,
            id: self.id,
            kernel_slot: self.kernel_slot,
            tries_left: self.tries_left,
            tries_done: self.tries_done,
            status: self.status.name(),
            bad_reason: match self.status {
                Status::Bad(r) => r.name(),
                _ => "none",
            },
        }
        .serialize(s)
    }
}

/// A kernel update on its way: the phone left slot `from` for `to` to boot `generation`.
/// On the wire and in JSON the slots are bytes (0 = a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PendingSlot {
    pub from: Slot,
    pub to: Slot,
    pub generation: u32,
    pub valid: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    pub seq: u64,
    /// What an unattended boot tries first (0: none, newest first).
    pub default_gen: u32,
    /// Written by stage-1 before switch_root.
    pub booted_gen: u32,
    /// Last good generation per kernel slot; never garbage-collected.
    pub last_good: [u32; 2],
    pub pending_slot: PendingSlot,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("state block is {0} bytes, not 4096")]
    BadLength(usize),
    #[error("bad magic (not a mobix boot-state record)")]
    BadMagic,
    #[error("unsupported record version {0}")]
    BadVersion(u16),
    #[error("record claims {0} entries, more than 32")]
    TooManyEntries(usize),
    #[error("CRC-32 {found:#010x} does not match the record ({computed:#010x})")]
    BadCrc { found: u32, computed: u32 },
    #[error("entry {index} has an unknown {field} {value}")]
    BadField { index: usize, field: &'static str, value: u8 },
    #[error("the pending slot switch's byte {offset} is {value}, not a slot (0 = a, 1 = b)")]
    BadSlot { offset: usize, value: u8 },
}

/// The status and bad-reason bytes of an entry.
fn status_bytes(s: Status) -> [u8; 2] {
    match s {
        Status::Trial => [0, 0],
        Status::Good => [1, 0],
        Status::Bad(r) => [
            2,
            match r {
                BadReason::Unspecified => 0,
                BadReason::Tries => 1,
                BadReason::Kernel => 2,
                BadReason::User => 3,
            },
        ],
    }
}

impl Record {
    /// The generations the phone must keep whatever else goes (a full record making room, a
    /// collection, the host carrying generations into a new image): the one booted, the
    /// default, the last good one of each slot, and the one a pending slot switch is for.
    /// Sorted, without 0 (none).
    pub fn protected(&self) -> Vec<u32> {
        let mut v = vec![self.booted_gen, self.default_gen, self.last_good[0], self.last_good[1]];
        if self.pending_slot.valid {
            v.push(self.pending_slot.generation);
        }
        v.retain(|&n| n != 0);
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn encode(&self) -> Result<[u8; BLOCK], Error> {
        if self.entries.len() > MAX_ENTRIES {
            return Err(Error::TooManyEntries(self.entries.len()));
        }
        let mut b = [0u8; BLOCK];
        let mut o = 0;
        let mut put = |data: &[u8]| {
            b[o..o + data.len()].copy_from_slice(data);
            o += data.len();
        };
        put(MAGIC);
        put(&VERSION.to_le_bytes());
        put(&self.seq.to_le_bytes());
        put(&self.default_gen.to_le_bytes());
        put(&self.booted_gen.to_le_bytes());
        put(&self.last_good[0].to_le_bytes());
        put(&self.last_good[1].to_le_bytes());
        let p = self.pending_slot;
        put(&[p.from.index() as u8, p.to.index() as u8]);
        put(&p.generation.to_le_bytes());
        put(&[p.valid as u8, self.entries.len() as u8]);
        for e in &self.entries {
            put(&e.generation.to_le_bytes());
            put(&e.id);
            let [status, reason] = status_bytes(e.status);
            put(&[e.kernel_slot.index() as u8, e.tries_left, e.tries_done, status, reason]);
        }
        let crc = crc32(&b[..BLOCK - 4]);
        b[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
        Ok(b)
    }

    pub fn decode(b: &[u8]) -> Result<Record, Error> {
        if b.len() != BLOCK {
            return Err(Error::BadLength(b.len()));
        }
        if &b[..7] != MAGIC {
            return Err(Error::BadMagic);
        }
        let found = u32::from_le_bytes(b[BLOCK - 4..].try_into().unwrap());
        let computed = crc32(&b[..BLOCK - 4]);
        if found != computed {
            return Err(Error::BadCrc { found, computed });
        }
        let version = u16::from_le_bytes([b[7], b[8]]);
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let le32 = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let slot_at = |o: usize| Slot::from_index(b[o].into()).ok_or(Error::BadSlot { offset: o, value: b[o] });
        let count = b[HEADER_LEN - 1] as usize;
        if count > MAX_ENTRIES {
            return Err(Error::TooManyEntries(count));
        }
        let mut entries = Vec::with_capacity(count);
        for index in 0..count {
            let o = HEADER_LEN + index * ENTRY_LEN;
            let f = &b[o + 20..o + 25];
            let reason = match f[4] {
                0 => BadReason::Unspecified,
                1 => BadReason::Tries,
                2 => BadReason::Kernel,
                3 => BadReason::User,
                v => return Err(Error::BadField { index, field: "bad_reason", value: v }),
            };
            let status = match f[3] {
                0 => Status::Trial,
                1 => Status::Good,
                2 => Status::Bad(reason),
                v => return Err(Error::BadField { index, field: "status", value: v }),
            };
            let kernel_slot =
                Slot::from_index(f[0].into()).ok_or(Error::BadField { index, field: "kernel_slot", value: f[0] })?;
            entries.push(Entry {
                generation: le32(o),
                id: b[o + 4..o + 20].try_into().unwrap(),
                kernel_slot,
                tries_left: f[1],
                tries_done: f[2],
                status,
            });
        }
        Ok(Record {
            seq: u64::from_le_bytes(b[9..17].try_into().unwrap()),
            default_gen: le32(17),
            booted_gen: le32(21),
            last_good: [le32(25), le32(29)],
            pending_slot: PendingSlot { from: slot_at(33)?, to: slot_at(34)?, generation: le32(35), valid: b[39] != 0 },
            entries,
        })
    }
}

/// The record to use from the two copies: the valid one with the highest sequence number,
/// and the index (0 or 1) of the copy to write next. `None` when neither is valid.
pub fn read_pair(a: &[u8], b: &[u8]) -> (Option<Record>, usize) {
    match (Record::decode(a).ok(), Record::decode(b).ok()) {
        (Some(x), Some(y)) if y.seq > x.seq => (Some(y), 0),
        (Some(x), Some(_)) => (Some(x), 1),
        (Some(x), None) => (Some(x), 1),
        (None, Some(y)) => (Some(y), 0),
        (None, None) => (None, 0),
    }
}

#[cfg(test)]
mod tests {

    /// What must stay is decided here once, for the phone's collection, the host's images,
    /// a full record making room and `generations delete`.
    #[test]
    fn the_protected_generations_are_booted_default_last_good_and_pending() {
        let mut r = Record { booted_gen: 4, default_gen: 5, last_good: [3, 0], ..Default::default() };
        assert_eq!(r.protected(), [3, 4, 5]);
        r.pending_slot = PendingSlot { from: Slot::A, to: Slot::B, generation: 6, valid: true };
        r.last_good = [3, 4];
        assert_eq!(r.protected(), [3, 4, 5, 6], "sorted, once each, the pending switch's too");
        r.pending_slot.valid = false;
        assert_eq!(r.protected(), [3, 4, 5]);
        assert!(Record::default().protected().is_empty(), "0 is none");
    }

    use super::*;

    pub(crate) fn sample() -> Record {
        Record {
            seq: 7,
            default_gen: 1,
            booted_gen: 2,
            last_good: [1, 0],
            pending_slot: PendingSlot { from: Slot::A, to: Slot::B, generation: 2, valid: true },
            entries: vec![
                Entry {
                    generation: 1,
                    id: [1; 16],
                    kernel_slot: Slot::A,
                    tries_left: 0,
                    tries_done: 1,
                    status: Status::Good,
                },
                Entry {
                    generation: 2,
                    id: [2; 16],
                    kernel_slot: Slot::B,
                    tries_left: 2,
                    tries_done: 1,
                    status: Status::Trial,
                },
            ],
        }
    }

    #[test]
    fn a_bad_entry_keeps_its_reason_through_the_bytes() {
        for why in [BadReason::Tries, BadReason::Kernel, BadReason::User, BadReason::Unspecified] {
            let mut r = sample();
            r.entries[1].status = Status::Bad(why);
            let back = Record::decode(&r.encode().unwrap()).unwrap();
            assert_eq!(back.entries[1].status, Status::Bad(why));
        }
        // Status and reason are two bytes on disk, as before the reason moved into the
        // status: a bad entry without a reason reads as Unspecified, an unknown reason is
        // refused.
        let mut r = sample();
        r.entries[1].status = Status::Bad(BadReason::Tries);
        let mut b = r.encode().unwrap();
        let at = HEADER_LEN + ENTRY_LEN + 24; // entry 1's reason byte
        assert_eq!((b[at - 1], b[at]), (2, 1));
        b[at] = 9;
        let crc = crc32(&b[..BLOCK - 4]);
        b[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(Record::decode(&b), Err(Error::BadField { field: "bad_reason", value: 9, .. })));
    }

    #[test]
    fn round_trip_and_corruption() {
        let r = sample();
        let b = r.encode().unwrap();
        assert_eq!(Record::decode(&b).unwrap(), r);
        let mut bad = b;
        bad[100] ^= 1;
        assert!(matches!(Record::decode(&bad), Err(Error::BadCrc { .. })));
        assert_eq!(Record::decode(&b[..100]).err(), Some(Error::BadLength(100)));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Record::decode(&bad).err(), Some(Error::BadMagic));
    }

    /// The record scripts/fuzz packs with Python from the documented layout decodes.
    #[test]
    fn reads_a_record_packed_from_the_layout() {
        let mut b = Vec::new();
        b.extend_from_slice(b"PHGEN\0\x01");
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&5u64.to_le_bytes());
        for v in [2u32, 1, 1, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0, 1]);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&[0, 2]);
        for (gen, tries, status) in [(1u32, 0u8, 1u8), (2, 3, 0)] {
            b.extend_from_slice(&gen.to_le_bytes());
            b.extend_from_slice(&[gen as u8; 16]);
            b.extend_from_slice(&[0, tries, 0, status, 0]);
        }
        b.resize(BLOCK - 4, 0);
        let crc = crc32(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let r = Record::decode(&b).unwrap();
        assert_eq!((r.seq, r.default_gen, r.booted_gen, r.last_good), (5, 2, 1, [1, 0]));
        assert_eq!(r.pending_slot, PendingSlot { from: Slot::A, to: Slot::B, generation: 2, valid: false });
        assert_eq!(r.entries[1].status, Status::Trial);
        assert_eq!(r.entries[1].tries_left, 3);
        assert_eq!(r.encode().unwrap().to_vec(), b);
    }

    #[test]
    fn the_newest_valid_copy_wins() {
        let mut r = sample();
        let older = r.encode().unwrap();
        r.seq = 8;
        let newer = r.encode().unwrap();
        assert_eq!(read_pair(&older, &newer), (Some(r.clone()), 0), "write over the older copy next");
        assert_eq!(read_pair(&newer, &older).1, 1);
        let mut torn = newer;
        torn[50] ^= 0xff;
        assert_eq!(read_pair(&older, &torn).0.unwrap().seq, 7, "a torn write falls back to the other copy");
        assert_eq!(read_pair(&torn, &[0u8; BLOCK]).0, None);
    }
}
