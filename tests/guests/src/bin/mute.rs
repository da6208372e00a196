//! Never answers when called: sleeps forever (blocked in the host, using no CPU).
fn main() {
    hostile_guests::serve("mute", |_| loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    });
}
