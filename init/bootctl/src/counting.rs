//! Boot counting and automatic fallback, as a pure state machine over the boot-state
//! record (the semantics of systemd's Automatic Boot Assessment; ARCHITECTURE.md says who
//! uses it).
//!
//! Stage-1 decrements a trial's tries *before* booting it and persists that first, so a
//! crash at any later point counts as a failed try without anyone detecting it. A trial
//! with no tries left becomes bad and the next candidate boots. Stage-2 blesses the running
//! generation (good) once the system reached its success point. When the default cannot
//! boot, the fallback is the generation that last booted good on this phone, never one that
//! has not proved itself here while one that has is left.

use crate::contract::Slot;
use crate::record::{BadReason, Record, Status};

/// What stage-1 does on this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Boot this generation; `trial` if it still has to prove itself.
    Boot { generation: u32, trial: bool },
    /// The record is unreadable: boot the newest generation, count nothing, mark nothing.
    Degraded { generation: u32 },
    /// Nothing bootable for the running kernel: a rescue shell, with the reason.
    Rescue { why: String },
}

/// Where stage-1 goes when nothing can boot with the kernel of `slot` (step 7 of the
/// design): back to the other slot of an A/B pair, if a generation last found good there is
/// still not bad, undoing a kernel update whose generations all failed. None: rescue.
pub fn slot_to_return_to(r: &Record, slot: Slot) -> Option<Slot> {
    let other = slot.other();
    let g = r.last_good[other.index()];
    (g != 0 && r.entries.iter().any(|e| e.generation == g && !e.status.is_bad())).then_some(other)
}

/// Stage-1's choice. `record` is what both copies gave (None: both corrupt); `present` the
/// generations on the system partition that can run with the running kernel; `slot` the
/// running A/B slot. Returns the decision
/// and, when the record changed, the record to persist *before* switching root: if that
/// write fails, only a non-trial decision may go ahead.
pub fn select(record: Option<&Record>, present: &[u32], slot: Slot) -> (Decision, Option<Record>) {
    let Some(rec) = record else {
        return match present.iter().max() {
            Some(&g) => (Decision::Degraded { generation: g }, None),
            None => (Decision::Rescue { why: "no generation on the system partition".into() }, None),
        };
    };
    let mut r = rec.clone();
    // The bootloader went back from the new kernel's slot: that generation failed.
    if r.pending_slot.valid && slot == r.pending_slot.from && slot != r.pending_slot.to {
        let g = r.pending_slot.generation;
        // (Unless it was found bad already, e.g. its tries used up under the new kernel:
        // the first reason stays.)
        if let Some(e) = r.entries.iter_mut().find(|e| e.generation == g && !e.status.is_bad()) {
            e.status = Status::Bad(BadReason::Kernel);
        }
        r.pending_slot.valid = false;
    }
    for e in r.entries.iter_mut() {
        if e.status == Status::Trial && e.tries_left == 0 {
            e.status = Status::Bad(BadReason::Tries);
        }
    }
    let mut candidates: Vec<&crate::record::Entry> =
        r.entries.iter().filter(|e| !e.status.is_bad() && present.contains(&e.generation)).collect();
    // The default first (an update's trial, or what the owner runs); when it cannot boot,
    // the generation that last booted good with this slot's kernel, then any found good
    // here, newest first; a generation that never proved itself on this phone only when
    // none did.
    let last_good = r.last_good[slot.index()];
    candidates.sort_by_key(|e| {
        (
            e.generation != r.default_gen,
            e.generation != last_good,
            e.status != Status::Good,
            std::cmp::Reverse(e.generation),
        )
    });
    let decision = match candidates.first() {
        None => Decision::Rescue { why: format!("no good or trial generation for the kernel in slot {slot}") },
        Some(e) => Decision::Boot { generation: e.generation, trial: e.status == Status::Trial },
    };
    if let Decision::Boot { generation, trial } = decision {
        if trial {
            let e = r.entries.iter_mut().find(|e| e.generation == generation).expect("a candidate");
            e.tries_left -= 1;
            e.tries_done = e.tries_done.saturating_add(1);
        }
        r.booted_gen = generation;
    }
    if r != *rec {
        r.seq += 1;
        (decision, Some(r))
    } else {
        (decision, None)
    }
}

