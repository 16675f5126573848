//! The one renderer of an error chain.
//!
//! Every error type in the crate has a short message of its own and keeps its cause only in
//! `source()`, so nothing is said twice. Where an error leaves the process (a D-Bus error reply,
//! which NetworkManager logs verbatim, or a log line), it is rendered once, here, as
//! `message: cause: cause's cause`.

use std::error::Error;
use std::fmt;

/// Displays an error with every cause in its `source()` chain, separated by `": "`.
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The error and all its causes in one line.
pub fn chain(e: &dyn Error) -> String {
    Chain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot open the record")]
        Open(#[source] std::io::Error),
    }

    #[test]
    fn every_cause_once() {
        let e = Outer::Open(std::io::Error::from_raw_os_error(2));
        assert_eq!(
            chain(&e),
            "cannot open the record: No such file or directory (os error 2)"
        );
    }
}
