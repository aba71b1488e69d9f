//! Turning an uploaded file of unknown encoding into a stream of UTF-8 bytes.
//!
//! Korean businesses arrive with files from several worlds: vendor exports (UTF-8,
//! sometimes with a BOM), Excel's "Unicode text" (UTF-16 with a BOM) and Excel's
//! default CSV on Korean Windows (CP949, which `encoding_rs::EUC_KR` covers because it
//! implements the WHATWG superset). We cannot ask a shop owner which one they have, so we
//! sniff a prefix and decode the rest incrementally with fixed-size buffers: the file
//! may be a gigabyte and must never be held in memory.

use std::io::{self, Read};

use encoding_rs::{CoderResult, Decoder, Encoding};

use super::{FileError, NotCsv};

/// How much of the file we look at before deciding on an encoding. Large enough that
/// a header row plus a few hundred rows of names are included, small enough to be a
/// fixed cost per upload.
pub const SNIFF_LEN: usize = 64 * 1024;

/// Size of the decoded-output buffer. Any size of at least a few bytes guarantees the
/// decoder makes progress; this one amortises the per-call overhead.
const OUTPUT_LEN: usize = 32 * 1024;

/// The character encoding we decided the file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceEncoding {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
    EucKr,
}

impl SourceEncoding {
    /// A label to show in the import UI, so a user who sees garbled names knows which
    /// guess we made.
    pub fn label(self) -> &'static str {
        match self {
            SourceEncoding::Utf8 => "UTF-8",
            SourceEncoding::Utf8Bom => "UTF-8 (BOM)",
            SourceEncoding::Utf16Le => "UTF-16LE",
            SourceEncoding::Utf16Be => "UTF-16BE",
            SourceEncoding::EucKr => "EUC-KR / CP949",
        }
    }

    fn encoding(self) -> &'static Encoding {
        match self {
            SourceEncoding::Utf8 | SourceEncoding::Utf8Bom => encoding_rs::UTF_8,
            SourceEncoding::Utf16Le => encoding_rs::UTF_16LE,
            SourceEncoding::Utf16Be => encoding_rs::UTF_16BE,
            SourceEncoding::EucKr => encoding_rs::EUC_KR,
        }
    }

    /// Length of the byte-order mark this encoding was recognised by.
    fn bom_len(self) -> usize {
        match self {
            SourceEncoding::Utf8Bom => 3,
            SourceEncoding::Utf16Le | SourceEncoding::Utf16Be => 2,
            SourceEncoding::Utf8 | SourceEncoding::EucKr => 0,
        }
    }
}

/// Decide the encoding from the first bytes of the file.
///
/// `at_eof` says whether `prefix` is the whole file: only then is a multi-byte UTF-8
/// sequence cut off at the end evidence against UTF-8 (otherwise it is just where our
/// 64 KiB window happened to end).
pub fn sniff(prefix: &[u8], at_eof: bool) -> Result<SourceEncoding, FileError> {
    detect(prefix, at_eof).map(|(enc, _)| enc)
}