/// Why stage-1 boots `generation` rather than the default of `r` (the record as this boot
/// left it), in words for the phone's console and screen; None when it boots the default.
pub fn fallback_words(r: &Record, generation: u32) -> Option<String> {
    if generation == r.default_gen {
        return None;
    }
    let d = r.default_gen;
    let why = match r.entries.iter().find(|e| e.generation == d).map(|e| e.status) {
        Some(Status::Bad(reason)) => format!("the default generation {d} is bad ({})", reason.name()),
        Some(_) => format!("the default generation {d} cannot run with this kernel"),
        None => format!("the default generation {d} is not on this phone"),
    };
    Some(format!("{why}: falling back to generation {generation}, {}", fallback_what(r, generation)))
}

/// What the generation fallen back to is, in words.
fn fallback_what(r: &Record, generation: u32) -> &'static str {
    match r.entries.iter().find(|e| e.generation == generation).map(|e| e.status) {
        Some(Status::Good) if r.last_good.contains(&generation) => "the last one that booted good on this phone",
        Some(Status::Good) => "one that booted good on this phone",
        _ => "which has not booted good on this phone yet (none that has is left)",
    }
}

/// The same as [`fallback_words`], for the phone's screen: a title and a sentence that a
/// person holding the phone understands without the record's words.
pub fn fallback_notice(r: &Record, generation: u32) -> Option<(String, String)> {
    if generation == r.default_gen {
        return None;
    }
    let d = r.default_gen;
    let e = r.entries.iter().find(|e| e.generation == d);
    let (title, why) = match e.map(|e| e.status) {
        Some(Status::Bad(reason)) => {
            (
                format!("Generation {d} failed"),
                match reason {
                    BadReason::Tries => format!(
                    "Generation {d} did not come up on any of its {} tries (a failed health check, a hang or a crash).",
                    e.map_or(0, |e| e.tries_done)
                ),
                    BadReason::Kernel => {
                        format!("The new kernel of generation {d} did not start: the bootloader went back to the other slot.")
                    }
                    BadReason::User => format!("Generation {d} was marked bad by hand."),
                    BadReason::Unspecified => format!("Generation {d} is marked bad."),
                },
            )
        }
        Some(_) => (
            format!("Generation {d} cannot boot here"),
            format!("Generation {d} was built for another kernel than this boot image's."),
        ),
        None => (format!("Generation {d} is missing"), format!("Generation {d} is not on this phone.")),
    };
    Some((title, format!("{why} Booting generation {generation}, {}.", fallback_what(r, generation))))
}

/// Stage-2 at its success point: the running generation is good (and the last good one of
/// its kernel slot); a kernel update it came with is complete.
pub fn bless(rec: &Record) -> Record {
    let mut r = rec.clone();
    let g = r.booted_gen;
    if let Some(e) = r.entries.iter_mut().find(|e| e.generation == g) {
        if e.status == Status::Trial {
            e.status = Status::Good;
        }
        r.last_good[e.kernel_slot.index()] = g;
    }
    // A default that failed gives way to the generation that just proved itself.
    let default_ok = r.entries.iter().any(|e| e.generation == r.default_gen && !e.status.is_bad());
    if !default_ok {
        r.default_gen = g;
    }
    if r.pending_slot.generation == g {
        r.pending_slot.valid = false;
    }
    r.seq += 1;
    r
}

