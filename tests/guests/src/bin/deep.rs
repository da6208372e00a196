//! Recurses until the stack overflows when called.
fn recurse(n: u64, pad: [u8; 256]) -> u64 {
    let pad = std::hint::black_box(pad);
    recurse(n + 1, pad) + u64::from(pad[0])
}

fn main() {
    hostile_guests::serve("deep", |_| recurse(0, [1; 256]).to_string());
}
