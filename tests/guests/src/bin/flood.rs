//! Writes one endless stdout line (no newline) when called.
use std::io::Write;

fn main() {
    hostile_guests::serve("flood", |_| {
        let chunk = [b'x'; 64 * 1024];
        let mut out = std::io::stdout().lock();
        loop {
            if out.write_all(&chunk).is_err() {
                std::process::exit(1);
            }
        }
    });
}
