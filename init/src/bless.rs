//! `mobix-bless` on the phone: the running generation's standing in the boot-state record.
//! `mobix-bless status` shows the record, `mobix-bless bad` marks the running generation
//! bad at once (it is not booted again unless picked by hand), `mobix-bless good` blesses
//! it now, as stage-2 does at its success point.

use crate::state;
use mobix_bootctl::record::{BadReason, Status};

pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mobix-bless: {e}");
            1
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let boot = state::booted()?;
    let loc = boot.state.as_ref().ok_or("stage-1 recorded no boot-state location")?;
    match args.first().map(String::as_str) {
        Some("status") | None => {
            let r = state::read(loc)?;
            println!(
                "running generation {} ({}); default {}, last good {:?}, record seq {}",
                boot.generation, boot.mode, r.default_gen, r.last_good, r.seq
            );
            for e in &r.entries {
                let s = match e.status {
                    Status::Trial => format!("trial, {} tries left", e.tries_left),
                    Status::Good => "good".into(),
                    Status::Bad(r) => format!("bad ({})", r.name()),
                };
                println!("  {:>3}  {s}", e.generation);
            }
            Ok(())
        }
        Some("bad") => {
            let _turn = state::lock_record();
            let mut r = state::read(loc)?;
            let e = r
                .entries
                .iter_mut()
                .find(|e| e.generation == boot.generation)
                .ok_or_else(|| format!("generation {} is not in the boot-state record", boot.generation))?;
            e.status = Status::Bad(BadReason::User);
            r.seq += 1;
            state::write(loc, &r)?;
            println!("generation {} marked bad; the next boot takes another one", boot.generation);
            Ok(())
        }
        Some("good") => {
            println!("{}", crate::generation::bless(&boot));
            Ok(())
        }
        Some(other) => Err(format!("unknown verb {other:?} (status, good, bad)")),
    }
}
