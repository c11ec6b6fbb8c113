//! The misc partition: the bootloader message block (BCB) and the A/B metadata
//! (`bootloader_control`), and the rules a bootloader and the boot_control HAL apply to it.
//!
//! Pipeline stage: format (pure). Layout references: AOSP `bootloader_message.h`
//! (`bootloader_message`, 2048 bytes at offset 0) and `boot_control_definition.h`
//! (`bootloader_control`, 32 packed bytes at offset 2048, CRC-32 LE of the first 28).
//! Slot selection follows U-Boot's `ab_select_slot` (boot/android_ab.c); the updates of a
//! running system follow AOSP's default boot_control HAL (`libboot_control.cpp`).

use crate::contract::Slot;
use crate::crc32::crc32;

pub const BCB_OFFSET: usize = 0;
pub const BCB_SIZE: usize = 2048;
pub const CONTROL_OFFSET: usize = 2048;
pub const CONTROL_SIZE: usize = 32;
/// `BOOT_CTRL_MAGIC`: "BCAB" little-endian.
pub const MAGIC: u32 = 0x4241_4342;
pub const VERSION: u8 = 1;
pub const MAX_SLOTS: usize = 4;
/// What the HAL gives a newly activated slot (`setActiveBootSlot`).
pub const ACTIVE_TRIES: u8 = 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("misc is {len} bytes, too short for the {what} at {offset} ({size} bytes)")]
    Truncated { what: &'static str, offset: usize, size: usize, len: usize },
    #[error("unknown A/B metadata magic {0:#010x} (expected 0x42414342, \"BCAB\")")]
    UnknownMagic(u32),
    #[error("unsupported A/B metadata version {0} (expected 1)")]
    UnsupportedVersion(u8),
    #[error("slot {slot} does not exist (this metadata has {nb_slot} slots)")]
    NoSuchSlot { slot: Slot, nb_slot: u8 },
    #[error("{field} {value:?} does not fit its {size}-byte field")]
    TooLong { field: &'static str, value: String, size: usize },
}

/// `slot_metadata`: two bytes per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SlotMetadata {
    /// 0 (unbootable) to 15 (highest).
    pub priority: u8,
    /// 0 to 7.
    pub tries_remaining: u8,
    pub successful_boot: bool,
    pub verity_corrupted: bool,
    /// The 7 reserved bits of the second byte, kept as read.
    #[serde(default)]
    pub reserved: u8,
}

impl SlotMetadata {
    fn decode(b: [u8; 2]) -> Self {
        SlotMetadata {
            priority: b[0] & 0x0f,
            tries_remaining: (b[0] >> 4) & 0x07,
            successful_boot: b[0] & 0x80 != 0,
            verity_corrupted: b[1] & 0x01 != 0,
            reserved: b[1] >> 1,
        }
    }
    fn encode(self) -> [u8; 2] {
        [
            (self.priority & 0x0f) | ((self.tries_remaining & 0x07) << 4) | ((self.successful_boot as u8) << 7),
            (self.verity_corrupted as u8) | (self.reserved << 1),
        ]
    }
    /// What U-Boot considers bootable.
    pub fn bootable(&self) -> bool {
        !self.verity_corrupted && self.tries_remaining > 0
    }
}

/// `bootloader_control`, as stored (the CRC is kept as read; [`BootloaderControl::encode`]
/// writes a fresh one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootloaderControl {
    /// The active slot's suffix as the last writer put it (`"a"` from U-Boot, `"_a"` from
    /// the AOSP HAL).
    pub slot_suffix: [u8; 4],
    pub magic: u32,
    pub version: u8,
    /// 3 bits.
    pub nb_slot: u8,
    /// 3 bits.
    pub recovery_tries_remaining: u8,
    /// 3 bits, straddling bytes 9 and 10 (GCC's packed bitfield layout).
    pub merge_status: u8,
    pub slot_info: [SlotMetadata; MAX_SLOTS],
    #[serde(default)]
    pub reserved0: u8,
    #[serde(default)]
    pub reserved1: [u8; 8],
    pub crc32_le: u32,
}

