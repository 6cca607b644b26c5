//! The panic hook the binary installs: a panic is logged at error level with its location,
//! never with its message (which could quote tool arguments). In its own test binary because
//! the hook is process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn panics_are_logged_without_their_message() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    talos_mcp::quiet_panics();
    let joined = std::thread::Builder::new()
        .name("tool-worker".into())
        .spawn(|| panic!("config: PANIC-ARGUMENT-SECRET"))
        .unwrap()
        .join();
    let _ = std::panic::take_hook();
    assert!(joined.is_err());
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("ERROR") && log.contains("panicked") && log.contains("tool-worker"),
        "{log}"
    );
    assert!(log.contains("panics.rs"), "the location is logged: {log}");
    assert!(!log.contains("PANIC-ARGUMENT-SECRET"), "{log}");
}
