//! The console: every line mobix's init writes for a person or the host goes through here.

use std::io::Write;

/// An event for the host on the console, in the one format both sides know.
pub fn report(e: &mobix_bootctl::console::Event) {
    say(&e.line());
}

/// Prints a line on the console, prefixed so it stands out among kernel messages.
pub fn say(msg: &str) {
    // One write: a long line (a screen's scene) is not cut by the kernel's messages.
    let line = format!("mobix: {msg}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// The last resort: a shell on the console, if there is one; otherwise wait forever
/// (PID 1 exiting would panic the kernel and hide the message).
pub fn rescue(why: &str) -> ! {
    say(&format!("dropping to a rescue shell ({why})"));
    for sh in ["/bin/sh", "/run/current-system/sw/bin/sh"] {
        if std::path::Path::new(sh).exists() {
            let _ = std::process::Command::new(sh).status();
        }
    }
    say("no shell available; halting here");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