/// The encoding and the length of the BOM to skip (UTF-16 may come without one).
fn detect(prefix: &[u8], at_eof: bool) -> Result<(SourceEncoding, usize), FileError> {
    if prefix.is_empty() {
        return Err(FileError::Empty);
    }
    // A BOM is an explicit statement; it wins over every heuristic.
    let bom = if prefix.starts_with(&[0xEF, 0xBB, 0xBF]) {
        Some(SourceEncoding::Utf8Bom)
    } else if prefix.starts_with(&[0xFF, 0xFE]) {
        Some(SourceEncoding::Utf16Le)
    } else if prefix.starts_with(&[0xFE, 0xFF]) {
        Some(SourceEncoding::Utf16Be)
    } else {
        None
    };
    if let Some(enc) = bom {
        return if prefix.len() == enc.bom_len() && at_eof {
            Err(FileError::Empty)
        } else {
            Ok((enc, enc.bom_len()))
        };
    }

    // Formats people upload by mistake. Checked before the NUL heuristics so the
    // message can be specific about spreadsheets.
    const XLSX_MAGIC: [&[u8]; 3] = [b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"];
    const XLS_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    if XLSX_MAGIC.iter().any(|m| prefix.starts_with(m)) || prefix.starts_with(XLS_MAGIC) {
        return Err(FileError::NotText(NotCsv::Spreadsheet));
    }
    const BINARY_MAGIC: [&[u8]; 6] = [
        b"\x89PNG",
        b"\xFF\xD8\xFF",
        b"GIF8",
        b"%PDF",
        b"\x1F\x8B",
        b"Rar!",
    ];
    if BINARY_MAGIC.iter().any(|m| prefix.starts_with(m)) {
        return Err(FileError::NotText(NotCsv::Binary));
    }

    if prefix.contains(&0)
        && let Some(enc) = utf16_by_nul_pattern(prefix)
    {
        return Ok((enc, 0));
    }
    // Text has essentially no control characters besides tab and line breaks; binary
    // data has about one in nine. A stray NUL in an otherwise fine export is tolerated
    // (it ends up in one bad row rather than rejecting the file).
    let controls = prefix
        .iter()
        .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7F)
        .count();
    if controls * 100 > prefix.len() {
        return Err(FileError::NotText(NotCsv::Binary));
    }

    let enc = match std::str::from_utf8(prefix) {
        Ok(_) => SourceEncoding::Utf8,
        // `error_len() == None` means "valid so far, but the input ends mid-character",
        // which is expected when our window cuts a Hangul syllable in half.
        Err(e) if e.error_len().is_none() && !at_eof => SourceEncoding::Utf8,
        Err(_) => SourceEncoding::EucKr,
    };
    Ok((enc, 0))
}

/// UTF-16 without a BOM: CSV text is mostly ASCII (commas, digits, email addresses),
/// which in UTF-16 has a NUL in every other byte, on the odd side for little-endian and
/// the even side for big-endian. Random binary data has NULs scattered on both sides.
fn utf16_by_nul_pattern(prefix: &[u8]) -> Option<SourceEncoding> {
    let sample = &prefix[..prefix.len().min(4096)];
    let pairs = sample.len() / 2;
    if pairs == 0 {
        return None;
    }
    let (mut even, mut odd) = (0usize, 0usize);
    for pair in sample.chunks_exact(2) {
        if pair[0] == 0 {
            even += 1;
        }
        if pair[1] == 0 {
            odd += 1;
        }
    }
    // At least a quarter of the code units look like ASCII, and the other side is
    // (almost) never NUL.
    if odd * 4 >= pairs && even * 20 <= odd {
        Some(SourceEncoding::Utf16Le)
    } else if even * 4 >= pairs && odd * 20 <= even {
        Some(SourceEncoding::Utf16Be)
    } else {
        None
    }
}

/// Open an uploaded file: sniff its encoding and return a reader that yields UTF-8
/// with any BOM removed.
pub fn open<R: Read>(r: R) -> Result<(SourceEncoding, DecodingReader<R>), FileError> {
    let reader = DecodingReader::new(r)?;
    Ok((reader.encoding(), reader))
}

/// A `Read` adapter that converts the source encoding to UTF-8 on the fly.
///
/// Malformed input is replaced with U+FFFD rather than failing: one stray byte in a
/// million-row file should cost one garbled name, not the whole import. The output is
/// therefore always valid UTF-8.
pub struct DecodingReader<R> {
    inner: R,
    encoding: SourceEncoding,
    decoder: Decoder,
    input: Box<[u8]>,
    in_start: usize,
    in_end: usize,
    output: Box<[u8]>,
    out_start: usize,
    out_end: usize,
    /// The inner reader has reported end of file.
    eof: bool,
    /// The decoder has been flushed with `last = true`; nothing more will come.
    finished: bool,
}

