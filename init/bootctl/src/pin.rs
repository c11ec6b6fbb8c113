//! The PIN pad of stage-1's unlock screen, as a state machine with no clock and no device,
//! and what the state area of an encrypted phone holds.
//!
//! The pad has twelve keys in three columns: 1-9, then erase, 0, done. It takes the same
//! PIN from four hands: a keyboard's digits, Backspace and Enter; a tap on a key (touch);
//! the volume keys moving a highlight over the keys and power pressing the highlighted one
//! (a phone with no touch driver in stage-1); digits and Enter on the serial console. The
//! pad never shows a digit, only how many there are.

/// A key of the pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadKey {
    Digit(u8),
    Erase,
    Done,
}

/// The pad's keys, row by row, three to a row.
pub const PAD: [PadKey; 12] = [
    PadKey::Digit(1),
    PadKey::Digit(2),
    PadKey::Digit(3),
    PadKey::Digit(4),
    PadKey::Digit(5),
    PadKey::Digit(6),
    PadKey::Digit(7),
    PadKey::Digit(8),
    PadKey::Digit(9),
    PadKey::Erase,
    PadKey::Digit(0),
    PadKey::Done,
];

impl PadKey {
    /// What the key shows.
    pub fn label(self) -> String {
        match self {
            PadKey::Digit(d) => d.to_string(),
            PadKey::Erase => "<".into(),
            PadKey::Done => "OK".into(),
        }
    }
}

/// The fewest digits a PIN has.
pub const PIN_MIN: usize = 4;
/// The most digits the pad takes.
pub const PIN_MAX: usize = 32;

/// Whether `pin` is one the pad can take: [`PIN_MIN`] to [`PIN_MAX`] digits.
pub fn pad_takes(pin: &str) -> bool {
    (PIN_MIN..=PIN_MAX).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

/// What the owner did on the pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadInput {
    /// A key, by a keyboard or a tap.
    Key(PadKey),
    /// The highlight to the next key (volume down), or the previous one (volume up).
    Next,
    Previous,
    /// The highlighted key (power).
    Press,
}

/// What follows an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PadStep {
    /// Still typing (redraw).
    Stay,
    /// Done pressed with fewer than [`PIN_MIN`] digits.
    TooShort,
    /// Done pressed: the PIN.
    Submit(String),
}

/// The digits typed so far and the highlighted key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pad {
    digits: String,
    highlight: usize,
}

impl Pad {
    pub fn new() -> Pad {
        Pad { digits: String::new(), highlight: 0 }
    }

    /// How many digits are typed.
    pub fn entered(&self) -> usize {
        self.digits.len()
    }

    /// The highlighted key's index in [`PAD`].
    pub fn highlight(&self) -> usize {
        self.highlight
    }

    /// Applies one input. A submitted PIN empties the pad.
    pub fn press(&mut self, input: PadInput) -> PadStep {
        let key = match input {
            PadInput::Next => {
                self.highlight = (self.highlight + 1) % PAD.len();
                return PadStep::Stay;
            }
            PadInput::Previous => {
                self.highlight = (self.highlight + PAD.len() - 1) % PAD.len();
                return PadStep::Stay;
            }
            PadInput::Press => PAD[self.highlight],
            PadInput::Key(k) => k,
        };
        match key {
            PadKey::Digit(d) => {
                if self.digits.len() < PIN_MAX && d < 10 {
                    self.digits.push(char::from(b'0' + d));
                }
                PadStep::Stay
            }
            PadKey::Erase => {
                self.digits.pop();
                PadStep::Stay
            }
            PadKey::Done if self.digits.len() < PIN_MIN => PadStep::TooShort,
            PadKey::Done => {
                self.highlight = 0;
                PadStep::Submit(std::mem::take(&mut self.digits))
            }
        }
    }
}

/// Seconds the pad waits before it takes another PIN after `failures` wrong ones in a row:
/// none for the first three, then 5 s doubling up to five minutes. Waiting is the only
/// consequence: no number of wrong PINs erases anything.
pub fn wait_after(failures: u32) -> u32 {
    match failures {
        0..=3 => 0,
        n => 5u32.saturating_mul(1 << (n - 4).min(6)).min(300),
    }
}

/// The bytes [`classify`] reads at the start of a state area: LUKS2's two binary headers
/// (the second at 16 KiB by default, at most 1 MiB on) and ext4's superblock lie within them.
pub const PROBE_BYTES: usize = LUKS2_SECOND_OFFSETS[LUKS2_SECOND_OFFSETS.len() - 1] + 4096;

/// What a state area holds, from its first [`PROBE_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateArea {
    /// Only zeros, or only 0xff (erased flash): nothing to keep; an encrypted state is
    /// made here.
    Blank,
    /// A LUKS header (the first copy, or only the second one where the first is damaged).
    Luks { first_header: bool },
    /// An ext2/3/4 filesystem: a plain state.
    Ext4,
    /// Anything else: never formatted over.
    Unknown,
}

const LUKS_MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
const LUKS2_SECOND_MAGIC: [u8; 6] = *b"SKUL\xba\xbe";
/// Where LUKS2 may put its second header (cryptsetup's offsets for the header sizes it
/// makes); the default is 16 KiB.
const LUKS2_SECOND_OFFSETS: [usize; 7] = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000];

