//! Never answers a call, but keeps reading: when the host cancels the call (MCP
//! `notifications/cancelled`), it says so on stderr.
fn main() {
    hostile_guests::serve_tools("mute", &["mute"], |method, msg| {
        if method == "notifications/cancelled" {
            eprintln!("mute: cancelled request {}", msg["params"]["requestId"]);
        }
        None
    });
}
