//! Shipping server logs: at each re-observation the local runtime reads
//! what an instance's server log gained since the last one, as whole
//! lines, for the control plane to keep (`pgplane instance logs`).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use uuid::Uuid;

/// At most this much of a log is shipped per re-observation; a server
/// that wrote more has its oldest lines of the interval skipped, saying so.
pub const MAX_CHUNK: u64 = 64 * 1024;

/// Where each instance's log was read up to.
#[derive(Debug, Default)]
pub struct LogCursors(std::sync::Mutex<HashMap<Uuid, u64>>);

impl LogCursors {
    /// What the log at `path` gained since the last call for `id`: whole
    /// lines, at most [`MAX_CHUNK`] bytes of them; `None` when nothing was
    /// added (or there is no log yet). The first call for an instance
    /// starts at its newest [`MAX_CHUNK`] bytes; a log that shrank is read
    /// again from its start.
    pub fn read_new(&self, id: Uuid, path: &Path) -> std::io::Result<Option<String>> {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let mut cursors = self.0.lock().expect("log cursors poisoned");
        // A saved cursor is always at a line's start.
        let saved = cursors.get(&id).copied().filter(|&at| at <= len);
        let from = saved.unwrap_or_else(|| len.saturating_sub(MAX_CHUNK));
        if from >= len {
            return Ok(None);
        }
        let start = from.max(len.saturating_sub(MAX_CHUNK));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        (&mut file).take(len - start).read_to_end(&mut bytes)?;
        // Starting anywhere but a line's start: skip to the next one.
        let begin = if start == 0 || saved == Some(start) {
            0
        } else {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => {
                    cursors.insert(id, len);
                    return Ok(None);
                }
            }
        };
        // Only whole lines; the rest waits for its newline.
        let Some(end) = bytes[begin..].iter().rposition(|&b| b == b'\n') else {
            cursors.insert(id, start + begin as u64);
            return Ok(None);
        };
        let lines = &bytes[begin..begin + end + 1];
        cursors.insert(id, start + (begin + end + 1) as u64);
        let mut text = String::new();
        if let Some(at) = saved {
            let skipped = start + begin as u64 - at;
            if skipped > 0 {
                text.push_str(&format!("[pgplane: {skipped} bytes of the log skipped]\n"));
            }
        }
        text.push_str(&String::from_utf8_lossy(lines));
        Ok(Some(text))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn ships_whole_new_lines_once_and_skips_what_is_too_much() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postgres.log");
        let cursors = LogCursors::default();
        let id = Uuid::nil();
        assert_eq!(cursors.read_new(id, &path).unwrap(), None, "no log yet");
        let mut log = std::fs::File::create(&path).unwrap();
        write!(log, "one\ntwo\npart").unwrap();
        assert_eq!(
            cursors.read_new(id, &path).unwrap().as_deref(),
            Some("one\ntwo\n")
        );
        assert_eq!(
            cursors.read_new(id, &path).unwrap(),
            None,
            "the partial line waits"
        );
        writeln!(log, "ial").unwrap();
        assert_eq!(
            cursors.read_new(id, &path).unwrap().as_deref(),
            Some("partial\n")
        );

        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..(MAX_CHUNK as usize / 100 + 10) {
            log.write_all(line.as_bytes()).unwrap();
        }
        let text = cursors.read_new(id, &path).unwrap().unwrap();
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with("[pgplane: ") && first.ends_with(" bytes of the log skipped]"),
            "{first}"
        );
        assert!(text.len() <= MAX_CHUNK as usize + first.len() + 1);
        assert!(
            text.lines().skip(1).all(|l| l == &line[..99]),
            "whole lines only"
        );

        // A log that was truncated is read from its start.
        let mut log = std::fs::File::create(&path).unwrap();
        writeln!(log, "fresh").unwrap();
        assert_eq!(
            cursors.read_new(id, &path).unwrap().as_deref(),
            Some("fresh\n")
        );
        // A conductor started later ships only the newest lines, whole.
        let later = LogCursors::default();
        assert_eq!(
            later.read_new(id, &path).unwrap().as_deref(),
            Some("fresh\n")
        );
    }
}
