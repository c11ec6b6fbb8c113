//! What stage-1 shows on the phone's screen, as plain values, and the generation menu's
//! rules. The phone draws a [`Scene`] (the `mobix-screen` crate turns one into pixels) and
//! writes it on the console as a `SCREEN` line ([`crate::console::Event::Screen`]); the host
//! reads that line back, draws the same scene with the same code and compares it with a
//! screenshot of the emulated phone, so a test knows the phone drew what it meant to.
//!
//! The menu is a state machine with no clock and no device: keys in ([`Input`]), a choice
//! out ([`Step`]). Stage-1 turns evdev events, console keys and its idle timer into inputs.

use serde::{Deserialize, Serialize};

/// One screen of stage-1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "screen", rename_all = "kebab-case")]
pub enum Scene {
    /// Booting: the phone, the generation when one is chosen, what stage-1 is doing.
    Boot { device: String, generation: Option<Label>, doing: String },
    /// The generation menu, newest first, one row selected.
    Menu { device: String, rows: Vec<MenuRow>, selected: usize, idle_s: u32 },
    /// Something the owner should know before the system comes up: a fallback from a
    /// generation that failed, a slot switch.
    Notice { device: String, title: String, text: String, generation: Option<Label> },
    /// A shell instead of the system (nothing bootable, or the debug shell asked for): why,
    /// and how to reach the phone.
    Shell { device: String, title: String, why: String, reach: Vec<String> },
    /// The PIN pad of an encrypted state ([`crate::pin`]): what to type, a line of help or
    /// of trouble (`bad`: a wrong PIN, PINs that differ), how many digits are typed (never
    /// which), the highlighted key's index in [`crate::pin::PAD`].
    Pin { device: String, title: String, text: String, bad: bool, entered: u32, highlight: u32 },
}

/// A generation as the screen names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub number: u32,
    /// `YYYY-MM-DD`, or empty where the entry does not say (made by an older mobix).
    pub date: String,
}

impl Label {
    /// `generation 8, 2026-12-07`.
    pub fn words(&self) -> String {
        match self.date.as_str() {
            "" => format!("generation {}", self.number),
            d => format!("generation {}, {d}", self.number),
        }
    }
}

/// A row of the generation menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MenuRow {
    pub generation: Label,
    /// `good`, `trial, 2 tries left`, `bad (health check)`, `unknown`.
    pub state: String,
    /// Whether it can boot from here (its kernel is this boot image's).
    pub selectable: bool,
    /// Why not, or an empty string: `other kernel`.
    pub note: String,
    /// The one stage-1 boots by itself when nothing is chosen.
    pub default: bool,
}

/// What the owner did in the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Volume up, or the keyboard's up arrow.
    Up,
    /// Volume down, or the down arrow.
    Down,
    /// Power, or Enter.
    Select,
    /// A generation's number typed on the console and Enter.
    Number(u32),
    /// Nothing pressed for the idle timeout.
    Idle,
}

/// What follows an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Still in the menu (redraw if the selection moved).
    Stay,
    /// Boot this generation, chosen by hand.
    Boot(u32),
    /// Boot what stage-1 would have chosen by itself (the idle timeout, or nothing
    /// selectable).
    Automatic,
}

/// The generation menu: rows newest first, the selection always on a selectable row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    rows: Vec<MenuRow>,
    selected: usize,
}

impl Menu {
    /// The menu over `rows` (put newest first here), the default row selected (or the first
    /// selectable one).
    pub fn new(mut rows: Vec<MenuRow>) -> Menu {
        rows.sort_by_key(|r| std::cmp::Reverse(r.generation.number));
        let selected = rows
            .iter()
            .position(|r| r.default && r.selectable)
            .or_else(|| rows.iter().position(|r| r.selectable))
            .unwrap_or(0);
        Menu { rows, selected }
    }

    pub fn rows(&self) -> &[MenuRow] {
        &self.rows
    }

    /// The selected row's index.
    pub fn selected(&self) -> usize {
        self.selected
    }

    /// Applies one input.
    pub fn press(&mut self, input: Input) -> Step {
        let selectable = |i: &usize| self.rows[*i].selectable;
        match input {
            Input::Up => {
                if let Some(i) = (0..self.selected).rev().find(selectable) {
                    self.selected = i;
                }
                Step::Stay
            }
            Input::Down => {
                if let Some(i) = (self.selected + 1..self.rows.len()).find(selectable) {
                    self.selected = i;
                }
                Step::Stay
            }
            Input::Select => match self.rows.get(self.selected) {
                Some(r) if r.selectable => Step::Boot(r.generation.number),
                _ => Step::Automatic,
            },
            Input::Number(n) => match self.rows.iter().position(|r| r.generation.number == n) {
                Some(i) if self.rows[i].selectable => {
                    self.selected = i;
                    Step::Boot(n)
                }
                _ => Step::Stay,
            },
            Input::Idle => Step::Automatic,
        }
    }