impl BootloaderControl {
    /// Reads the 32 bytes as they are, whatever their CRC says.
    pub fn decode(b: &[u8; CONTROL_SIZE]) -> Self {
        let mut slot_info = [SlotMetadata::default(); MAX_SLOTS];
        for (i, s) in slot_info.iter_mut().enumerate() {
            *s = SlotMetadata::decode([b[12 + 2 * i], b[13 + 2 * i]]);
        }
        BootloaderControl {
            slot_suffix: b[0..4].try_into().unwrap(),
            magic: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            version: b[8],
            nb_slot: b[9] & 0x07,
            recovery_tries_remaining: (b[9] >> 3) & 0x07,
            merge_status: (b[9] >> 6) | ((b[10] & 0x01) << 2),
            reserved0: b[11],
            slot_info,
            reserved1: b[20..28].try_into().unwrap(),
            crc32_le: u32::from_le_bytes(b[28..32].try_into().unwrap()),
        }
    }

    fn bytes_without_crc(&self) -> [u8; CONTROL_SIZE] {
        let mut b = [0u8; CONTROL_SIZE];
        b[0..4].copy_from_slice(&self.slot_suffix);
        b[4..8].copy_from_slice(&self.magic.to_le_bytes());
        b[8] = self.version;
        b[9] =
            (self.nb_slot & 0x07) | ((self.recovery_tries_remaining & 0x07) << 3) | ((self.merge_status & 0x03) << 6);
        b[10] = (self.merge_status >> 2) & 0x01;
        b[11] = self.reserved0;
        for (i, s) in self.slot_info.iter().enumerate() {
            b[12 + 2 * i..14 + 2 * i].copy_from_slice(&s.encode());
        }
        b[20..28].copy_from_slice(&self.reserved1);
        b
    }

    pub fn computed_crc(&self) -> u32 {
        crc32(&self.bytes_without_crc()[..28])
    }

    pub fn crc_ok(&self) -> bool {
        self.crc32_le == self.computed_crc()
    }

    /// The 32 bytes with a freshly computed CRC (and `crc32_le` updated to it).
    pub fn encode(&mut self) -> [u8; CONTROL_SIZE] {
        let mut b = self.bytes_without_crc();
        self.crc32_le = crc32(&b[..28]);
        b[28..32].copy_from_slice(&self.crc32_le.to_le_bytes());
        b
    }

    /// U-Boot's `ab_control_default`: every slot priority 15, 7 tries, not successful.
    pub fn uboot_default(nb_slot: u8) -> Self {
        let slot = SlotMetadata { priority: 15, tries_remaining: 7, ..SlotMetadata::default() };
        let mut c = BootloaderControl {
            slot_suffix: *b"a\0\0\0",
            magic: MAGIC,
            version: VERSION,
            nb_slot: nb_slot.min(MAX_SLOTS as u8),
            recovery_tries_remaining: 0,
            merge_status: 0,
            slot_info: [SlotMetadata::default(); MAX_SLOTS],
            reserved0: 0,
            reserved1: [0; 8],
            crc32_le: 0,
        };
        for s in c.slot_info.iter_mut().take(c.nb_slot as usize) {
            *s = slot;
        }
        c.encode();
        c
    }

    /// What an image builder writes for a freshly flashed A/B phone whose `active` slot
    /// holds the new system: that slot first with `tries` tries, the other slots
    /// unbootable-by-priority but untouched otherwise (priority 14 at most).
    pub fn fresh(nb_slot: u8, active: Slot, tries: u8) -> Result<Self, Error> {
        let mut c = BootloaderControl::uboot_default(nb_slot);
        c.set_active(active)?;
        c.slot_info[active.index()].tries_remaining = tries.min(7);
        c.encode();
        Ok(c)
    }

    /// The index of `slot` in `slot_info`, if this metadata has it.
    fn check_slot(&self, slot: Slot) -> Result<usize, Error> {
        if slot.index() >= self.nb_slot as usize {
            return Err(Error::NoSuchSlot { slot, nb_slot: self.nb_slot });
        }
        Ok(slot.index())
    }

