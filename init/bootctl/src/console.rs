//! The lines the phone's init writes on the serial console for the host to read: which
//! generation stage-1 chose, a failed health check, a missed trial deadline, a slot switch,
//! a rescue, the success point, the encrypted state's unlock. The phone writes them with [`Event::line`] (after its
//! `mobix: ` prefix) and the host finds them in a console line with [`Event::find`], so that
//! both sides agree on one format. Words after the fields (`(newest; nothing counted)`) are
//! for people and not read back.

/// The prefix every line of mobix's init carries on the console.
pub const PREFIX: &str = "mobix: ";

/// How stage-1 boots the generation it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    Trial,
    Good,
    /// Picked in the generation menu; its status left as it is.
    Manual,
    /// The boot-state record was unreadable: the newest boots, nothing is counted.
    Degraded,
}

impl Chosen {
    pub fn name(self) -> &'static str {
        match self {
            Chosen::Trial => "trial",
            Chosen::Good => "good",
            Chosen::Manual => "manual",
            Chosen::Degraded => "degraded",
        }
    }

    fn parse(s: &str) -> Option<Chosen> {
        [Chosen::Trial, Chosen::Good, Chosen::Manual, Chosen::Degraded].into_iter().find(|c| c.name() == s)
    }
}

/// One event the init reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `GEN-CHOSEN generation=N status=S tries_left=T`
    Chosen { generation: u32, status: Chosen, tries_left: u8 },
    /// `boot-complete generation=N toplevel=PATH [fell_back_from=M]`: the success point was
    /// reached; `fell_back_from` is what the running system's boot record
    /// (`/run/mobix/boot.json`) says this boot fell back from.
    Complete { generation: u32, toplevel: String, fell_back_from: Option<u32> },
    /// `HEALTH-FAILED generation=N: WHY`
    HealthFailed { generation: u32, why: String },
    /// `TRIAL-TIMEOUT generation=N: WHY`
    TrialTimeout { generation: u32, why: String },
    /// `SLOT-SWITCH to slot X: WHY`
    SlotSwitch { slot: crate::contract::Slot, why: String },
    /// `RESCUE: WHY`: nothing could boot.
    Rescue { why: String },
    /// `BOOT-TIMES generation=N kernel_ms=… stage1_ms=… activation_ms=… complete_ms=…
    /// slowest=UNIT/MS,…`: where this boot's time went, after its success point.
    BootTimes(BootTimes),
    /// `SCREEN {json}`: what stage-1 just drew on the phone's screen.
    Screen(crate::screen::Scene),
    /// The encrypted state's unlock in stage-1 ([`Unlock`]).
    Unlock(Unlock),
}

/// What stage-1's unlock of an encrypted state reports (never a digit of the PIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlock {
    /// `PIN-ASK for=choose|again|unlock`: the PIN pad waits for a new PIN, the new one
    /// again, or the PIN that opens the state.
    Ask(PinFor),
    /// `PIN-TYPED digits=N`: a PIN was sent.
    Typed { digits: u32 },
    /// `PIN-WRONG failures=N wait_s=S`: it opened nothing; the next is taken after S s.
    Wrong { failures: u32, wait_s: u32 },
    /// `STATE-OPEN made=0|1`: the state is open as `/dev/mapper/mobix-state` (made on this
    /// boot, or opened).
    Open { made: bool },
}

/// What a PIN is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinFor {
    Choose,
    Again,
    Unlock,
}

impl PinFor {
    pub fn name(self) -> &'static str {
        match self {
            PinFor::Choose => "choose",
            PinFor::Again => "again",
            PinFor::Unlock => "unlock",
        }
    }
}

/// Where a boot's time went, from the phone's own clock (milliseconds since the kernel
/// started): the kernel's start-up, stage-1, activation, and the system up to the success
/// point; under systemd its slowest units (`systemd-analyze blame`, devices left out: their
/// time is udev's, spent waiting).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootTimes {
    pub generation: u32,
    /// From the kernel's start to stage-1's.
    pub kernel_ms: u32,
    /// Stage-1's own work (the generation menu's wait included).
    pub stage1_ms: u32,
    /// Activating the generation, up to starting its init.
    pub activation_ms: u32,
    /// From the kernel's start to the success point.
    pub complete_ms: u32,
    /// The slowest units and their start-up time in ms, slowest first.
    pub slowest: Vec<(String, u32)>,
}

