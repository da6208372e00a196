//! Allocates memory until the host refuses it when called.
fn main() {
    hostile_guests::serve("hog", |_| {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    });
}
