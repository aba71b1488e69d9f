//! Body parts of outgoing mail, encoded in one pass.
//!
//! lettre's `Body::new` chooses a transfer encoding by scanning the text, rewrites its
//! line endings in place, then quoted-printable-encodes it one `char` at a time through
//! `Vec<char>` buffers: in the send benchmark those three passes were about a third of
//! the sender's own CPU for a 10 kB message. [`body`] makes the same choice (7bit when
//! the text is ASCII with short lines, else quoted-printable unless more than a third of
//! the bytes need escaping, else base64; no 8bit, since the server is not known yet) and
//! writes the encoded body directly, with CRLF line endings, for
//! `Body::dangerous_pre_encoded`.

use base64::Engine as _;
use lettre::message::{Body, header::ContentTransferEncoding};

/// RFC 2045: encoded lines are at most 76 characters, CRLF not counted.
const LINE: usize = 76;

/// The text as a mail body part: encoded, every line break CRLF.
pub fn body(text: &str) -> Body {
    let bytes = text.as_bytes();
    // Bytes a 7bit body cannot carry (counted without branches, so it vectorises), then
    // the rare bare CR, then line lengths between line feeds.
    let mut needs_escape = bytes
        .iter()
        .filter(|&&b| !(b == b'\t' || b == b'\n' || b == b'\r' || (b' '..=b'~').contains(&b)))
        .count();
    needs_escape += memchr::memchr_iter(b'\r', bytes)
        .filter(|&i| bytes.get(i + 1) != Some(&b'\n'))
        .count();
    let mut start = 0;
    let mut long_line = false;
    for end in memchr::memchr_iter(b'\n', bytes).chain([bytes.len()]) {
        let line = &bytes[start..end];
        long_line |= line.strip_suffix(b"\r").unwrap_or(line).len() >= LINE;
        start = end + 1;
    }
    if needs_escape == 0 && !long_line {
        Body::dangerous_pre_encoded(crlf(bytes), ContentTransferEncoding::SevenBit)
    } else if needs_escape <= bytes.len() / 3 {
        Body::dangerous_pre_encoded(
            quoted_printable(bytes),
            ContentTransferEncoding::QuotedPrintable,
        )
    } else {
        Body::dangerous_pre_encoded(base64_lines(bytes), ContentTransferEncoding::Base64)
    }
}

struct Line<'a> {
    text: &'a [u8],
    /// Followed by a line break (LF or CRLF), as opposed to the end of the text.
    ended: bool,
}

/// Lines split at LF, a CR right before the LF dropped (it is part of the break).
fn lines(bytes: &[u8]) -> impl Iterator<Item = Line<'_>> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest?;
        Some(match memchr::memchr(b'\n', r) {
            Some(at) => {
                rest = Some(&r[at + 1..]);
                let text = &r[..at];
                Line {
                    text: text.strip_suffix(b"\r").unwrap_or(text),
                    ended: true,
                }
            }
            None => {
                rest = None;
                Line {
                    text: r,
                    ended: false,
                }
            }
        })
    })
    .filter(|l| l.ended || !l.text.is_empty())
}

/// The text with every line break as CRLF.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    for line in lines(bytes) {
        out.extend_from_slice(line.text);
        if line.ended {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Printable ASCII other than `=`: written as itself (space and tab too, except at the
/// end of a line).
const LITERAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        t[b as usize] = b != b'=';
        b += 1;
    }
    t[b'\t' as usize] = true;
    t
};

fn literal(b: u8) -> bool {
    LITERAL[b as usize]
}

