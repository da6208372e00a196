//! Loops forever on the CPU when called.
fn main() {
    hostile_guests::serve("spin", |_| {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    });
}
