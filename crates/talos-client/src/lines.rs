//! Bounded line handling for log-like streams whose chunks split lines arbitrarily.

use std::collections::VecDeque;

/// Longest single line kept; longer lines are cut and marked.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Splits a byte stream into lines across chunk boundaries, holding at most one partial line.
#[derive(Debug, Default)]
pub struct LineAssembler {
    partial: Vec<u8>,
    partial_cut: bool,
}

impl LineAssembler {
    /// Feeds a chunk; calls `emit` for every line it completes (without the newline).
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(String)) {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            self.append(&rest[..pos]);
            emit(self.take());
            rest = &rest[pos + 1..];
        }
        self.append(rest);
    }

    /// Emits the trailing partial line, if any.
    pub fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.partial.is_empty() || self.partial_cut {
            emit(self.take());
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.partial_cut = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn take(&mut self) -> String {
        let mut line = String::from_utf8_lossy(&self.partial).into_owned();
        if line.ends_with('\r') {
            line.pop();
        }
        if std::mem::take(&mut self.partial_cut) {
            line.push_str(" …[line cut]");
        }
        self.partial.clear();
        line
    }
}

/// Keeps the newest lines within a line and byte budget; counts what it dropped.
#[derive(Debug)]
pub struct TailBuffer {
    max_lines: usize,
    max_bytes: usize,
    lines: VecDeque<String>,
    bytes: usize,
    dropped: u64,
    peak_bytes: usize,
}

impl TailBuffer {
    /// A buffer that keeps at most `max_lines` lines and `max_bytes` bytes of text.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
            lines: VecDeque::new(),
            bytes: 0,
            dropped: 0,
            peak_bytes: 0,
        }
    }

    /// Adds a line, evicting the oldest lines beyond the budget.
    pub fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > self.max_lines
            || (self.bytes > self.max_bytes && self.lines.len() > 1)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
                self.dropped += 1;
            }
        }
        self.peak_bytes = self.peak_bytes.max(self.bytes);
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The most text held at once.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// The kept lines, oldest first.
    pub fn into_lines(self) -> Vec<String> {
        self.lines.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut a = LineAssembler::default();
        for c in chunks {
            a.push(c, |l| out.push(l));
        }
        a.finish(|l| out.push(l));
        out
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        assert_eq!(
            assemble(&[b"hel", b"lo\nwor", b"ld\r\n", b"tail"]),
            vec!["hello", "world", "tail"]
        );
        assert_eq!(assemble(&[b"a\n\nb\n"]), vec!["a", "", "b"]);
        assert!(assemble(&[b""]).is_empty());
    }

    #[test]
    fn utf8_split_inside_a_character_survives() {
        let s = "héllo\n".as_bytes();
        assert_eq!(assemble(&[&s[..2], &s[2..]]), vec!["héllo"]);
    }

    #[test]
    fn overlong_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE_BYTES * 3];
        let lines = assemble(&[&long, b"\nnext\n"]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].len() < MAX_LINE_BYTES + 32 && lines[0].ends_with("[line cut]"));
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn tail_keeps_newest_within_budget() {
        let mut t = TailBuffer::new(3, 1000);
        for i in 0..10 {
            t.push(format!("line {i}"));
        }
        assert_eq!(t.dropped(), 7);
        assert_eq!(t.into_lines(), vec!["line 7", "line 8", "line 9"]);

        let mut t = TailBuffer::new(100, 10);
        for i in 0..10 {
            t.push(format!("{i}{i}{i}{i}"));
        }
        assert!(t.peak_bytes() <= 12);
        assert_eq!(t.into_lines(), vec!["8888", "9999"]);
    }
}