    /// AOSP HAL `setActiveBootSlot`: other slots at priority 15 drop to 14; the slot gets
    /// priority 15 and 6 tries, and its verity flag is cleared (its successful flag is left
    /// alone: an updater clears it first with [`Self::set_unbootable`]).
    pub fn set_active(&mut self, slot: Slot) -> Result<(), Error> {
        let slot = self.check_slot(slot)?;
        for (i, s) in self.slot_info.iter_mut().enumerate().take(self.nb_slot as usize) {
            if i != slot && s.priority >= 15 {
                s.priority = 14;
            }
        }
        let s = &mut self.slot_info[slot];
        s.priority = 15;
        s.tries_remaining = ACTIVE_TRIES;
        s.verity_corrupted = false;
        self.slot_suffix = suffix_bytes(slot, true);
        Ok(())
    }

    /// AOSP HAL `markBootSuccessful`: successful, and 1 try left so that bootloaders
    /// which only look at tries still see the slot as bootable.
    pub fn mark_successful(&mut self, slot: Slot) -> Result<(), Error> {
        let slot = self.check_slot(slot)?;
        self.slot_info[slot].successful_boot = true;
        self.slot_info[slot].tries_remaining = 1;
        Ok(())
    }

    /// AOSP HAL `setSlotAsUnbootable`.
    pub fn set_unbootable(&mut self, slot: Slot) -> Result<(), Error> {
        let slot = self.check_slot(slot)?;
        self.slot_info[slot].successful_boot = false;
        self.slot_info[slot].tries_remaining = 0;
        Ok(())
    }
}

/// `"_a"`-style (HAL) or `"a"`-style (U-Boot) suffix bytes of a slot.
fn suffix_bytes(slot: usize, underscore: bool) -> [u8; 4] {
    let letter = b'a' + slot as u8;
    if underscore {
        [b'_', letter, 0, 0]
    } else {
        [letter, 0, 0, 0]
    }
}

/// A slot's letter, `a` for 0.
pub fn slot_letter(slot: usize) -> char {
    (b'a' + slot as u8) as char
}

/// What the bootloader decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Selection {
    /// The index of the slot to boot (the format has up to four; mobix's phones two, see
    /// [`Slot::from_index`]), or none when no slot is bootable.
    pub slot: Option<usize>,
    /// The metadata as it must be stored afterwards.
    pub control: BootloaderControl,
    /// Whether the bootloader writes `control` back to misc.
    pub store: bool,
    /// Whether the metadata was re-initialised because its CRC was wrong.
    pub reinitialized: bool,
}

/// U-Boot's `ab_select_slot` on the 32 bytes at misc+2048. `dec_tries`: whether this
/// boot consumes a try of an unsuccessful slot (U-Boot's normal boot does).
pub fn select_slot(raw: &[u8; CONTROL_SIZE], dec_tries: bool) -> Result<Selection, Error> {
    let mut c = BootloaderControl::decode(raw);
    let mut store = false;
    let mut reinitialized = false;
    if !c.crc_ok() {
        c = BootloaderControl::uboot_default(2);
        store = true;
        reinitialized = true;
    }
    if c.magic != MAGIC {
        return Err(Error::UnknownMagic(c.magic));
    }
    if c.version > VERSION {
        return Err(Error::UnsupportedVersion(c.version));
    }
    if c.nb_slot as usize > MAX_SLOTS {
        c.nb_slot = MAX_SLOTS as u8;
        store = true;
    }
    let mut best: Option<usize> = None;
    for i in 0..c.nb_slot as usize {
        let s = &c.slot_info[i];
        if !s.bootable() {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => {
                let o = &c.slot_info[b];
                (s.priority, s.successful_boot, s.tries_remaining) > (o.priority, o.successful_boot, o.tries_remaining)
            }
        };
        if better {
            best = Some(i);
        }
    }
    if let Some(slot) = best {
        if !c.slot_info[slot].successful_boot && dec_tries {
            c.slot_info[slot].tries_remaining -= 1;
            store = true;
        }
        let want = suffix_bytes(slot, false);
        if c.slot_suffix != want {
            c.slot_suffix = want;
            store = true;
        }
    }
    if store {
        c.encode();
    }
    Ok(Selection { slot: best, control: c, store, reinitialized })
}

