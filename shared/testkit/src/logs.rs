//! [`LogBuffer`]: what a tracing subscriber writes, kept in memory for a test to read. Hand
//! `move || buf.clone()` to `tracing_subscriber::fmt().with_writer(..)` (a closure returning an
//! `io::Write` is a `MakeWriter`), then read [`LogBuffer::text`].

use std::sync::{Arc, Mutex, PoisonError};

/// An in-memory log sink. Cheap to clone; clones share the bytes.
#[derive(Clone, Debug, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything written so far (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn clones_share_what_was_written() {
        let buf = LogBuffer::default();
        let mut w = buf.clone();
        w.write_all(b"one ").unwrap();
        buf.clone().write_all(b"two").unwrap();
        assert_eq!(buf.text(), "one two");
    }
}
