//! The one way Caxton prints an error with its causes: `Chain(&e)` displays the error and each
//! `source()` after it, separated by `: `, so a message never repeats its cause and a cause is
//! never lost. Binaries print with it once, where the error is handled; the wire type
//! [`crate::api::ErrorBody`] carries the printed chain across a process edge.

use std::fmt;

/// Displays an error followed by its chain of causes.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the database {path}")]
    struct Open {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn every_cause_once_in_order() {
        let e = Open {
            path: "/x".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(
            Chain(&e).to_string(),
            "cannot open the database /x: no such file"
        );
    }
}