impl Event {
    /// The line the phone writes (without [`PREFIX`]).
    pub fn line(&self) -> String {
        match self {
            Event::Chosen { generation, status, tries_left } => {
                format!("GEN-CHOSEN generation={generation} status={} tries_left={tries_left}", status.name())
            }
            Event::Complete { generation, toplevel, fell_back_from } => {
                let from = fell_back_from.map(|g| format!(" fell_back_from={g}")).unwrap_or_default();
                format!("boot-complete generation={generation} toplevel={toplevel}{from}")
            }
            Event::HealthFailed { generation, why } => format!("HEALTH-FAILED generation={generation}: {why}"),
            Event::TrialTimeout { generation, why } => format!("TRIAL-TIMEOUT generation={generation}: {why}"),
            Event::SlotSwitch { slot, why } => format!("SLOT-SWITCH to slot {slot}: {why}"),
            Event::Rescue { why } => format!("RESCUE: {why}"),
            Event::Screen(scene) => {
                format!("SCREEN {}", serde_json::to_string(scene).expect("a scene is plain data"))
            }
            Event::Unlock(u) => match u {
                Unlock::Ask(f) => format!("PIN-ASK for={}", f.name()),
                Unlock::Typed { digits } => format!("PIN-TYPED digits={digits}"),
                Unlock::Wrong { failures, wait_s } => format!("PIN-WRONG failures={failures} wait_s={wait_s}"),
                Unlock::Open { made } => format!("STATE-OPEN made={}", u8::from(*made)),
            },
            Event::BootTimes(t) => {
                let slowest: Vec<String> = t.slowest.iter().map(|(u, ms)| format!("{u}/{ms}")).collect();
                format!(
                    "BOOT-TIMES generation={} kernel_ms={} stage1_ms={} activation_ms={} complete_ms={} slowest={}",
                    t.generation,
                    t.kernel_ms,
                    t.stage1_ms,
                    t.activation_ms,
                    t.complete_ms,
                    slowest.join(",")
                )
            }
        }
    }

    /// The event in a console line (anything may come before the prefix: a kernel
    /// timestamp, systemd's journal prefix); None for any other line.
    pub fn find(line: &str) -> Option<Event> {
        let at = line.find(PREFIX)?;
        let rest = &line[at + PREFIX.len()..];
        // A kernel message printed between the line's text and its end (the tty sends the
        // newline apart) is not part of it.
        let rest = rest[..kernel_message_at(rest).unwrap_or(rest.len())].trim_end();
        let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        if word == "SCREEN" {
            return serde_json::from_str(tail).ok().map(Event::Screen);
        }
        // `k=v` fields up to the first `: ` (what follows is the reason).
        let (fields, why) = match tail.split_once(": ") {
            Some((f, w)) => (f, w.to_string()),
            None => (tail.trim_end_matches(':'), String::new()),
        };
        let field = |k: &str| {
            fields
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .map(|v| v.trim_end_matches(':'))
        };
        let number = |k: &str| field(k).and_then(|v| v.parse::<u32>().ok());
        Some(match word {
            "GEN-CHOSEN" => Event::Chosen {
                generation: number("generation")?,
                status: Chosen::parse(field("status")?)?,
                tries_left: field("tries_left")?.parse().ok()?,
            },
            "boot-complete" => Event::Complete {
                generation: number("generation")?,
                toplevel: field("toplevel")?.to_string(),
                fell_back_from: number("fell_back_from"),
            },
            "HEALTH-FAILED" => Event::HealthFailed { generation: number("generation")?, why },
            "TRIAL-TIMEOUT" => Event::TrialTimeout { generation: number("generation")?, why },
            "SLOT-SWITCH" => {
                let slot = crate::contract::Slot::parse(fields.strip_prefix("to slot ")?)?;
                Event::SlotSwitch { slot, why }
            }
            "RESCUE:" => Event::Rescue { why: tail.to_string() },
            "PIN-ASK" => Event::Unlock(Unlock::Ask(
                [PinFor::Choose, PinFor::Again, PinFor::Unlock].into_iter().find(|f| Some(f.name()) == field("for"))?,
            )),
            "PIN-TYPED" => Event::Unlock(Unlock::Typed { digits: number("digits")? }),
            "PIN-WRONG" => Event::Unlock(Unlock::Wrong { failures: number("failures")?, wait_s: number("wait_s")? }),
            "STATE-OPEN" => Event::Unlock(Unlock::Open {
                made: match field("made")? {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                },
            }),
            "BOOT-TIMES" => {
                let slowest = field("slowest")
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        let (unit, ms) = s.rsplit_once('/')?;
                        Some((unit.to_string(), ms.parse().ok()?))
                    })
                    .collect::<Option<Vec<_>>>()?;
                Event::BootTimes(BootTimes {
                    generation: number("generation")?,
                    kernel_ms: number("kernel_ms")?,
                    stage1_ms: number("stage1_ms")?,
                    activation_ms: number("activation_ms")?,
                    complete_ms: number("complete_ms")?,
                    slowest,
                })
            }
            _ => return None,
        })
    }
}

