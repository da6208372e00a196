//! Answers its call, then keeps computing forever while no call is in progress.
use std::io::Write;

fn main() {
    hostile_guests::serve_tools("afterburn", &["afterburn"], |method, msg| {
        if method != "tools/call" {
            return None;
        }
        let line = hostile_guests::text_result(&msg["id"], "answered", false);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    });
}