/// What `head` (the first bytes of a state area) holds.
pub fn classify(head: &[u8]) -> StateArea {
    if head.starts_with(&LUKS_MAGIC) {
        return StateArea::Luks { first_header: true };
    }
    if LUKS2_SECOND_OFFSETS.iter().any(|&o| head.get(o..o + 6) == Some(&LUKS2_SECOND_MAGIC[..])) {
        return StateArea::Luks { first_header: false };
    }
    if head.get(1080..1082) == Some(&[0x53, 0xef][..]) {
        return StateArea::Ext4;
    }
    if !head.is_empty() && (head.iter().all(|&b| b == 0) || head.iter().all(|&b| b == 0xff)) {
        return StateArea::Blank;
    }
    StateArea::Unknown
}

/// The device-mapper name of the opened state: `/dev/mapper/mobix-state`.
pub const MAPPER_NAME: &str = "mobix-state";

/// On the running phone, a link to the device holding the encrypted state's LUKS header
/// (its partition, or the loop device over the part of it after the system image): what
/// `cryptsetup luksChangeKey` is given to change the PIN, whatever the layout.
pub const ENCRYPTED_LINK: &str = "/run/mobix/encrypted-state";

/// Where stage-1 keeps cryptsetup in the initramfs.
pub const CRYPTSETUP: &str = "/bin/cryptsetup";

/// cryptsetup's exit status for a passphrase that opens no key slot.
pub const CRYPTSETUP_WRONG_KEY: i32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pad_takes_four_to_thirty_two_digits_only() {
        assert!(pad_takes("1357") && pad_takes(&"9".repeat(32)));
        for no in ["135", "", "13 57", "1357\n", "12a4", &"9".repeat(33)] {
            assert!(!pad_takes(no), "{no:?}");
        }
    }

    fn digits(p: &mut Pad, s: &str) {
        for c in s.bytes() {
            p.press(PadInput::Key(PadKey::Digit(c - b'0')));
        }
    }

    #[test]
    fn keys_type_erase_and_submit_a_pin_of_four_digits_or_more() {
        let mut p = Pad::new();
        digits(&mut p, "123");
        assert_eq!(p.entered(), 3);
        assert_eq!(p.press(PadInput::Key(PadKey::Done)), PadStep::TooShort);
        digits(&mut p, "45");
        p.press(PadInput::Key(PadKey::Erase));
        digits(&mut p, "9");
        assert_eq!(p.press(PadInput::Key(PadKey::Done)), PadStep::Submit("12349".into()));
        assert_eq!(p.entered(), 0, "the pad is empty after a submit");
        assert_eq!(p.press(PadInput::Key(PadKey::Erase)), PadStep::Stay, "erasing nothing stays");
        digits(&mut p, &"7".repeat(40));
        assert_eq!(p.entered(), PIN_MAX);
    }

    #[test]
    fn volume_keys_move_the_highlight_around_the_pad_and_power_presses_it() {
        let mut p = Pad::new();
        assert_eq!(PAD[p.highlight()], PadKey::Digit(1));
        p.press(PadInput::Press);
        p.press(PadInput::Next);
        p.press(PadInput::Press);
        p.press(PadInput::Press);
        p.press(PadInput::Previous);
        p.press(PadInput::Previous);
        assert_eq!(PAD[p.highlight()], PadKey::Done, "previous from the first key wraps to the last");
        p.press(PadInput::Previous);
        p.press(PadInput::Press);
        p.press(PadInput::Next);
        assert_eq!(p.press(PadInput::Press), PadStep::Submit("1220".into()));
        assert_eq!(p.highlight(), 0);
    }

    #[test]
    fn waits_grow_after_three_wrong_pins_and_stop_at_five_minutes() {
        let w: Vec<u32> = (0..12).map(wait_after).collect();
        assert_eq!(w, [0, 0, 0, 0, 5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(wait_after(u32::MAX), 300);
    }

    #[test]
    fn state_areas_are_told_apart_by_their_first_bytes() {
        let mut a = vec![0u8; PROBE_BYTES];
        assert_eq!(classify(&a), StateArea::Blank);
        assert_eq!(classify(&vec![0xff; PROBE_BYTES]), StateArea::Blank);
        assert_eq!(classify(&[]), StateArea::Unknown);
        a[0x4000..0x4006].copy_from_slice(b"SKUL\xba\xbe");
        assert_eq!(classify(&a), StateArea::Luks { first_header: false });
        // The second header of the largest metadata cryptsetup makes is read too.
        let mut far = vec![0u8; PROBE_BYTES];
        far[0x100000..0x100006].copy_from_slice(b"SKUL\xba\xbe");
        assert_eq!(classify(&far), StateArea::Luks { first_header: false });
        a[..6].copy_from_slice(b"LUKS\xba\xbe");
        assert_eq!(classify(&a), StateArea::Luks { first_header: true });
        let mut e = vec![0u8; PROBE_BYTES];
        e[1080] = 0x53;
        e[1081] = 0xef;
        assert_eq!(classify(&e), StateArea::Ext4);
        e[1081] = 0;
        assert_eq!(classify(&e), StateArea::Unknown, "one stray byte is not blank");
    }
}