    /// The menu as it is to be drawn.
    pub fn scene(&self, device: &str, idle_s: u32) -> Scene {
        Scene::Menu { device: device.to_string(), rows: self.rows.clone(), selected: self.selected, idle_s }
    }
}

/// `YYYY-MM-DD` of a time in seconds since 1970 (UTC); empty for 0 (not known).
pub fn date(unix_seconds: u64) -> String {
    if unix_seconds == 0 {
        return String::new();
    }
    let (year, month, day) = civil_date(unix_seconds / 86_400);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Year, month and day of `days` since 1970-01-01 (proleptic Gregorian, by eras of 400
/// years): the one calendar the phone's screen and the host's listings use.
pub fn civil_date(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u32, selectable: bool, default: bool) -> MenuRow {
        MenuRow {
            generation: Label { number: n, date: "2026-12-07".into() },
            state: "good".into(),
            selectable,
            note: if selectable { String::new() } else { "other kernel".into() },
            default,
        }
    }

    #[test]
    fn the_default_is_selected_and_keys_move_over_selectable_rows_only() {
        // Given oldest first: the menu shows newest first.
        let mut m = Menu::new(vec![row(1, true, false), row(2, false, false), row(3, true, false), row(4, true, true)]);
        let numbers: Vec<u32> = m.rows().iter().map(|r| r.generation.number).collect();
        assert_eq!(numbers, [4, 3, 2, 1]);
        assert_eq!(m.selected(), 0);
        assert_eq!(m.press(Input::Up), Step::Stay);
        assert_eq!(m.selected(), 0, "up at the top stays");
        m.press(Input::Down);
        assert_eq!(m.selected(), 1);
        m.press(Input::Down);
        assert_eq!(m.selected(), 3, "generation 2 runs another kernel: skipped");
        m.press(Input::Down);
        assert_eq!(m.selected(), 3, "down at the bottom stays");
        assert_eq!(m.press(Input::Select), Step::Boot(1));
        m.press(Input::Up);
        assert_eq!(m.selected(), 1);
    }

    #[test]
    fn two_rows_down_then_power_boots_the_generation_two_rows_down() {
        let mut m = Menu::new((1..=4).map(|n| row(n, true, n == 4)).collect());
        m.press(Input::Down);
        m.press(Input::Down);
        assert_eq!(m.press(Input::Select), Step::Boot(2));
    }

    #[test]
    fn idle_and_unselectable_choices_leave_it_to_the_automatic_choice() {
        let mut m = Menu::new((1..=3).map(|n| row(n, true, n == 2)).collect());
        assert_eq!(m.selected(), 1, "the default, not the newest");
        assert_eq!(m.press(Input::Idle), Step::Automatic);
        assert_eq!(m.press(Input::Number(9)), Step::Stay, "no such generation");
        assert_eq!(m.press(Input::Number(3)), Step::Boot(3));
        assert_eq!(m.selected(), 0);
        let mut none = Menu::new(vec![row(5, false, true)]);
        assert_eq!(none.press(Input::Number(5)), Step::Stay, "another kernel's generation cannot be typed either");
        assert_eq!(none.press(Input::Select), Step::Automatic);
        let mut empty = Menu::new(Vec::new());
        assert_eq!((empty.press(Input::Down), empty.press(Input::Select)), (Step::Stay, Step::Automatic));
    }

    #[test]
    fn scenes_round_trip_as_json() {
        let m = Menu::new((1..=2).map(|n| row(n, true, n == 2)).collect());
        for s in [
            m.scene("QEMU aarch64 phone", 30),
            Scene::Boot {
                device: "d".into(),
                generation: Some(Label { number: 3, date: String::new() }),
                doing: "mounting".into(),
            },
            Scene::Notice { device: "d".into(), title: "t".into(), text: "x".into(), generation: None },
            Scene::Shell { device: "d".into(), title: "t".into(), why: "w".into(), reach: vec!["telnet".into()] },
            Scene::Pin {
                device: "d".into(),
                title: "t".into(),
                text: "x".into(),
                bad: true,
                entered: 4,
                highlight: 11,
            },
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert!(!json.contains('\n'));
            assert_eq!(serde_json::from_str::<Scene>(&json).unwrap(), s);
        }
    }

    #[test]
    fn dates_are_civil_dates_in_utc() {
        assert_eq!(date(0), "");
        assert_eq!(date(86_399), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_796_601_600), "2026-12-07");
        assert_eq!(Label { number: 8, date: date(1_796_601_600) }.words(), "generation 8, 2026-12-07");
    }
}