/// Where a kernel message's timestamp (`[    1.958121]`) starts in `s`, if one does.
fn kernel_message_at(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len()).find(|&i| {
        if b[i] != b'[' {
            return false;
        }
        let body = &b[i + 1..];
        let spaces = body.iter().take_while(|&&c| c == b' ').count();
        let digits = body[spaces..].iter().take_while(|c| c.is_ascii_digit()).count();
        let rest = &body[spaces + digits..];
        let fraction = rest.get(1..).map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
        digits > 0 && rest.first() == Some(&b'.') && fraction == 6 && rest.get(1 + fraction) == Some(&b']')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel message that lands before the line's newline does not spoil the event.
    #[test]
    fn a_kernel_message_inside_a_line_is_cut_off() {
        let line =
            "mobix: GEN-CHOSEN generation=1 status=manual tries_left=0[    1.958121] [drm] number of scanouts: 1";
        assert_eq!(Event::find(line), Some(Event::Chosen { generation: 1, status: Chosen::Manual, tries_left: 0 }));
        assert_eq!(kernel_message_at("tries_left=0[  12.000001] x"), Some(12));
        for not in ["[1.5]", "[ 1.95812]", "[x.123456]", "items [3]", "[    1.958121"] {
            assert_eq!(kernel_message_at(not), None, "{not}");
        }
    }

    /// Every event reads back from its own line, behind whatever the console put before it.
    #[test]
    fn every_event_reads_back_from_its_line() {
        let all = [
            Event::Chosen { generation: 3, status: Chosen::Trial, tries_left: 2 },
            Event::Chosen { generation: 1, status: Chosen::Degraded, tries_left: 0 },
            Event::Complete { generation: 7, toplevel: "/mobix/store/abc-mobix-system-x".into(), fell_back_from: None },
            Event::Complete {
                generation: 1,
                toplevel: "/mobix/store/abc-mobix-system-x".into(),
                fell_back_from: Some(2),
            },
            Event::HealthFailed { generation: 2, why: "health check usb failed (exit status: 1)".into() },
            Event::TrialTimeout { generation: 4, why: "no success point within 90s; rebooting".into() },
            Event::SlotSwitch {
                slot: crate::contract::Slot::B,
                why: "no generation here; its kernel booted a good generation before".into(),
            },
            Event::Rescue { why: "no generation on the system partition".into() },
            Event::BootTimes(BootTimes {
                generation: 2,
                kernel_ms: 990,
                stage1_ms: 1410,
                activation_ms: 400,
                complete_ms: 9400,
                slowest: vec![("systemd-networkd.service".into(), 2374), ("systemd-udev-trigger.service".into(), 2060)],
            }),
            Event::BootTimes(BootTimes {
                generation: 1,
                kernel_ms: 980,
                stage1_ms: 1400,
                activation_ms: 90,
                complete_ms: 3000,
                slowest: Vec::new(),
            }),
            Event::Unlock(Unlock::Ask(PinFor::Choose)),
            Event::Unlock(Unlock::Ask(PinFor::Again)),
            Event::Unlock(Unlock::Ask(PinFor::Unlock)),
            Event::Unlock(Unlock::Typed { digits: 6 }),
            Event::Unlock(Unlock::Wrong { failures: 4, wait_s: 5 }),
            Event::Unlock(Unlock::Open { made: true }),
            Event::Unlock(Unlock::Open { made: false }),
            Event::Screen(crate::screen::Scene::Notice {
                device: "QEMU aarch64 phone".into(),
                title: "Generation 8 failed: booting 7".into(),
                text: "the default generation 8 is bad (health check): falling back to generation 7".into(),
                generation: Some(crate::screen::Label { number: 7, date: "2026-12-07".into() }),
            }),
        ];
        for e in all {
            for before in ["", "[   41.2] mobix-init[301]: ", "\r"] {
                let line = format!("{before}{PREFIX}{}", e.line());
                assert_eq!(Event::find(&line), Some(e.clone()), "{line}");
            }
        }
        // Words after the fields are for people.
        let said = "mobix: GEN-CHOSEN generation=1 status=degraded tries_left=0 (newest; nothing counted)";
        assert_eq!(Event::find(said), Some(Event::Chosen { generation: 1, status: Chosen::Degraded, tries_left: 0 }));
        for other in [
            "mobix: a volume key is held",
            "GEN-CHOSEN generation=1",
            "mobix: GEN-CHOSEN generation=x status=good tries_left=0",
            "mobix: SCREEN {\"screen\": \"boot\"",
        ] {
            assert_eq!(Event::find(other), None, "{other}");
        }
    }
}
