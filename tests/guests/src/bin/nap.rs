//! Sleeps `ms` milliseconds (blocked in the host), then answers: a slow but honest tool, for the
//! concurrency limit.
fn main() {
    hostile_guests::serve_tools("nap", &["nap"], |method, msg| {
        (method == "tools/call").then(|| {
            let ms = msg["params"]["arguments"]["ms"].as_u64().unwrap_or(500);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            hostile_guests::text_result(&msg["id"], "slept", false)
        })
    });
}