/// A deploy's new generation `generation` (toplevel identity `id`, running with the kernel
/// of `kernel_slot`) joins the record as a trial with `tries` tries and becomes the default,
/// as a new system image would have it. A full record makes room by dropping its oldest
/// entry that is not booted, default or last good; the entries stage-1 may fall back to are
/// never dropped. Refused: the number taken by another toplevel, or no room.
pub fn add_trial(rec: &Record, generation: u32, id: [u8; 16], kernel_slot: Slot, tries: u8) -> Result<Record, String> {
    use crate::record::{Entry, MAX_ENTRIES};
    let mut r = rec.clone();
    if let Some(e) = r.entries.iter().find(|e| e.generation == generation) {
        if e.id != id {
            return Err(format!("the phone's generation {generation} is another system; deploy under a new number"));
        }
        r.entries.retain(|e| e.generation != generation);
    }
    if r.entries.len() >= MAX_ENTRIES {
        let protected = r.protected();
        let keep = |g: u32| protected.contains(&g);
        let Some(oldest) = r.entries.iter().map(|e| e.generation).filter(|g| !keep(*g)).min() else {
            return Err(format!("the boot-state record is full ({MAX_ENTRIES} entries that must stay)"));
        };
        r.entries.retain(|e| e.generation != oldest);
    }
    r.entries.push(Entry { generation, id, kernel_slot, tries_left: tries, tries_done: 0, status: Status::Trial });
    r.entries.sort_by_key(|e| e.generation);
    r.default_gen = generation;
    r.seq += 1;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Entry, PendingSlot};

    fn entry(generation: u32, status: Status, tries: u8) -> Entry {
        Entry { generation, id: [generation as u8; 16], kernel_slot: Slot::A, tries_left: tries, tries_done: 0, status }
    }

    /// Generation 1 good; generation 2 a fresh trial with `tries` tries and the default.
    fn update(tries: u8) -> Record {
        Record {
            seq: 1,
            default_gen: 2,
            booted_gen: 1,
            last_good: [1, 0],
            pending_slot: PendingSlot::default(),
            entries: vec![entry(1, Status::Good, 0), entry(2, Status::Trial, tries)],
        }
    }

    #[test]
    fn a_failing_trial_is_tried_n_times_then_the_good_one_boots() {
        let mut r = update(3);
        let mut booted = Vec::new();
        for _ in 0..6 {
            let (d, next) = select(Some(&r), &[1, 2], Slot::A);
            if let Some(n) = next {
                r = n;
            }
            match d {
                Decision::Boot { generation, .. } => booted.push(generation),
                other => panic!("{other:?}"),
            }
            // Generation 2 never reaches its success point; generation 1 is already good.
        }
        assert_eq!(booted, [2, 2, 2, 1, 1, 1]);
        let g2 = r.entries.iter().find(|e| e.generation == 2).unwrap();
        assert_eq!((g2.status, g2.tries_done), (Status::Bad(BadReason::Tries), 3));
    }

    #[test]
    fn a_blessed_trial_stays_the_default() {
        let (d, next) = select(Some(&update(3)), &[1, 2], Slot::A);
        assert_eq!(d, Decision::Boot { generation: 2, trial: true });
        let r = bless(&next.unwrap());
        assert_eq!(r.last_good[0], 2);
        for _ in 0..5 {
            let (d, next) = select(Some(&r), &[1, 2], Slot::A);
            assert_eq!(d, Decision::Boot { generation: 2, trial: false });
            assert!(next.is_none() || next.unwrap().booted_gen == 2, "a good boot changes nothing else");
        }
    }

    #[test]
    fn a_bootloader_fallback_marks_the_new_kernels_generation_bad() {
        let mut r = update(3);
        r.entries[1].kernel_slot = Slot::B;
        r.pending_slot = PendingSlot { from: Slot::A, to: Slot::B, generation: 2, valid: true };
        // Running slot a again: the bootloader gave up on slot b's kernel.
        let (d, next) = select(Some(&r), &[1, 2], Slot::A);
        assert_eq!(d, Decision::Boot { generation: 1, trial: false });
        let n = next.unwrap();
        assert_eq!(n.entries[1].status, Status::Bad(BadReason::Kernel));
        assert!(!n.pending_slot.valid);
    }

    /// Issue 30's flow: 1 booted good, 2 and 3 were built (carried as untried trials) but
    /// never booted, 4 is the update. When 4 fails, the phone goes back to 1, not to the
    /// newer 3 that never proved itself; only when nothing good is left does it try one.
    #[test]
    fn a_failed_update_falls_back_to_the_last_good_not_to_an_untried_newer_one() {
        let mut r = Record {
            seq: 1,
            default_gen: 4,
            booted_gen: 1,
            last_good: [1, 0],
            pending_slot: PendingSlot::default(),
            entries: vec![
                entry(1, Status::Good, 0),
                entry(2, Status::Trial, 1),
                entry(3, Status::Trial, 1),
                entry(4, Status::Trial, 1),
            ],
        };
        let (d, next) = select(Some(&r), &[1, 2, 3, 4], Slot::A);
        assert_eq!(d, Decision::Boot { generation: 4, trial: true });
        r = next.unwrap();
        assert_eq!(fallback_words(&r, 4), None);
        // 4 never reaches its success point.
        let (d, next) = select(Some(&r), &[1, 2, 3, 4], Slot::A);
        assert_eq!(d, Decision::Boot { generation: 1, trial: false });
        r = next.unwrap();
        assert_eq!(
            fallback_words(&r, 1).unwrap(),
            "the default generation 4 is bad (tries): falling back to generation 1, the last one that booted good on this phone"
        );
        // The screen's words for the same, with the tries spent.
        let tries = r.entries.iter().find(|e| e.generation == 4).unwrap().tries_done;
        assert_eq!(
            fallback_notice(&r, 1).unwrap(),
            (
                "Generation 4 failed".to_string(),
                format!(
                    "Generation 4 did not come up on any of its {tries} tries (a failed health check, a hang or a \
                     crash). Booting generation 1, the last one that booted good on this phone."
                )
            )
        );
        assert_eq!(fallback_notice(&r, 4), None);
        // A good one that is not the slot's last good still comes before an untried one.
        let mut other = r.clone();
        other.last_good = [0, 0];
        assert_eq!(select(Some(&other), &[1, 2, 3, 4], Slot::A).0, Decision::Boot { generation: 1, trial: false });
        // With 1 gone bad too, the newest untried one is all there is, and the words say so.
        r.entries[0].status = Status::Bad(BadReason::User);
        let (d, next) = select(Some(&r), &[1, 2, 3, 4], Slot::A);
        assert_eq!(d, Decision::Boot { generation: 3, trial: true });
        assert!(fallback_words(&next.unwrap(), 3)
            .unwrap()
            .ends_with("which has not booted good on this phone yet (none that has is left)"));
    }

    #[test]
    fn corrupt_state_degrades_and_nothing_bootable_is_rescue() {
        assert_eq!(select(None, &[1, 3, 2], Slot::A).0, Decision::Degraded { generation: 3 });
        let mut r = update(0);
        r.entries[0].status = Status::Bad(BadReason::User);
        assert!(matches!(select(Some(&r), &[1, 2], Slot::A).0, Decision::Rescue { .. }));
    }

    #[test]
    fn nothing_for_the_new_kernel_returns_to_the_slot_that_was_good() {
        let mut r = update(0);
        r.last_good = [1, 0];
        // Running slot b, whose generation 2 used up its tries: go back to a.
        let (d, next) = select(Some(&r), &[2], Slot::B);
        assert!(matches!(d, Decision::Rescue { .. }), "{d:?}");
        let next = next.unwrap_or(r.clone());
        assert_eq!(slot_to_return_to(&next, Slot::B), Some(Slot::A));
        // Not when slot a's last good generation is bad too, or unknown.
        let mut bad = next.clone();
        bad.entries.iter_mut().filter(|e| e.generation == 1).for_each(|e| e.status = Status::Bad(BadReason::User));
        assert_eq!(slot_to_return_to(&bad, Slot::B), None);
        let mut none = next.clone();
        none.last_good = [0, 0];
        assert_eq!(slot_to_return_to(&none, Slot::B), None);
    }

    /// Random interleavings of boots, crashes before and after persisting, failed health
    /// checks and blessings, against the invariants of boot counting.
    #[test]
    fn random_interleavings_keep_the_invariants() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut settled_runs = 0;
        for _ in 0..2000 {
            let tries = 1 + rand(5) as u8;
            let mut disk = update(tries); // what is persisted
            let mut trial_boots = 0u32;
            let mut blessed = false;
            let good_forever = rand(3) == 0; // does generation 2 ever pass its health check?
            for _ in 0..20 {
                let (d, next) = select(Some(&disk), &[1, 2], Slot::A);
                // The write of the decision may be lost (power cut before it lands).
                let persisted = match next {
                    Some(n) if rand(4) != 0 => {
                        disk = n;
                        true
                    }
                    Some(_) => false,
                    None => true,
                };
                let Decision::Boot { generation, trial } = d else { panic!("{d:?}") };
                if trial && !persisted {
                    // Stage-1 may not boot a trial whose try was not recorded: it reboots
                    // (or boots a good one); nothing else happened.
                    continue;
                }
                if generation == 2 && trial {
                    trial_boots += 1;
                }
                assert!(trial_boots <= tries as u32, "a trial booted more often than its tries");
                assert!(
                    !(generation == 1 && disk.entries[1].status == Status::Trial && disk.entries[1].tries_left > 0),
                    "a trial with tries left was skipped"
                );
                // The system runs: it crashes, hangs, or reaches its success point.
                if generation == 2 && good_forever && rand(2) == 0 {
                    disk = bless(&disk);
                    blessed = true;
                }
                assert!(!disk.entries[0].status.is_bad(), "the good generation is never marked bad");
                if blessed {
                    assert_eq!(disk.entries[1].status, Status::Good, "a blessed generation stays good");
                }
            }
            if !blessed {
                // After at most its tries, the update is bad and generation 1 boots.
                let (d, _) = select(Some(&disk), &[1, 2], Slot::A);
                let settled = disk.entries[1].tries_left == 0 || disk.entries[1].status.is_bad();
                if settled {
                    assert_eq!(d, Decision::Boot { generation: 1, trial: false });
                    settled_runs += 1;
                }
            }
        }
        assert!(settled_runs > 100, "the fallback check ran in only {settled_runs} runs");
    }

    #[test]
    fn a_deployed_generation_is_the_trial_and_falls_back_like_a_flashed_one() {
        let mut r = update(3);
        r.entries[1].status = Status::Good;
        (r.booted_gen, r.last_good) = (2, [2, 0]);
        let mut r = add_trial(&r, 3, [3; 16], Slot::A, 2).unwrap();
        assert_eq!((r.default_gen, r.entries.len()), (3, 3));
        let mut booted = Vec::new();
        for _ in 0..4 {
            let (d, next) = select(Some(&r), &[1, 2, 3], Slot::A);
            r = next.unwrap_or(r);
            if let Decision::Boot { generation, .. } = d {
                booted.push(generation);
            }
        }
        assert_eq!(booted, [3, 3, 2, 2], "two tries, then the newest good one");
        assert_eq!(
            add_trial(&r, 3, [9; 16], Slot::A, 2).unwrap_err(),
            "the phone's generation 3 is another system; deploy under a new number"
        );
    }

    #[test]
    fn a_full_record_drops_its_oldest_entry_but_never_one_to_fall_back_to() {
        let mut r = update(3);
        r.entries = (1..=32).map(|g| entry(g, Status::Good, 0)).collect();
        (r.booted_gen, r.default_gen, r.last_good) = (1, 2, [3, 0]);
        let n = add_trial(&r, 40, [4; 16], Slot::A, 3).unwrap();
        assert_eq!(n.entries.len(), 32);
        assert!(n.entries.iter().all(|e| e.generation != 4), "4 is the oldest that may go");
        for g in [1, 2, 3, 40] {
            assert!(n.entries.iter().any(|e| e.generation == g), "{g} stays");
        }
    }
}