/// Quoted-printable (RFC 2045 §6.7): line breaks of the text become CRLF hard breaks,
/// longer lines get soft breaks (`=` CRLF) so no encoded line exceeds 76 characters, an
/// escape is never split, and a space or tab ending a line is escaped.
pub fn quoted_printable(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 4 + 16);
    for line in lines(bytes) {
        let text = line.text;
        let mut col = 0;
        let mut i = 0;
        while i < text.len() {
            let b = text[i];
            let last = i + 1 == text.len();
            if literal(b) && !(last && matches!(b, b' ' | b'\t')) {
                // A run of literal bytes, as much of it as fits on this line (one column
                // stays free for the soft break's `=`).
                let end = text[i + 1..]
                    .iter()
                    .position(|&b| !literal(b))
                    .map_or(text.len(), |at| i + 1 + at);
                let mut end = end;
                if matches!(text[end - 1], b' ' | b'\t') && end == text.len() {
                    end -= 1; // escaped below
                }
                let mut run = &text[i..end];
                while !run.is_empty() {
                    // The text's last run may fill all 76 columns (no soft break follows);
                    // otherwise one column stays free for the soft break's `=`.
                    if i + run.len() == text.len() && col + run.len() <= LINE {
                        out.extend_from_slice(run);
                        col += run.len();
                        i += run.len();
                        break;
                    }
                    if col >= LINE - 1 {
                        out.extend_from_slice(b"=\r\n");
                        col = 0;
                        continue;
                    }
                    let take = run.len().min(LINE - 1 - col);
                    out.extend_from_slice(&run[..take]);
                    col += take;
                    i += take;
                    run = &run[take..];
                }
            } else {
                let room = if last { LINE } else { LINE - 1 };
                if col + 3 > room {
                    out.extend_from_slice(b"=\r\n");
                    col = 0;
                }
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                col += 3;
                i += 1;
            }
        }
        if line.ended {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Base64 of the text with its line breaks as CRLF, in lines of 76 characters.
fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(crlf(bytes));
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / LINE * 2 + 2);
    for chunk in encoded.as_bytes().chunks(LINE) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::message::{SinglePart, header::ContentType};

    /// What a receiver reads: the part through a MIME parser (encoding, text).
    fn received(body: Body) -> (String, String) {
        let part = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(body);
        let raw = part.formatted();
        let parsed = mailparse::parse_mail(&raw).expect("parses");
        let encoding = parsed
            .headers
            .iter()
            .find(|h| {
                h.get_key()
                    .eq_ignore_ascii_case("Content-Transfer-Encoding")
            })
            .map(|h| h.get_value())
            .unwrap_or_default();
        (encoding, parsed.get_body().expect("decodes"))
    }

    /// Lines of at most 76 characters, ASCII, CRLF only; quoted-printable lines never
    /// end in white space (a 7bit body keeps the text's own).
    fn assert_well_formed(encoded: &[u8], qp: bool) {
        let s = std::str::from_utf8(encoded).expect("ASCII");
        assert!(s.is_ascii());
        for line in s.split("\r\n") {
            assert!(line.len() <= LINE, "line of {} > 76: {line:?}", line.len());
            assert!(
                !line.contains('\n') && !line.contains('\r'),
                "bare line end in {line:?}"
            );
            assert!(
                !qp || !(line.ends_with(' ') || line.ends_with('\t')),
                "trailing space in {line:?}"
            );
        }
    }

    #[test]
    fn every_kind_of_text_round_trips_through_a_mime_parser() {
        let long_ascii = "word ".repeat(40);
        let texts = [
            "Hello, world!".to_string(),
            "two\nlines\r\nand a third\n".to_string(),
            long_ascii.clone(),
            format!("{long_ascii}\n{long_ascii}"),
            "안녕하세요 홍길동님, 봄 세일은 3월 31일까지입니다.".to_string(),
            "Mostly English with one word: 구독 — and an emoji ❤️ and a = sign.".repeat(5),
            "trailing space \nand tab\t\nend ".to_string(),
            "=".repeat(200),
            "x".repeat(75) + "=" + &"y".repeat(80),
            "a\rb lone CR".to_string(),
            String::new(),
            "\n\n\n".to_string(),
            "ends without a break, after a long line ".repeat(4),
            "한".repeat(300),
        ];
        for text in &texts {
            // The same text, the same encoding, as lettre's own encoder gives.
            let (encoding, decoded) = received(body(text));
            let (lettre_encoding, lettre_decoded) = received(Body::new(text.clone()));
            // (lettre leaves a bare CR in a 7bit body; it is escaped here)
            if !text.contains("a\rb") {
                assert_eq!(encoding, lettre_encoding, "{text:?}");
            }
            assert_eq!(decoded, lettre_decoded, "{encoding}: {text:?}");
            assert_eq!(
                decoded.trim_end_matches("\r\n"),
                text.replace("\r\n", "\n")
                    .replace('\n', "\r\n")
                    .trim_end_matches("\r\n"),
                "{encoding}: {text:?}"
            );
            let qp = encoding == "quoted-printable";
            assert_well_formed(&body(text).into_vec(), qp);
        }
    }

    #[test]
    fn chooses_the_encoding_as_lettre_would() {
        let e = |t: &str| received(body(t)).0;
        assert_eq!(e("plain short ASCII\nlines"), "7bit");
        assert_eq!(e(&"long ascii ".repeat(10)), "quoted-printable");
        assert_eq!(
            e("Mostly English, one word in Korean: 구독"),
            "quoted-printable"
        );
        assert_eq!(e("안녕하세요 홍길동님"), "base64");
        for t in [
            "plain short ASCII\nlines".to_string(),
            "long ascii ".repeat(10),
            "Mostly English, one word in Korean: 구독".to_string(),
            "안녕하세요 홍길동님".to_string(),
        ] {
            assert_eq!(
                body(&t).encoding(),
                Body::new(t.clone()).encoding(),
                "{t:?}"
            );
        }
    }

    #[test]
    fn soft_breaks_never_split_an_escape_and_lines_use_all_76_columns() {
        for lead in 0..80 {
            let text = "a".repeat(lead) + "é=é" + &"b".repeat(100) + " ";
            let encoded = quoted_printable(text.as_bytes());
            assert_well_formed(&encoded, true);
            let s = String::from_utf8(encoded.clone()).unwrap();
            for line in s.split("=\r\n") {
                // Every `=` not followed by two hex digits would be a broken escape.
                let b = line.as_bytes();
                for (i, &c) in b.iter().enumerate() {
                    if c == b'=' {
                        assert!(i + 2 < b.len(), "split escape in {line:?}");
                        assert!(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit());
                    }
                }
            }
            assert_eq!(
                quoted_printable::decode(&encoded, quoted_printable::ParseMode::Strict).unwrap(),
                text.as_bytes()
            );
        }
        // A full line is 75 characters and the `=` of the soft break.
        let s = String::from_utf8(quoted_printable("z".repeat(200).as_bytes())).unwrap();
        assert_eq!(s.split("\r\n").next().unwrap().len(), 76);
    }
}
