//! Answers a call with something that is not JSON-RPC.
fn main() {
    hostile_guests::serve("garble", |_| "this is not JSON-RPC {".to_string());
}
