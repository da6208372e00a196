//! Writes 64 KiB to stderr on every call, then answers: a chatty but honest tool.
fn main() {
    hostile_guests::serve_tools("chatter", &["chatter"], |method, msg| {
        (method == "tools/call").then(|| {
            let line = "chatter: a line of diagnostics that nobody asked for\n".repeat(1200);
            eprint!("{line}");
            eprintln!("chatter: last words");
            hostile_guests::text_result(&msg["id"], "ok", false)
        })
    });
}