/// `bootloader_message`: commands to the bootloader and recovery.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct BootloaderMessage {
    /// `boot-recovery`, `bootonce-bootloader`, `boot-fastboot`, or empty.
    pub command: String,
    pub status: String,
    /// Newline-separated recovery arguments.
    pub recovery: String,
    pub stage: String,
}

const BCB_FIELDS: [(&str, usize, usize); 4] =
    [("command", 0, 32), ("status", 32, 32), ("recovery", 64, 768), ("stage", 832, 32)];

impl BootloaderMessage {
    pub fn decode(b: &[u8; BCB_SIZE]) -> Self {
        let field = |off: usize, size: usize| {
            let raw = &b[off..off + size];
            let end = raw.iter().position(|&c| c == 0).unwrap_or(size);
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        BootloaderMessage {
            command: field(0, 32),
            status: field(32, 32),
            recovery: field(64, 768),
            stage: field(832, 32),
        }
    }

    /// The 2048 bytes (reserved area zero). Each field keeps a terminating NUL.
    pub fn encode(&self) -> Result<[u8; BCB_SIZE], Error> {
        let mut b = [0u8; BCB_SIZE];
        for ((name, off, size), value) in
            BCB_FIELDS.iter().zip([&self.command, &self.status, &self.recovery, &self.stage])
        {
            if value.len() >= *size {
                return Err(Error::TooLong { field: name, value: value.clone(), size: *size });
            }
            b[*off..*off + value.len()].copy_from_slice(value.as_bytes());
        }
        Ok(b)
    }
}

/// The BCB and the A/B metadata of a misc partition image.
pub fn read(misc: &[u8]) -> Result<(BootloaderMessage, BootloaderControl), Error> {
    let need = CONTROL_OFFSET + CONTROL_SIZE;
    if misc.len() < need {
        return Err(Error::Truncated {
            what: "bootloader_control",
            offset: CONTROL_OFFSET,
            size: CONTROL_SIZE,
            len: misc.len(),
        });
    }
    let bcb = BootloaderMessage::decode(misc[..BCB_SIZE].try_into().unwrap());
    let ctrl = BootloaderControl::decode(misc[CONTROL_OFFSET..need].try_into().unwrap());
    Ok((bcb, ctrl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_layout_matches_gcc() {
        // Values from the reference, checked there with gcc 12 on the packed struct.
        assert_eq!(SlotMetadata { priority: 15, ..Default::default() }.encode(), [0x0f, 0]);
        assert_eq!(SlotMetadata { tries_remaining: 7, ..Default::default() }.encode(), [0x70, 0]);
        assert_eq!(SlotMetadata { successful_boot: true, ..Default::default() }.encode(), [0x80, 0]);
        assert_eq!(SlotMetadata { verity_corrupted: true, ..Default::default() }.encode(), [0, 1]);
        let mut c = BootloaderControl::uboot_default(2);
        c.merge_status = 7;
        let b = c.encode();
        assert_eq!((b[9], b[10]), (0xc2, 0x01), "merge_status 7 straddles bytes 9 and 10");
        assert_eq!(&b[4..8], &[0x42, 0x43, 0x41, 0x42]);
        assert_eq!(BootloaderControl::decode(&b), c);
    }

    #[test]
    fn uboot_reinitialises_a_bad_crc() {
        let sel = select_slot(&[0u8; 32], true).unwrap();
        assert!(sel.reinitialized && sel.store);
        assert_eq!(sel.slot, Some(0));
        assert_eq!(sel.control.slot_info[0].tries_remaining, 6, "a try of slot a was consumed");
        assert_eq!(sel.control.slot_info[1].tries_remaining, 7);
        assert!(sel.control.crc_ok());
        assert_eq!(&sel.control.slot_suffix, b"a\0\0\0");
    }

    #[test]
    fn rollback_when_tries_run_out() {
        // The phone's state after an update to slot b that never gets marked successful.
        let mut c = BootloaderControl::uboot_default(2);
        c.mark_successful(Slot::A).unwrap();
        c.set_unbootable(Slot::B).unwrap();
        c.set_active(Slot::B).unwrap();
        c.slot_info[1].tries_remaining = 2;
        let mut raw = c.encode();
        let mut booted = Vec::new();
        for _ in 0..4 {
            let sel = select_slot(&raw, true).unwrap();
            booted.push(sel.slot.unwrap());
            let mut ctrl = sel.control;
            raw = ctrl.encode();
        }
        assert_eq!(booted, [1, 1, 0, 0], "two tries of b, then back to a for good");
        let final_c = BootloaderControl::decode(&raw);
        assert_eq!(final_c.slot_info[1].tries_remaining, 0);
        assert_eq!(final_c.slot_info[0].tries_remaining, 1, "a successful slot keeps its try");
    }

    /// What scenario s7 boots twice on the emulated phone, over a hundred boots: the
    /// bootloader takes a try of an unproven slot, the phone marks it successful once a
    /// generation proves itself, and from then on no boot uses up a try.
    #[test]
    fn good_reboots_never_use_up_a_successful_slot() {
        let mut raw = BootloaderControl::uboot_default(2).encode();
        for boot in 0..100 {
            let sel = select_slot(&raw, true).unwrap();
            assert_eq!(sel.slot, Some(0), "boot {boot}");
            let mut c = sel.control;
            let want = if boot == 0 { 6 } else { 1 };
            assert_eq!(c.slot_info[0].tries_remaining, want, "boot {boot}: only the unproven first boot takes a try");
            if !c.slot_info[0].successful_boot {
                // As the phone's `mark_slot_successful`: once.
                c.mark_successful(Slot::A).unwrap();
            }
            raw = c.encode();
        }
        assert!(BootloaderControl::decode(&raw).slot_info[0].successful_boot);
    }

    #[test]
    fn comparison_order_priority_then_successful_then_tries() {
        let mut c = BootloaderControl::uboot_default(2);
        c.slot_info[0] = SlotMetadata { priority: 14, tries_remaining: 7, ..Default::default() };
        c.slot_info[1] = SlotMetadata { priority: 15, tries_remaining: 1, ..Default::default() };
        assert_eq!(select_slot(&c.encode(), false).unwrap().slot, Some(1));
        c.slot_info[0] = SlotMetadata { priority: 15, tries_remaining: 1, successful_boot: true, ..Default::default() };
        c.slot_info[1] = SlotMetadata { priority: 15, tries_remaining: 7, ..Default::default() };
        assert_eq!(select_slot(&c.encode(), false).unwrap().slot, Some(0));
        c.slot_info[0] = SlotMetadata { priority: 15, tries_remaining: 3, ..Default::default() };
        c.slot_info[1] = SlotMetadata { priority: 15, tries_remaining: 5, ..Default::default() };
        assert_eq!(select_slot(&c.encode(), false).unwrap().slot, Some(1));
        c.slot_info[1].verity_corrupted = true;
        assert_eq!(select_slot(&c.encode(), false).unwrap().slot, Some(0));
        c.slot_info[0].tries_remaining = 0;
        let sel = select_slot(&c.encode(), true).unwrap();
        assert_eq!(sel.slot, None, "nothing bootable");
    }

    #[test]
    fn bad_magic_and_version_are_errors() {
        let mut c = BootloaderControl::uboot_default(2);
        c.magic = 0x1234_5678;
        assert_eq!(select_slot(&c.encode(), true).err(), Some(Error::UnknownMagic(0x1234_5678)));
        let mut c = BootloaderControl::uboot_default(2);
        c.version = 2;
        assert_eq!(select_slot(&c.encode(), true).err(), Some(Error::UnsupportedVersion(2)));
        assert!(matches!(read(&[0u8; 100]), Err(Error::Truncated { .. })));
    }

    #[test]
    fn bcb_round_trip() {
        let m = BootloaderMessage {
            command: "boot-recovery".into(),
            recovery: "recovery\n--wipe_data\n".into(),
            ..Default::default()
        };
        let b = m.encode().unwrap();
        assert_eq!(&b[..13], b"boot-recovery");
        assert_eq!(BootloaderMessage::decode(&b), m);
        let long = BootloaderMessage { command: "x".repeat(32), ..Default::default() };
        assert!(matches!(long.encode(), Err(Error::TooLong { field: "command", .. })));
    }
}
