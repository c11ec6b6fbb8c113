//! The terminal: the one place where progress events become lines and bars on stderr.
//! Bars (indicatif) show only on a terminal; notes always print, as `mobix: …` lines.

use crate::report::{Event, Reporter};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// The process's terminal reporter.
pub static TERMINAL: LazyLock<Terminal> = LazyLock::new(|| Terminal { bars: Mutex::new(Bars::default()) });

#[derive(Default)]
struct Bars {
    step: Option<ProgressBar>,
    bytes: Option<ProgressBar>,
}

pub struct Terminal {
    bars: Mutex<Bars>,
}

fn step_style(total: usize) -> ProgressStyle {
    let t = if total > 0 { "[{bar:20}] {pos:>3}/{len} {spinner} {msg} {elapsed}" } else { "{spinner} {msg} {elapsed}" };
    ProgressStyle::with_template(t).expect("a valid template").progress_chars("#>-")
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("  {msg} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
        .expect("a valid template")
        .progress_chars("#>-")
}

impl Reporter for Terminal {
    fn event(&self, e: Event<'_>) {
        let mut b = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            Event::Note(m) => {
                let line = format!("mobix: {m}");
                match b.step.as_ref().or(b.bytes.as_ref()).filter(|p| !p.is_hidden()) {
                    Some(p) => p.println(line),
                    None => eprintln!("{line}"),
                }
            }
            Event::StepStarted { label, done, total } => {
                let p = ProgressBar::new(total as u64).with_style(step_style(total)).with_message(label.to_string());
                p.set_position(done as u64);
                p.enable_steady_tick(Duration::from_millis(100));
                if let Some(old) = b.step.replace(p) {
                    old.finish_and_clear();
                }
            }
            Event::StepFinished => {
                if let Some(p) = b.step.take() {
                    p.finish_and_clear();
                }
            }
            Event::Bytes { label, done, total } => {
                let p = b.bytes.get_or_insert_with(|| {
                    ProgressBar::new(total).with_style(bytes_style()).with_message(label.to_string())
                });
                if p.message() != label {
                    p.reset();
                    p.set_message(label.to_string());
                }
                p.set_length(total);
                p.set_position(done);
            }
            Event::BytesFinished => {
                if let Some(p) = b.bytes.take() {
                    p.finish_and_clear();
                }
            }
        }
    }
}
