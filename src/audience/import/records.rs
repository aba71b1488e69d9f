//! Splitting decoded text into CSV records, with bounded memory and recovery from bad
//! quoting.
//!
//! Why not the `csv` crate: it is deliberately lenient and never reports malformed
//! input, and a single unclosed quote makes it read the whole rest of the file into one
//! field. For a 1 GB upload that is both a memory problem and a silent loss of every row
//! after the typo. This reader follows the same RFC 4180 rules as `csv-core` (quotes
//! only open a field at its start, `""` escapes a quote, `\r`, `\n` and `\r\n` end a
//! record, blank lines are skipped), but:
//!
//! * a record may be at most [`MAX_RECORD_BYTES`] long and a quoted value may span at
//!   most [`MAX_RECORD_LINES`] lines;
//! * text after a closing quote, an unclosed quote and an over-long record are reported
//!   for the line they start on, and reading resumes on the *next physical line*, so
//!   the good rows the bad quote would have swallowed are still imported. Only the
//!   bytes of the current record are kept for that, so memory stays bounded.

use std::io::{self, Read};

use super::rows::RowReport;

/// Longest record we accept. Real subscriber rows are a few hundred bytes; this leaves
/// room for long notes while capping what one malformed row can make us buffer.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Most physical lines one quoted value may span before we assume the quote was never
/// meant to be closed.
pub const MAX_RECORD_LINES: u32 = 50;

/// Longest excerpt of a bad line we put into a report.
const SNIPPET_CHARS: usize = 200;

const BUF_LEN: usize = 64 * 1024;

/// What [`RecordReader::read_next`] found.
#[derive(Debug)]
pub enum Next {
    /// A record is available through [`RecordReader::record`].
    Record,
    /// A malformed record, already skipped.
    Bad(RowReport),
    Eof,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    StartField,
    Unquoted,
    Quoted,
    /// Just saw a quote inside a quoted field: either an escaped `""` or the end.
    QuoteInQuoted,
    /// After the closing quote, only whitespace may come before the delimiter.
    AfterQuoted,
}

/// The current record: its fields and where it starts in the file.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    text: &'a [u8],
    ends: &'a [usize],
    /// 1-based line the record starts on.
    pub line: u64,
    /// Number of physical lines the record spans (more than 1 only with quoted line
    /// breaks).
    pub lines: u32,
}

