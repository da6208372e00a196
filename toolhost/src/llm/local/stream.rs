//! Turning generated tokens into answer text and tool-call arguments, one token at a time:
//! UTF-8 reassembly (a token may hold part of a character), stop sequences (cut before them,
//! never streamed, even when split across tokens), and brace tracking for a forced JSON call.

/// Joins token bytes into text, releasing only complete characters.
#[derive(Debug, Default)]
pub struct Utf8Joiner {
    pending: Vec<u8>,
}

impl Utf8Joiner {
    /// Adds bytes; returns the text that is now complete. Invalid bytes become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for its other bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end of generation (an incomplete character), replaced.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Cuts the text at the first stop sequence. Text that might be the start of a stop sequence is
/// held back until the next piece decides it, so what was released never contains one.
#[derive(Debug)]
pub struct StopCutter {
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already released.
    released: usize,
    stopped: bool,
}

/// What one piece of text produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Cut {
    /// Text that is now final (may be empty).
    pub release: String,
    /// A stop sequence was reached: generation should end.
    pub stopped: bool,
}

impl StopCutter {
    pub fn new(stops: &[String]) -> StopCutter {
        StopCutter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            text: String::new(),
            released: 0,
            stopped: false,
        }
    }

    pub fn push(&mut self, piece: &str) -> Cut {
        if self.stopped {
            return Cut {
                release: String::new(),
                stopped: true,
            };
        }
        self.text.push_str(piece);
        let unreleased = &self.text[self.released..];
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| unreleased.find(s.as_str()))
            .min()
        {
            let end = self.released + at;
            self.text.truncate(end);
            self.stopped = true;
            return Cut {
                release: self.release_to(end),
                stopped: true,
            };
        }
        let end = self.text.len() - self.held_back();
        Cut {
            release: self.release_to(end),
            stopped: false,
        }
    }

    /// The end of generation: whatever was held back is released.
    pub fn finish(&mut self) -> String {
        self.release_to(self.text.len())
    }

    /// The whole text so far, cut at the stop sequence if one was reached.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The length of the longest unreleased tail that is a proper prefix of a stop sequence.
    fn held_back(&self) -> usize {
        let unreleased = &self.text[self.released..];
        self.stops
            .iter()
            .flat_map(|s| {
                (1..s.len().min(unreleased.len() + 1))
                    .filter(|&k| s.is_char_boundary(k) && unreleased.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0)
    }

    fn release_to(&mut self, end: usize) -> String {
        let out = self.text[self.released..end].to_string();
        self.released = end;
        out
    }
}

/// Tracks a JSON object through its bytes to find the brace that closes it, skipping braces
/// inside strings. Fed from the object's opening brace on.
#[derive(Debug)]
pub struct ObjectCloser {
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl ObjectCloser {
    pub fn new() -> ObjectCloser {
        ObjectCloser {
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// Feeds one byte; true when it is the brace that closes the object.
    pub fn push(&mut self, b: u8) -> bool {
        if self.in_string {
            match (self.escaped, b) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => self.in_string = false,
                _ => {}
            }
            return false;
        }
        match b {
            b'"' => self.in_string = true,
            b'{' => self.depth += 1,
            b'}' if self.depth > 0 => {
                self.depth -= 1;
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_released_per_complete_character() {
        let mut j = Utf8Joiner::default();
        let e_acute = "é".as_bytes();
        assert_eq!(j.push(b"caf"), "caf");
        assert_eq!(j.push(&e_acute[..1]), "");
        assert_eq!(j.push(&e_acute[1..]), "é");
        assert_eq!(j.push(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(j.push(&[0xE2, 0x9C]), "");
        assert_eq!(j.finish(), "\u{FFFD}");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut c = StopCutter::new(&stops);
        let mut released = Vec::new();
        let mut stopped = false;
        for p in pieces {
            let cut = c.push(p);
            released.push(cut.release);
            if cut.stopped {
                stopped = true;
                break;
            }
        }
        if !stopped {
            released.push(c.finish());
        }
        (released, c.text().to_string(), stopped)
    }

    #[test]
    fn stop_sequence_inside_a_piece_cuts_it() {
        let (released, text, stopped) = run(&["\n\n"], &["Hello", " there\n\nBye"]);
        assert!(stopped);
        assert_eq!(text, "Hello there");
        assert_eq!(released.concat(), "Hello there");
    }

    #[test]
    fn stop_sequence_split_across_pieces_is_never_released() {
        let (released, text, stopped) = run(&["END"], &["one E", "N", "D two"]);
        assert!(stopped);
        assert_eq!(text, "one ");
        assert_eq!(released, vec!["one ", "", ""]);
    }

    #[test]
    fn a_false_start_is_released_later() {
        let (released, text, stopped) = run(&["END"], &["one EN", "X", " two"]);
        assert!(!stopped);
        assert_eq!(text, "one ENX two");
        assert_eq!(released, vec!["one ", "ENX", " two", ""]);
        // Held back until the end of generation.
        let (released, _, _) = run(&["END"], &["a E"]);
        assert_eq!(released, vec!["a ", "E"]);
    }

    #[test]
    fn earliest_of_several_stops_wins_and_empty_stops_are_ignored() {
        let (_, text, stopped) = run(&["", "b", "a"], &["xxab"]);
        assert!(stopped);
        assert_eq!(text, "xx");
        let (_, text, stopped) = run(&[""], &["xx"]);
        assert!(!stopped);
        assert_eq!(text, "xx");
    }

    #[test]
    fn multibyte_stop_prefixes_hold_on_char_boundaries() {
        let (released, text, stopped) = run(&["→|"], &["a→", "|b"]);
        assert!(stopped);
        assert_eq!(text, "a");
        assert_eq!(released, vec!["a", ""]);
    }

    /// The index of the closing byte (counted after the opening brace), if the object closes.
    fn close(after_open: &str) -> Option<usize> {
        let mut c = ObjectCloser::new();
        assert!(!c.push(b'{'));
        after_open.bytes().position(|b| c.push(b))
    }

    #[test]
    fn braces_close_the_object_outside_strings_only() {
        assert_eq!(close(r#""expression": "(2 + 3) * 7"}"#), Some(27));
        assert_eq!(close(r#""a": {"b": [1, {"c": 2}]}} trailing"#), Some(25));
        assert_eq!(close(r#""a": "}{\"}"} x"#), Some(12));
        assert_eq!(close(r#""a": "\\"}"#), Some(9));
        assert_eq!(close(r#""a": {"b": 1}"#), None);
        assert_eq!(close(r#""a": "unterminated }"#), None);
    }
}
