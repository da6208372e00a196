//! Frame fuzzing for the hostile suite: a small seeded generator, mutations of real encoded
//! messages (byte flips, huge declared lengths, truncation, random bytes), and a driver that
//! sends them to a socket on fresh connections after a valid `Hello`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use caxton_ipc::frame::{self, HEADER_LEN, PROTOCOL_VERSION};
use caxton_ipc::handshake::{Hello, Role};

/// A xorshift64* generator: deterministic for a seed, so a failure can be replayed with
/// `CAXTON_FUZZ_SEED`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `CAXTON_FUZZ_SEED`, else from the clock; the seed is printed.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("CAXTON_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{what}: CAXTON_FUZZ_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A length that no payload can hold, as bincode's varint: 2^62, 2^32 + 1 or u32::MAX.
fn huge_varint(rng: &mut Rng) -> Vec<u8> {
    match rng.below(3) {
        0 => {
            let mut v = vec![0xfd];
            v.extend_from_slice(&(1u64 << 62).to_le_bytes());
            v
        }
        1 => {
            let mut v = vec![0xfd];
            v.extend_from_slice(&((1u64 << 32) + 1).to_le_bytes());
            v
        }
        _ => {
            let mut v = vec![0xfc];
            v.extend_from_slice(&u32::MAX.to_le_bytes());
            v
        }
    }
}

/// One hostile payload derived from the encoded message `base` (without its frame header).
pub fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut p = base.to_vec();
    match rng.below(6) {
        // Flip a few bytes.
        0 => {
            for _ in 0..=rng.below(4) {
                if !p.is_empty() {
                    let i = rng.below(p.len());
                    p[i] ^= (rng.next_u64() as u8) | 1;
                }
            }
        }
        // A huge declared length in place of a byte (where strings and vectors start).
        1 | 2 => {
            let at = rng.below(p.len() + 1);
            let tail = p.split_off(at.min(p.len()));
            p.extend(huge_varint(rng));
            p.extend(tail.into_iter().skip(1));
        }
        // Truncated.
        3 => p.truncate(rng.below(p.len() + 1)),
        // Random bytes after the variant index.
        4 => {
            p.truncate(1);
            let n = rng.below(64);
            p.extend(rng.bytes(n));
        }
        // An unknown variant index.
        _ => {
            if !p.is_empty() {
                p[0] = 200 + rng.below(50) as u8;
            }
        }
    }
    p
}

/// A complete frame around `payload` (the header's length is the payload's).
pub fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&frame::MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The encoded payload of `msg` (its frame without the header).
pub fn payload_of<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    frame::encode(msg).expect("encode")[HEADER_LEN..].to_vec()
}

/// The Hello that opened the probe's fatal frame: role cli, protocol 1, and a `software`
/// string declaring 2^62 bytes.
pub fn fatal_hello() -> Vec<u8> {
    let mut payload = vec![0u8, 1, 0xfd];
    payload.extend_from_slice(&(1u64 << 62).to_le_bytes());
    payload.push(0);
    framed(&payload)
}

/// Sends `frames` on a fresh connection to `socket` (after a valid Hello when `hello` is set),
/// closes the writing side and reads whatever comes back until the server closes.
pub fn send_frames(socket: &Path, hello: Option<Role>, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    if let Some(role) = hello {
        s.write_all(&frame::encode(&Hello::new(role)).expect("encode"))?;
    }
    for f in frames {
        if s.write_all(f).is_err() {
            // The server closed after an earlier bad frame: fine.
            break;
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    Ok(())
}