impl<'a> Record<'a> {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i`, or `""` for a column this (ragged) row doesn't have.
    pub fn get(&self, i: usize) -> &'a str {
        let Some(&end) = self.ends.get(i) else {
            return "";
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text
            .get(start..end)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let this = *self;
        (0..this.len()).map(move |i| this.get(i))
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

/// Reads CSV records from UTF-8 bytes (the output of
/// [`DecodingReader`](super::decode::DecodingReader)).
pub struct RecordReader<R> {
    src: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    /// Bytes to read again before `buf`, after a bad record turned out to have
    /// swallowed following lines.
    replay: Vec<u8>,
    replay_pos: usize,
    delimiter: u8,
    /// Line number of the next byte to be read.
    line: u64,
    /// The previous byte was `\r`, so a `\n` now does not start another line.
    prev_cr: bool,
    /// Every byte of the current record, kept only so we can replay it.
    raw: Vec<u8>,
    /// Offset in `raw` just after the first line break inside the record.
    first_break: Option<usize>,
    fields: Vec<u8>,
    ends: Vec<usize>,
    record_line: u64,
    record_lines: u32,
}

impl<R: Read> RecordReader<R> {
    /// Wrap `src`, detecting the delimiter from the first line. Excel in many locales
    /// writes `;` (and some exports use tabs); Excel also understands a leading
    /// `sep=;` line, which we honour and skip.
    pub fn new(src: R) -> io::Result<Self> {
        let mut this = Self {
            src,
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            pos: 0,
            len: 0,
            replay: Vec::new(),
            replay_pos: 0,
            delimiter: b',',
            line: 1,
            prev_cr: false,
            raw: Vec::new(),
            first_break: None,
            fields: Vec::new(),
            ends: Vec::new(),
            record_line: 1,
            record_lines: 1,
        };
        // Fill until the first line is complete (or the buffer is full / EOF), reading
        // in a loop because the source may hand out a few bytes at a time.
        while this.len < this.buf.len() && !this.buf[..this.len].contains(&b'\n') {
            let n = loop {
                match this.src.read(&mut this.buf[this.len..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                break;
            }
            this.len += n;
        }
        let (delimiter, skip) = detect_delimiter(&this.buf[..this.len]);
        this.delimiter = delimiter;
        if skip > 0 {
            this.pos = skip;
            this.line = 2;
        }
        Ok(this)
    }

    /// Line number of the next unread byte (where reading stopped after an error).
    pub fn line(&self) -> u64 {
        self.line
    }

    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// The record found by the last `read_next` that returned [`Next::Record`].
    pub fn record(&self) -> Record<'_> {
        Record {
            text: &self.fields,
            ends: &self.ends,
            line: self.record_line,
            lines: self.record_lines,
        }
    }

    #[inline]
    fn next_byte(&mut self) -> io::Result<Option<u8>> {
        if self.replay_pos < self.replay.len() {
            let b = self.replay[self.replay_pos];
            self.replay_pos += 1;
            if self.replay_pos == self.replay.len() {
                self.replay.clear();
                self.replay_pos = 0;
            }
            return Ok(Some(b));
        }
        if self.pos == self.len {
            let n = loop {
                match self.src.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            self.pos = 0;
            self.len = n;
            if n == 0 {
                return Ok(None);
            }
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(Some(b))
    }

    /// Read the next non-blank record.
    pub fn read_next(&mut self) -> io::Result<Next> {
        'record: loop {
            self.raw.clear();
            self.fields.clear();
            self.ends.clear();
            self.first_break = None;
            self.record_line = self.line;
            self.record_lines = 1;
            let mut state = State::StartField;
            let mut any = false;
            loop {
                let Some(b) = self.next_byte()? else {
                    return Ok(match state {
                        State::Quoted => {
                            Next::Bad(self.reject("a quote opened on this line is never closed"))
                        }
                        _ if any => {
                            self.ends.push(self.fields.len());
                            self.finish()
                        }
                        _ => Next::Eof,
                    });
                };
                let is_break = b == b'\r' || (b == b'\n' && !self.prev_cr);
                self.prev_cr = b == b'\r';
                if is_break {
                    self.line += 1;
                }
                let terminator = b == b'\r' || b == b'\n';
                if terminator && state != State::Quoted {
                    if !any {
                        // Blank line (or the `\n` of a `\r\n`): skip silently.
                        continue 'record;
                    }
                    // Kept so that `replay_last` re-reads the line break too.
                    self.raw.push(b);
                    self.ends.push(self.fields.len());
                    return Ok(self.finish());
                }
                any = true;
                self.raw.push(b);
                if is_break {
                    // Only reachable inside a quoted value.
                    self.record_lines += 1;
                    if self.first_break.is_none() {
                        self.first_break = Some(self.raw.len());
                    }
                    if self.record_lines > MAX_RECORD_LINES {
                        return Ok(Next::Bad(self.reject(&format!(
                            "a quoted value on this line runs over more than {MAX_RECORD_LINES} \
                             lines; a quote is probably not closed"
                        ))));
                    }
                }
                if self.raw.len() > MAX_RECORD_BYTES {
                    let reason = format!(
                        "this row is longer than {} MB; a quote is probably not closed",
                        MAX_RECORD_BYTES / (1024 * 1024)
                    );
                    return Ok(Next::Bad(self.reject(&reason)));
                }
                state = match state {
                    State::StartField if b == b'"' => State::Quoted,
                    State::StartField | State::Unquoted if b == self.delimiter => {
                        self.ends.push(self.fields.len());
                        State::StartField
                    }
                    State::StartField | State::Unquoted => {
                        self.fields.push(b);
                        State::Unquoted
                    }
                    State::Quoted if b == b'"' => State::QuoteInQuoted,
                    State::Quoted => {
                        self.fields.push(b);
                        State::Quoted
                    }
                    State::QuoteInQuoted if b == b'"' => {
                        self.fields.push(b'"');
                        State::Quoted
                    }
                    State::QuoteInQuoted | State::AfterQuoted if b == self.delimiter => {
                        self.ends.push(self.fields.len());
                        State::StartField
                    }
                    State::QuoteInQuoted | State::AfterQuoted if b == b' ' || b == b'\t' => {
                        State::AfterQuoted
                    }
                    State::QuoteInQuoted | State::AfterQuoted => {
                        return Ok(Next::Bad(self.reject(
                            "text follows a closing quote; quotes inside a value must be \
                             doubled (\"\")",
                        )));
                    }
                };
            }
        }
    }

    fn finish(&mut self) -> Next {
        if std::str::from_utf8(&self.fields).is_err() {
            // Cannot happen after decoding, but never trust that in a parser.
            return Next::Bad(self.reject("this row is not valid text"));
        }
        Next::Record
    }

    /// Report the current record as bad and position the reader so the lines it
    /// swallowed are read again.
    fn reject(&mut self, reason: &str) -> RowReport {
        let first_line_end = self.first_break.unwrap_or(self.raw.len());
        let first_line = self.raw.get(..first_line_end).unwrap_or(&[]);
        let report = RowReport {
            line: self.record_line,
            value: snippet(first_line),
            reason: reason.to_string(),
            code: super::ReportCode::Unreadable,
        };
        if !self.replay_tail() {
            // The problem is on the record's only line so far: drop the rest of that
            // line (ignoring quotes) and carry on with the next. (We are always
            // mid-line here: a line break inside the record would have set
            // `first_break`.)
            self.skip_line();
        }
        self.fields.clear();
        self.ends.clear();
        report
    }

    /// If the current record spans lines, arrange for everything after its first line
    /// to be read again. Returns whether it did.
    fn replay_tail(&mut self) -> bool {
        let Some(fb) = self.first_break else {
            return false;
        };
        let mut tail = self.raw.get(fb..).unwrap_or(&[]).to_vec();
        tail.extend_from_slice(self.replay.get(self.replay_pos..).unwrap_or(&[]));
        self.replay = tail;
        self.replay_pos = 0;
        self.line = self.record_line + 1;
        self.prev_cr = fb > 0 && self.raw.get(fb - 1) == Some(&b'\r');
        self.first_break = None;
        true
    }

    /// Used by the row layer when a record that parsed as CSV is still implausible (a
    /// line break inside an email address or a date means a stray quote swallowed
    /// the following rows). Returns whether there was anything to replay.
    pub fn replay_last(&mut self) -> bool {
        self.replay_tail()
    }

    fn skip_line(&mut self) {
        // An I/O error here will surface again on the next read.
        while let Ok(Some(b)) = self.next_byte() {
            let is_break = b == b'\r' || (b == b'\n' && !self.prev_cr);
            self.prev_cr = b == b'\r';
            if is_break {
                self.line += 1;
                return;
            }
        }
    }
}

/// A short, printable excerpt of a bad line for the error report.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\r', '\n']);
    truncate_chars(text, SNIPPET_CHARS)
}

/// `s` cut to at most `max` characters, marked with an ellipsis when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Pick the delimiter from the first line: whichever of `,` `;` tab occurs most often
/// outside quotes (comma on a tie or when none occurs). Returns the delimiter and how
/// many bytes of a `sep=X` hint line to skip.
fn detect_delimiter(head: &[u8]) -> (u8, usize) {
    if head.len() >= 5 && head[..4].eq_ignore_ascii_case(b"sep=") {
        let rest = &head[5..];
        let term = if rest.starts_with(b"\r\n") {
            Some(2)
        } else if rest.first().is_some_and(|&b| b == b'\n' || b == b'\r') || rest.is_empty() {
            Some(rest.len().min(1))
        } else {
            None
        };
        if let Some(term) = term
            && matches!(head[4], b',' | b';' | b'\t' | b'|')
        {
            return (head[4], 5 + term);
        }
    }
    let mut counts = [0usize; 3];
    let mut in_quotes = false;
    for &b in head {
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\r' | b'\n' if !in_quotes => break,
            b',' if !in_quotes => counts[0] += 1,
            b';' if !in_quotes => counts[1] += 1,
            b'\t' if !in_quotes => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let mut best = 0;
    for i in 1..3 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    (candidates[best], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Result<(u64, Vec<String>), (u64, String)>;

    fn all(input: &str) -> Vec<Parsed> {
        let mut r = RecordReader::new(input.as_bytes()).expect("new");
        let mut out = Vec::new();
        loop {
            match r.read_next().expect("io") {
                Next::Record => {
                    let rec = r.record();
                    out.push(Ok((rec.line, rec.to_vec())));
                }
                Next::Bad(rep) => out.push(Err((rep.line, rep.value))),
                Next::Eof => return out,
            }
        }
    }

    fn ok(line: u64, fields: &[&str]) -> Parsed {
        Ok((line, fields.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn rfc4180_basics_and_line_numbers() {
        let got = all("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\n\n\"multi\nline\",z\r\nlast,\n");
        assert_eq!(
            got,
            vec![
                ok(1, &["a", "b"]),
                ok(2, &["x,1", "say \"hi\""]),
                ok(4, &["multi\nline", "z"]),
                ok(6, &["last", ""]),
            ]
        );
    }

    #[test]
    fn quotes_inside_unquoted_values_are_literal() {
        assert_eq!(
            all("Bob \"the\" Kim,x"),
            vec![ok(1, &["Bob \"the\" Kim", "x"])]
        );
    }

    #[test]
    fn text_after_closing_quote_is_reported_and_line_skipped() {
        let got = all("h1,h2\na,\"b\"c,\"d\ne,f\n");
        assert_eq!(
            got,
            vec![
                ok(1, &["h1", "h2"]),
                Err((2, "a,\"b\"c".to_string())),
                ok(3, &["e", "f"]),
            ]
        );
    }

    #[test]
    fn unclosed_quote_at_eof_replays_following_lines() {
        let got = all("h\n\"open,x\ngood1,y\ngood2,z\n");
        assert_eq!(
            got,
            vec![
                ok(1, &["h"]),
                Err((2, "\"open,x".to_string())),
                ok(3, &["good1", "y"]),
                ok(4, &["good2", "z"]),
            ]
        );
    }

    #[test]
    fn runaway_quote_is_cut_after_max_lines() {
        let mut input = String::from("h\n\"open\n");
        for i in 0..(MAX_RECORD_LINES + 5) {
            input.push_str(&format!("row{i},v\n"));
        }
        input.push_str("\"closing\n");
        let got = all(&input);
        assert_eq!(got[1], Err((2, "\"open".to_string())));
        assert_eq!(got[2], ok(3, &["row0", "v"]));
        assert_eq!(got.len(), 2 + MAX_RECORD_LINES as usize + 5 + 1);
    }

    #[test]
    fn delimiter_detection() {
        assert_eq!(
            all("a;b;c\n1;2;3"),
            vec![ok(1, &["a", "b", "c"]), ok(2, &["1", "2", "3"])]
        );
        assert_eq!(
            all("a\tb\n1\t2"),
            vec![ok(1, &["a", "b"]), ok(2, &["1", "2"])]
        );
        assert_eq!(all("sep=;\r\na;b\n"), vec![ok(2, &["a", "b"])]);
        assert_eq!(all("\"a;b\",c\n"), vec![ok(1, &["a;b", "c"])]);
    }

    #[test]
    fn overlong_line_is_reported_without_buffering_it() {
        let mut input = String::from("h\n");
        input.push_str(&"x".repeat(MAX_RECORD_BYTES + 10));
        input.push_str("\nok\n");
        let got = all(&input);
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[1], Err((2, _))));
        assert_eq!(got[2], ok(3, &["ok"]));
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate_chars("홍길동", 2), "홍길…");
        assert_eq!(truncate_chars("홍길동", 3), "홍길동");
    }
}