impl<R: Read> DecodingReader<R> {
    /// Read the sniffing prefix and set up the decoder.
    pub fn new(mut inner: R) -> Result<Self, FileError> {
        let mut input = vec![0u8; SNIFF_LEN].into_boxed_slice();
        let mut filled = 0;
        let mut eof = false;
        while filled < input.len() {
            match inner.read(&mut input[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FileError::Io(e)),
            }
        }
        let (encoding, bom_len) = detect(&input[..filled], eof)?;
        Ok(Self {
            inner,
            encoding,
            decoder: encoding.encoding().new_decoder_without_bom_handling(),
            input,
            in_start: bom_len.min(filled),
            in_end: filled,
            output: vec![0u8; OUTPUT_LEN].into_boxed_slice(),
            out_start: 0,
            out_end: 0,
            eof,
            finished: false,
        })
    }

    pub fn encoding(&self) -> SourceEncoding {
        self.encoding
    }
}

impl<R: Read> Read for DecodingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_start < self.out_end {
                let n = buf.len().min(self.out_end - self.out_start);
                buf[..n].copy_from_slice(&self.output[self.out_start..self.out_start + n]);
                self.out_start += n;
                return Ok(n);
            }
            if self.finished {
                return Ok(0);
            }
            if self.in_start == self.in_end && !self.eof {
                let n = loop {
                    match self.inner.read(&mut self.input) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                };
                self.in_start = 0;
                self.in_end = n;
                self.eof = n == 0;
            }
            let (result, read, written, _had_errors) = self.decoder.decode_to_utf8(
                &self.input[self.in_start..self.in_end],
                &mut self.output,
                self.eof,
            );
            self.in_start += read;
            self.out_start = 0;
            self.out_end = written;
            if self.eof && result == CoderResult::InputEmpty {
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Hands out at most 1–3 bytes per `read`, so multi-byte characters straddle
    /// reads in every possible position.
    pub(crate) struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl<'a> Trickle<'a> {
        pub(crate) fn new(data: &'a [u8]) -> Self {
            Self { data, step: 0 }
        }
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.step += 1;
            let n = (self.step % 3 + 1).min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn decode_all(bytes: &[u8]) -> (SourceEncoding, String) {
        let (enc, mut r) = open(bytes).expect("open");
        let mut s = String::new();
        r.read_to_string(&mut s).expect("valid utf-8");
        (enc, s)
    }

    fn utf16(s: &str, bom: bool, big_endian: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(if big_endian {
                &[0xFE, 0xFF]
            } else {
                &[0xFF, 0xFE]
            });
        }
        for unit in s.encode_utf16() {
            let b = if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            };
            out.extend_from_slice(&b);
        }
        out
    }

    const SAMPLE: &str = "이메일,이름\nhong@example.kr,홍길동\n";

    #[test]
    fn utf8_with_and_without_bom() {
        assert_eq!(
            decode_all(SAMPLE.as_bytes()),
            (SourceEncoding::Utf8, SAMPLE.to_string())
        );
        let mut with_bom = b"\xEF\xBB\xBF".to_vec();
        with_bom.extend_from_slice(SAMPLE.as_bytes());
        assert_eq!(
            decode_all(&with_bom),
            (SourceEncoding::Utf8Bom, SAMPLE.to_string())
        );
    }

    #[test]
    fn utf16_with_bom_both_endians() {
        assert_eq!(
            decode_all(&utf16(SAMPLE, true, false)),
            (SourceEncoding::Utf16Le, SAMPLE.to_string())
        );
        assert_eq!(
            decode_all(&utf16(SAMPLE, true, true)),
            (SourceEncoding::Utf16Be, SAMPLE.to_string())
        );
    }

    #[test]
    fn utf16_without_bom_by_nul_pattern() {
        assert_eq!(
            decode_all(&utf16(SAMPLE, false, false)),
            (SourceEncoding::Utf16Le, SAMPLE.to_string())
        );
        assert_eq!(
            decode_all(&utf16(SAMPLE, false, true)),
            (SourceEncoding::Utf16Be, SAMPLE.to_string())
        );
    }

    #[test]
    fn euc_kr_korean_names() {
        let (bytes, _, _) = encoding_rs::EUC_KR.encode(SAMPLE);
        assert_eq!(
            decode_all(&bytes),
            (SourceEncoding::EucKr, SAMPLE.to_string())
        );
        // CP949-only syllable (not in plain EUC-KR's 2,350): 똠
        let (bytes, _, _) = encoding_rs::EUC_KR.encode("email,name\na@b.kr,김똠방\n");
        assert_eq!(decode_all(&bytes).1, "email,name\na@b.kr,김똠방\n");
    }

    #[test]
    fn multibyte_chars_split_across_reads() {
        let text = SAMPLE.repeat(50);
        for bytes in [
            text.as_bytes().to_vec(),
            encoding_rs::EUC_KR.encode(&text).0.into_owned(),
            utf16(&text, true, false),
        ] {
            let (_, mut r) = open(Trickle::new(&bytes)).expect("open");
            let mut out = Vec::new();
            // Read through a tiny buffer too, so output is also split mid-character.
            let mut buf = [0u8; 2];
            loop {
                let n = r.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(String::from_utf8(out).expect("utf-8"), text);
        }
    }

    #[test]
    fn sniff_window_ending_mid_character_is_still_utf8() {
        let text = "가".repeat(SNIFF_LEN); // 3 bytes each: the window cuts one in half
        let bytes = text.as_bytes();
        assert_eq!(
            sniff(&bytes[..SNIFF_LEN], false).ok(),
            Some(SourceEncoding::Utf8)
        );
        assert_eq!(decode_all(bytes).1, text);
        // ...but a truncated character at the real end of the file is not UTF-8.
        assert_eq!(sniff(&bytes[..4], true).ok(), Some(SourceEncoding::EucKr));
    }

    #[test]
    fn empty_and_bom_only_files_are_empty() {
        assert!(matches!(open(&b""[..]), Err(FileError::Empty)));
        assert!(matches!(open(&b"\xEF\xBB\xBF"[..]), Err(FileError::Empty)));
        assert!(matches!(open(&b"\xFF\xFE"[..]), Err(FileError::Empty)));
    }

    #[test]
    fn binary_files_are_not_text() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10";
        let zip = b"PK\x03\x04\x14\0\x06\0\x08\0\0\0!\0[Content_Types].xml";
        let random = b"\x01\x00\x00\x7f\x13\x00\x9a\x00\x00\x00\xff\x10";
        for bytes in [&png[..], &zip[..], &random[..]] {
            match open(bytes) {
                Err(e @ FileError::NotText(_)) => {
                    assert!(e.to_string().contains("doesn't look like a CSV"))
                }
                _ => panic!("expected NotText"),
            }
        }
        match open(&zip[..]) {
            Err(e @ FileError::NotText(NotCsv::Spreadsheet)) => {
                assert!(e.to_string().contains("Save As > CSV"))
            }
            _ => panic!("expected NotText"),
        }
    }

    #[test]
    fn a_stray_nul_in_a_big_text_file_is_tolerated() {
        let mut bytes = "email,name\n".to_string().into_bytes();
        bytes.extend_from_slice(&b"someone@example.com,Someone\n".repeat(10));
        bytes.extend_from_slice(b"x@example.com,\0\n");
        assert_eq!(decode_all(&bytes).0, SourceEncoding::Utf8);
    }

    #[test]
    fn malformed_bytes_become_replacement_characters() {
        // Valid UTF-8 prefix, then an invalid byte far past the sniffing window.
        let mut bytes = "a@b.kr,x\n".repeat(SNIFF_LEN / 8).into_bytes();
        bytes.extend_from_slice(b"c@d.kr,\xFF\n");
        let (enc, s) = decode_all(&bytes);
        assert_eq!(enc, SourceEncoding::Utf8);
        assert!(s.ends_with("c@d.kr,\u{FFFD}\n"));
    }
}
