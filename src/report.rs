//! Progress as events. The stages below `cli` say what they are doing through a
//! [`Reporter`]; only `cli` turns the events into lines and bars on the terminal (or into
//! nothing, for a library caller or a test that collects them).
//!
//! No I/O here.

/// One thing worth telling the person waiting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// A line for people ("built sw in 3.1s").
    Note(&'a str),
    /// A step that runs a while has started: `label`, with `done` of `total` steps of the
    /// run finished before it (`total` 0: the run's length is not known).
    StepStarted { label: &'a str, done: usize, total: usize },
    /// The running step has ended.
    StepFinished,
    /// A transfer of known size moved on (a download, an image written, a flash).
    Bytes { label: &'a str, done: u64, total: u64 },
    /// The transfer has ended.
    BytesFinished,
}

/// Where events go. Anything that takes a line (`Fn(&str)`) is a reporter of notes that
/// lets the rest pass.
pub trait Reporter: Sync {
    fn event(&self, e: Event<'_>);

    fn note(&self, msg: &str) {
        self.event(Event::Note(msg));
    }

    /// Starts a step; it finishes when the returned guard is dropped.
    fn step(&self, label: &str, done: usize, total: usize) -> StepGuard<'_>
    where
        Self: Sized,
    {
        self.event(Event::StepStarted { label, done, total });
        StepGuard { to: self }
    }
}

impl<F: Fn(&str) + Sync> Reporter for F {
    fn event(&self, e: Event<'_>) {
        if let Event::Note(m) = e {
            self(m)
        }
    }
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _: Event<'_>) {}
}

/// Ends a step when dropped (also when the step fails).
pub struct StepGuard<'a> {
    to: &'a dyn Reporter,
}

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        self.to.event(Event::StepFinished);
    }
}

/// Starts a step on a `dyn Reporter` (the trait method needs a sized one).
pub fn step<'a>(to: &'a dyn Reporter, label: &str, done: usize, total: usize) -> StepGuard<'a> {
    to.event(Event::StepStarted { label, done, total });
    StepGuard { to }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Log(std::sync::Mutex<Vec<String>>);
    impl Reporter for Log {
        fn event(&self, e: Event<'_>) {
            self.0.lock().unwrap().push(format!("{e:?}"));
        }
    }

    #[test]
    fn a_step_finishes_when_its_guard_goes_even_on_failure() {
        let log = Log(Default::default());
        fn fails(log: &Log) -> Result<(), ()> {
            let _s = step(log, "building sw", 2, 5);
            log.note("half way");
            Err(())
        }
        assert!(fails(&log).is_err());
        assert_eq!(
            *log.0.lock().unwrap(),
            ["StepStarted { label: \"building sw\", done: 2, total: 5 }", "Note(\"half way\")", "StepFinished"]
        );
    }

    #[test]
    fn a_line_taker_gets_the_notes_only() {
        let lines = std::sync::Mutex::new(Vec::new());
        let f = |m: &str| lines.lock().unwrap().push(m.to_string());
        let r: &dyn Reporter = &f;
        r.note("one");
        r.event(Event::Bytes { label: "x", done: 1, total: 2 });
        drop(step(r, "s", 0, 0));
        assert_eq!(*lines.lock().unwrap(), ["one"]);
    }
}
