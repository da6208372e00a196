//! Bearer tokens of the HTTP API (`[[http.tokens]]`). The config holds each token's SHA-256,
//! never its text; a presented token is hashed and compared with every configured hash in
//! constant time (all of them, whichever matches). A token's text is never logged: log lines,
//! metrics and records name the token by its `name`.
//!
//! Plain SHA-256 suffices: `caxton token new` makes tokens of 256 random bits, which no
//! dictionary holds, so a slow password hash would only slow every request.

use std::sync::Arc;

use caxton_config::TokenConfig;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::conversations::Caller;

/// A configured token with its run slots.
#[derive(Debug)]
pub struct Token {
    pub config: TokenConfig,
    pub name: Arc<str>,
    hash: [u8; 32],
    runs: Arc<Semaphore>,
}

impl Token {
    /// The caller a request with this token acts as.
    pub fn caller(&self) -> Caller {
        Caller::Token {
            name: self.name.clone(),
            admin: self.config.admin,
        }
    }

    /// A run slot, or `None` when `max_concurrent_runs` runs are going.
    pub fn run_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.runs.clone().try_acquire_owned().ok()
    }

    /// May this token read or cancel a run (or anything else) that `owner` started?
    pub fn owns(&self, owner: &str) -> bool {
        self.config.admin || *self.name == *owner
    }
}

/// Why a request is not authenticated (401).
#[derive(Debug, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A bearer token that matches none.
    Unknown,
}

impl Unauthenticated {
    pub fn message(&self) -> &'static str {
        match self {
            Unauthenticated::Missing => {
                "this endpoint needs a bearer token: send `Authorization: Bearer <token>` (`caxton token new NAME` makes one for [[http.tokens]])"
            }
            Unauthenticated::Unknown => "the bearer token is not one of [[http.tokens]]",
        }
    }
}

/// The configured tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

/// Lowercase hex SHA-256 of a token's text, as `[[http.tokens]] sha256` holds it.
pub fn hash_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        // The config checked the text: 64 lowercase hex digits.
        *byte = text
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    out
}

impl Tokens {
    pub fn new(configs: &[TokenConfig]) -> Tokens {
        Tokens {
            tokens: configs
                .iter()
                .map(|c| Token {
                    name: c.name.as_str().into(),
                    hash: unhex(&c.sha256),
                    runs: Arc::new(Semaphore::new(c.max_concurrent_runs)),
                    config: c.clone(),
                })
                .collect(),
        }
    }

    /// The token named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Token> {
        self.tokens.iter().find(|t| &*t.name == name)
    }

    /// The token the request's `Authorization` header presents.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Token, Unauthenticated> {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Unauthenticated::Missing)?;
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every hash is compared in full, whichever matches.
        let mut found = None;
        for token in &self.tokens {
            let diff = token
                .hash
                .iter()
                .zip(hash.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(token);
            }
        }
        found.ok_or(Unauthenticated::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn config(name: &str, token: &str) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            sha256: hash_hex(token),
            agents: vec![],
            read: false,
            memory: false,
            admin: false,
            max_concurrent_runs: 1,
        }
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_token_is_found_by_its_hash_and_only_by_it() {
        let tokens = Tokens::new(&[config("a", "secret-a"), config("b", "secret-b")]);
        assert_eq!(
            &*tokens.authenticate(&with("Bearer secret-b")).unwrap().name,
            "b"
        );
        assert_eq!(
            &*tokens
                .authenticate(&with("bearer  secret-a "))
                .unwrap()
                .name,
            "a"
        );
        for (header, why) in [
            ("Bearer secret-c", Unauthenticated::Unknown),
            ("Bearer ", Unauthenticated::Missing),
            ("Basic secret-a", Unauthenticated::Missing),
            ("secret-a", Unauthenticated::Missing),
        ] {
            assert_eq!(tokens.authenticate(&with(header)).unwrap_err(), why);
        }
        assert_eq!(
            tokens.authenticate(&HeaderMap::new()).unwrap_err(),
            Unauthenticated::Missing
        );
        // The known SHA-256 of "abc".
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn run_slots_are_per_token() {
        let tokens = Tokens::new(&[config("a", "x")]);
        let a = tokens.authenticate(&with("Bearer x")).unwrap();
        let slot = a.run_slot().unwrap();
        assert!(a.run_slot().is_none());
        drop(slot);
        assert!(a.run_slot().is_some());
    }
}
