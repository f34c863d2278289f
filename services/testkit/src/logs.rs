//! Log capture: one process-wide tracing subscriber writing into memory, so tests can
//! read what a service logged (the dev mail sink's verification codes, above all).
//! Every test binary that reads logs calls [`captured`] first; the subscriber is global,
//! so a binary's tests share it and look for lines naming their own unique data.

use std::sync::{Arc, Mutex, OnceLock};

/// Log lines written by every test of this binary.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything logged so far, as text.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process-wide capture, installed (at INFO, without colours) on first call. If
/// another global subscriber was installed first, nothing is captured.
pub fn captured() -> &'static LogCapture {
    static LOG: OnceLock<LogCapture> = OnceLock::new();
    LOG.get_or_init(|| {
        let capture = LogCapture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        capture
    })
}

/// The verification code the dev mail sink logged for `email` (API.md: one info line
/// holding the email and the code), from the newest such line. Panics, naming the
/// email, when there is none or the line does not have that shape.
pub fn logged_code(email: &str) -> String {
    let text = captured().text();
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(email) && l.contains("verification code"))
        .unwrap_or_else(|| panic!("no code logged for {email}"));
    assert!(line.contains(" INFO "), "logged at info level: {line}");
    let marker = "code=";
    let start = line
        .find(marker)
        .unwrap_or_else(|| panic!("no code field in {line}"))
        + marker.len();
    let code: String = line[start..].chars().take(6).collect();
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{line}");
    assert!(line.contains(&format!("email={email}")), "{line}");
    code
}
