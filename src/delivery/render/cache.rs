//! Per-body render cache: the expensive part of [`render`](super::render) — Markdown,
//! link rewriting, the MJML layout and CSS inlining — runs once per *skeleton* of a
//! body, and each message only fills in its own values.
//!
//! How: the templates still run per message (the sandboxed minijinja, unchanged), but
//! while recording, each printed value that is *plain* (letters and digits of any
//! script with single spaces inside, e.g. `김민준 3`, `Ann Lee`) is written as a
//! placeholder of private-use characters instead, and kept aside. Empty values print
//! nothing, as always. What the templates printed around the placeholders (including
//! whatever `{% if %}`/`{% for %}` chose) is the skeleton: it is the cache key, so a
//! condition that changes the markup simply makes another entry. The pipeline runs
//! once on the skeleton, with placeholders for the tracked links and footer URLs, and
//! its output is kept as pieces; a message is its skeleton's pieces with its values,
//! tracked links and footer URLs put in. Plain values need no escaping anywhere
//! (HTML, Markdown, text part, headers), so they go in as they are.
//!
//! A placeholder and a plain value take the same path through Markdown, the HTML
//! tokenizers and the CSS inliner only where they are ordinary text, so anything else
//! is not cached and renders the full way, which stays the reference:
//! - a value that is not plain (punctuation, `<&">`, line breaks, an URL…), or a
//!   template with private-use characters, or one that captures output (`{% set %}…
//!   {% endset %}`, `{% filter %}`, macros, `call`, recursive loops, blocks), since
//!   a template could then look at a placeholder instead of its value;
//! - a value right after an ASCII letter or digit, `&`, `#`, `<`, `/`, `!` or `\`
//!   (it could complete an entity, a tag or an escape), or a value of only digits
//!   before `.` or `)` (a Markdown list marker);
//! - in Markdown, a value after the first `<` (inline HTML, autolinks) or any link
//!   reference definition (`]:`, labels are matched by their text);
//! - a value that ends up anywhere but in a text node or a text-like attribute
//!   (`alt`, `aria-label`, `title` but a link's), e.g. in a tag, a class, a comment,
//!   `<style>`/`<script>`; a link URL or label with a value in it; a style
//!   sheet that selects on attribute values or `:lang`, an external style sheet;
//! - a link whose URL is one of the message's footer links (left untracked), a tracked
//!   or footer URL with spaces or control characters.
//!
//! Each new skeleton is also rendered the full way for its first message and compared
//! byte for byte; a difference marks the skeleton as not cacheable.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use minijinja::{Output, value::Value};

use super::{
    BodyFormat, Compiled, Draft, Footer, Link, Part, RenderError, Rendered, header_line,
    inline_css, layout_document, markdown_to_html, parts, rewrite_body,
};

// Placeholders are Linear B syllables: letters to Markdown and HTML like the values
// they stand for, printable (mrml writes attribute values with Rust's `{:?}`, which
// escapes private-use and combining characters), and not found in mail.
/// Starts a value placeholder: START, four index digits, FILL*, END.
const START: char = '\u{1001D}';
const END: char = '\u{1001E}';
/// Pads a placeholder to at least its value's length, so that recording never uses
/// less of the template's fuel than the real render.
const FILL: char = '\u{1001F}';
/// Starts a tracked-link placeholder: LINK, four index digits, END.
const LINK: char = '\u{10020}';
const UNSUBSCRIBE: char = '\u{10021}';
const PREFERENCES: char = '\u{10022}';
/// Hexadecimal digits, U+1000D to U+1001C.
const DIGIT0: u32 = 0x1000D;
const MAX_VALUES: usize = 1 << 16;

/// The whole Linear B syllabary block is kept out of templates and values.
fn is_marker(c: char) -> bool {
    ('\u{10000}'..='\u{1007F}').contains(&c)
}

fn digit(d: usize) -> char {
    char::from_u32(DIGIT0 + (d & 0xF) as u32).unwrap_or(END)
}

fn push_index(i: usize, out: &mut String) {
    for shift in [12, 8, 4, 0] {
        out.push(digit(i >> shift));
    }
}

fn placeholder(kind: char, i: usize, out: &mut String) {
    out.push(kind);
    push_index(i, out);
    out.push(END);
}

/// Letters and digits of any script (printable as they are, see above), single
/// spaces between them.
fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.contains("  ")
        && s.chars().all(|c| {
            c == ' ' || (c.is_alphanumeric() && !is_marker(c) && c.escape_debug().count() == 1)
        })
}

struct Recorder {
    values: Vec<String>,
    /// A value was printed as itself: the skeleton is not one.
    literal: bool,
}

thread_local! {
    static RECORDER: std::cell::RefCell<Option<Recorder>> = const { std::cell::RefCell::new(None) };
}

/// Called by the formatter for every printed value (null already handled). Returns
/// `true` when the value was recorded (written as a placeholder, or nothing).
pub(super) fn record(out: &mut Output, value: &Value) -> Result<bool, minijinja::Error> {
    RECORDER.with(|r| {
        let mut r = r.borrow_mut();
        let Some(rec) = r.as_mut() else {
            return Ok(false);
        };
        let s = value.to_string();
        if s.is_empty() {
            // Every escaping prints an empty value as nothing.
            return Ok(true);
        }
        if !is_plain(&s) || rec.values.len() >= MAX_VALUES {
            rec.literal = true;
            return Ok(false);
        }
        let mut p = String::with_capacity(s.len() + 12);
        p.push(START);
        push_index(rec.values.len(), &mut p);
        while p.len() + END.len_utf8() < s.len() {
            p.push(FILL);
        }
        p.push(END);
        rec.values.push(s);
        out.write_str(&p).map_err(minijinja::Error::from)?;
        Ok(true)
    })
}

/// Template tags that capture output into a value (see the module docs).
fn captures(source: &str) -> bool {
    const WORDS: [&str; 8] = [
        "endset",
        "endfilter",
        "endmacro",
        "endcall",
        "block",
        "recursive",
        "caller",
        "self",
    ];
    let mut rest = source;
    let first = |s: &str, a: &str, b: &str| match (s.find(a), s.find(b)) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    while let Some(open) = first(rest, "{%", "{{") {
        let after = &rest[open + 2..];
        let close = first(after, "%}", "}}");
        let inner = &after[..close.unwrap_or(after.len())];
        if WORDS.iter().any(|w| inner.contains(w)) {
            return true;
        }
        rest = &after[close.map_or(after.len(), |c| c + 2)..];
    }
    false
}

/// A rendered draft as pieces to fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(usize),
    Link(usize),
    Unsubscribe,
    Preferences,
}

fn pieces(s: &str) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if !is_marker(c) {
            lit.push(c);
            continue;
        }
        if !lit.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut lit)));
        }
        let mut index = || -> Option<usize> {
            let mut i = 0;
            for _ in 0..4 {
                let d = (chars.next()? as u32).checked_sub(DIGIT0)?;
                if d >= 16 {
                    return None;
                }
                i = (i << 4) | d as usize;
            }
            Some(i)
        };
        let piece = match c {
            START => Piece::Value(index()?),
            LINK => Piece::Link(index()?),
            UNSUBSCRIBE => Piece::Unsubscribe,
            PREFERENCES => Piece::Preferences,
            _ => return None,
        };
        // Fillers are gone by now (see `normalize`).
        if chars.next()? != END {
            return None;
        }
        out.push(piece);
    }
    if !lit.is_empty() {
        out.push(Piece::Text(lit));
    }
    Some(out)
}

fn normalize(s: String) -> String {
    if s.contains(FILL) {
        s.replace(FILL, "")
    } else {
        s
    }
}

/// Whether a draft's templates can go through the cache at all (see the module docs):
/// no placeholder characters, no tags that capture output.
pub(super) fn cacheable_sources(draft: &Draft) -> bool {
    !parts(draft)
        .iter()
        .any(|(_, s)| s.chars().any(is_marker) || captures(s))
}

/// Everything that shapes a message except its values, tracked URLs and footer URLs.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    format: BodyFormat,
    subject: String,
    preheader: String,
    body: String,
    lang: String,
    unsubscribe: bool,
    preferences: bool,
}

struct Entry {
    subject: Vec<Piece>,
    preheader: Vec<Piece>,
    html: Vec<Piece>,
    text: Vec<Piece>,
    links: Vec<Link>,
    /// Values printed right before `.` or `)` in a Markdown body.
    before_marker: Vec<usize>,
}

enum Slot {
    Ready(Arc<Entry>),
    /// This skeleton always renders the full way.
    Uncacheable,
}

/// The cache; share one per sender (cloning shares it). Holds at most `capacity`
/// skeletons and starts over when full.
#[derive(Clone)]
pub struct RenderCache {
    /// Keys hold whole skeletons: hashed with foldhash, not SipHash, which took
    /// microseconds per message.
    slots: Arc<Mutex<Slots>>,
    capacity: usize,
    /// Messages rendered from a kept skeleton.
    hits: Arc<AtomicU64>,
}

impl Default for RenderCache {
    fn default() -> Self {
        Self::new(256)
    }
}

type Slots = HashMap<Key, Slot, foldhash::fast::RandomState>;

/// Why a message renders the full way.
struct FullWay(u32);

impl RenderCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: Arc::new(Mutex::new(HashMap::default())),
            capacity: capacity.max(1),
            hits: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Same result as [`render`](super::render) (byte for byte); `track` is called once
    /// per tracked link in document order, and again when the message falls back to
    /// the full render after all.
    pub fn render(
        &self,
        compiled: &Compiled,
        data: &serde_json::Value,
        track: &mut dyn FnMut(&Link) -> Option<String>,
    ) -> Result<Rendered, RenderError> {
        match self.try_render(compiled, data, track, false) {
            Ok(r) => Ok(r),
            Err(FullWay(_)) => compiled.render(data, track),
        }
    }

    /// Only when the message's skeleton is already kept (cheap enough for an async
    /// task); `None` otherwise (`track` may have been called).
    pub fn render_if_cached(
        &self,
        compiled: &Compiled,
        data: &serde_json::Value,
        track: &mut dyn FnMut(&Link) -> Option<String>,
    ) -> Option<Result<Rendered, RenderError>> {
        self.try_render(compiled, data, track, true).ok().map(Ok)
    }

    /// Messages rendered from a skeleton already kept.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Skeletons held (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_render(
        &self,
        compiled: &Compiled,
        data: &serde_json::Value,
        track: &mut dyn FnMut(&Link) -> Option<String>,
        cached_only: bool,
    ) -> Result<Rendered, FullWay> {
        if !compiled.cacheable {
            return Err(FullWay(line!()));
        }
        let ([subject, preheader, body], values) = record_parts(compiled, data)?;
        let footer = Footer::from_data(data);
        let key = Key {
            format: compiled.draft.format,
            subject,
            preheader,
            body,
            lang: footer.lang.to_owned(),
            unsubscribe: footer.unsubscribe.is_some(),
            preferences: footer.preferences.is_some(),
        };
        let cached = match self.lock().get(&key) {
            Some(Slot::Ready(e)) => Some(e.clone()),
            Some(Slot::Uncacheable) => return Err(FullWay(line!())),
            None => None,
        };
        if let Some(entry) = cached {
            let rendered = assemble(&entry, &values, &footer, track)?;
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(rendered);
        }
        if cached_only {
            return Err(FullWay(line!()));
        }
        let entry = match fill(&key, &footer) {
            Ok(entry) => entry,
            Err(FullWay(line)) => {
                tracing::debug!(line, "a message body's skeleton is not cacheable");
                #[cfg(test)]
                eprintln!("not cacheable: cache.rs line {line}");
                self.insert(key, Slot::Uncacheable);
                return Err(FullWay(line));
            }
        };
        let mut seen = Vec::new();
        let rendered = assemble(&entry, &values, &footer, &mut |l: &Link| {
            let url = track(l);
            seen.push(url.clone());
            url
        })?;
        // The first message of a skeleton is also rendered the full way, with the same
        // tracked URLs; the skeleton is kept only if both agree.
        let mut replay = seen.into_iter();
        let reference = compiled.render(data, &mut |_| replay.next().flatten());
        let same = reference
            .as_ref()
            .is_ok_and(|r| same_rendered(r, &rendered));
        // The rules above should make this impossible; tests fail on it.
        #[cfg(test)]
        assert!(
            same,
            "the cache disagrees with the full render for {:?}",
            compiled.draft.body
        );
        if !same {
            tracing::warn!(
                "a message body rendered differently through the render cache; rendering it in full from now on"
            );
            self.insert(key, Slot::Uncacheable);
            return reference.map_err(|_| FullWay(line!()));
        }
        self.insert(key, Slot::Ready(Arc::new(entry)));
        Ok(rendered)
    }

    fn insert(&self, key: Key, slot: Slot) {
        let mut slots = self.lock();
        if slots.len() >= self.capacity {
            slots.clear();
        }
        slots.insert(key, slot);
    }
}

fn same_rendered(a: &Rendered, b: &Rendered) -> bool {
    a.subject == b.subject
        && a.preheader == b.preheader
        && a.html == b.html
        && a.text == b.text
        && a.links == b.links
}

/// Runs the three templates, recording: the normalized skeletons and the values.
fn record_parts(
    compiled: &Compiled,
    data: &serde_json::Value,
) -> Result<([String; 3], Vec<String>), FullWay> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            RECORDER.with(|r| r.borrow_mut().take());
        }
    }
    let ctx = Value::from(minijinja::value::Serde(data));
    RECORDER.with(|r| {
        *r.borrow_mut() = Some(Recorder {
            values: Vec::new(),
            literal: false,
        })
    });
    let _reset = Reset;
    let mut skeleton: [String; 3] = Default::default();
    for (i, part) in [Part::Subject, Part::Preheader, Part::Body]
        .into_iter()
        .enumerate()
    {
        // Placeholders are at least as long as their values: within the output limit
        // here means within it for real.
        let out = compiled.merge(part, &ctx).map_err(|_| FullWay(line!()))?;
        skeleton[i] = normalize(out);
    }
    let rec = RECORDER.with(|r| r.borrow_mut().take());
    match rec {
        Some(rec) if !rec.literal => Ok((skeleton, rec.values)),
        _ => Err(FullWay(line!())),
    }
}

/// Positions of the value placeholders in a skeleton: (byte offset, index, end offset).
fn value_spans(s: &str) -> Vec<(usize, usize, usize)> {
    let mut spans = Vec::new();
    let mut iter = s.char_indices().peekable();
    while let Some((at, c)) = iter.next() {
        if c != START {
            continue;
        }
        let mut index = 0;
        for _ in 0..4 {
            let d = iter
                .next()
                .map_or(0, |(_, d)| (d as u32).wrapping_sub(DIGIT0));
            index = (index << 4) | (d & 0xF) as usize;
        }
        let end = iter.next().map_or(s.len(), |(i, e)| i + e.len_utf8());
        spans.push((at, index, end));
    }
    spans
}

/// The rules on where a value may be printed (module docs).
fn check_positions(key: &Key) -> Result<Vec<usize>, FullWay> {
    let mut before_marker = Vec::new();
    for (part, s) in [(0, &key.subject), (1, &key.preheader), (2, &key.body)] {
        let first_lt = s.find('<');
        for (at, index, end) in value_spans(s) {
            let before = s[..at].chars().next_back();
            if before.is_some_and(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '&' | '#' | '<' | '/' | '!' | '\\')
            }) {
                return Err(FullWay(line!()));
            }
            if part == 2 && key.format == BodyFormat::Markdown {
                if first_lt.is_some_and(|lt| lt < at) {
                    return Err(FullWay(line!()));
                }
                if matches!(s[end..].chars().next(), Some('.' | ')')) {
                    before_marker.push(index);
                }
            }
        }
    }
    if key.format == BodyFormat::Markdown && key.body.contains("]:") {
        return Err(FullWay(line!()));
    }
    Ok(before_marker)
}

/// Runs the pipeline once on a skeleton.
fn fill(key: &Key, footer: &Footer) -> Result<Entry, FullWay> {
    let before_marker = check_positions(key)?;
    let subject = header_line(&key.subject);
    let preheader = header_line(&key.preheader);
    let body = match key.format {
        BodyFormat::Markdown => markdown_to_html(&key.body),
        BodyFormat::Html => key.body.clone(),
    };
    let untracked: Vec<&str> = [footer.unsubscribe, footer.preferences]
        .into_iter()
        .flatten()
        .collect();
    let mut n = 0;
    let mut link_placeholder = |_: &Link| {
        let mut p = String::new();
        placeholder(LINK, n, &mut p);
        n += 1;
        Some(p)
    };
    let pass = rewrite_body(
        &body,
        key.format == BodyFormat::Markdown,
        &untracked,
        &mut link_placeholder,
    );
    if pass.untracked_hits > 0 || pass.untrimmed_hrefs > 0 || pass.links.len() >= MAX_VALUES {
        return Err(FullWay(line!()));
    }
    if pass.links.iter().any(|l| {
        l.url
            .chars()
            .chain(l.label.iter().flat_map(|l| l.chars()))
            .any(is_marker)
    }) {
        return Err(FullWay(line!()));
    }
    let unsubscribe = format!("{UNSUBSCRIBE}{END}");
    let preferences = format!("{PREFERENCES}{END}");
    let placeholders = Footer {
        lang: footer.lang,
        unsubscribe: footer.unsubscribe.map(|_| unsubscribe.as_str()),
        preferences: footer.preferences.map(|_| preferences.as_str()),
    };
    let document = layout_document(&pass.html, &subject, &preheader, &placeholders)
        .map_err(|_| FullWay(line!()))?;
    scan(&document)?;
    let html = inline_css(&document).map_err(|_| FullWay(line!()))?;
    // The inliner keeps every text and attribute: the same placeholders come out.
    let markers = |s: &str| s.chars().filter(|&c| is_marker(c)).collect::<String>();
    if markers(&document) != markers(&html) {
        return Err(FullWay(line!()));
    }
    Ok(Entry {
        subject: pieces(&subject).ok_or(FullWay(line!()))?,
        preheader: pieces(&preheader).ok_or(FullWay(line!()))?,
        html: pieces(&html).ok_or(FullWay(line!()))?,
        text: pieces(&pass.text.out).ok_or(FullWay(line!()))?,
        links: pass.links,
        before_marker,
    })
}

/// Tracked and footer URLs go into `href`s and the text part as they are (after the
/// inliner's attribute escaping): nothing that trimming or the text part would change.
fn usable_url(url: &str) -> bool {
    !url.is_empty()
        && !url.starts_with('#')
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_marker(c))
}

/// How the CSS inliner writes an attribute value.
fn attribute_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\u{a0}' => out.push_str("&nbsp;"),
            _ => out.push(c),
        }
    }
}

fn assemble(
    entry: &Entry,
    values: &[String],
    footer: &Footer,
    track: &mut dyn FnMut(&Link) -> Option<String>,
) -> Result<Rendered, FullWay> {
    // Footer links are never tracked: a body link to one renders the full way.
    let footer_urls: Vec<&str> = [footer.unsubscribe, footer.preferences]
        .into_iter()
        .flatten()
        .collect();
    if footer_urls.iter().any(|u| !usable_url(u))
        || entry
            .links
            .iter()
            .any(|l| footer_urls.contains(&l.url.as_str()))
    {
        return Err(FullWay(line!()));
    }
    if entry.before_marker.iter().any(|&i| {
        values
            .get(i)
            .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit()))
    }) {
        return Err(FullWay(line!()));
    }
    // Each link as the message shows it: the tracked URL, or the author's.
    let mut hrefs = Vec::with_capacity(entry.links.len());
    for link in &entry.links {
        let href = track(link).unwrap_or_else(|| link.url.clone());
        if !usable_url(&href) {
            return Err(FullWay(line!()));
        }
        hrefs.push(href);
    }
    let fill = |pieces: &[Piece], attribute: bool| -> Result<String, FullWay> {
        let mut out = String::with_capacity(
            pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => t.len(),
                    _ => 64,
                })
                .sum(),
        );
        for piece in pieces {
            let url = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Value(i) => {
                    out.push_str(values.get(*i).ok_or(FullWay(line!()))?);
                    continue;
                }
                Piece::Link(k) => hrefs.get(*k).ok_or(FullWay(line!()))?.as_str(),
                Piece::Unsubscribe => footer.unsubscribe.ok_or(FullWay(line!()))?,
                Piece::Preferences => footer.preferences.ok_or(FullWay(line!()))?,
            };
            if attribute {
                attribute_into(&mut out, url);
            } else {
                out.push_str(url);
            }
        }
        Ok(out)
    };
    let subject = fill(&entry.subject, false)?;
    let preheader = fill(&entry.preheader, false)?;
    let html = fill(&entry.html, true)?;
    // Links keep their text-part form `text (url)`; the footer lines follow, as in `render`.
    let mut text = fill(&entry.text, false)?;
    super::append_footer_text(&mut text, footer);
    Ok(Rendered {
        subject,
        preheader,
        html,
        text,
        links: entry.links.clone(),
    })
}

/// Checks where placeholders ended up in the laid-out document (before inlining).
fn scan(document: &str) -> Result<(), FullWay> {
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(document));
    let tokenizer = Tokenizer::new(
        ScanSink(std::cell::RefCell::new(Scan::default())),
        TokenizerOpts::default(),
    );
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let scan = tokenizer.sink.0.into_inner();
    let css = scan.css.to_ascii_lowercase();
    if scan.bad || css.contains('=') || css.contains(":lang") {
        Err(FullWay(line!()))
    } else {
        Ok(())
    }
}

#[derive(Default)]
struct Scan {
    bad: bool,
    /// Every style sheet in the document: no selector may depend on an attribute's
    /// value or the language, as placeholders stand in for URLs.
    css: String,
    /// The element whose raw or escaped-only text is being read.
    raw: Option<String>,
}

struct ScanSink(std::cell::RefCell<Scan>);

impl TokenSink for ScanSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut s = self.0.borrow_mut();
        let has = |t: &str| t.chars().any(is_marker);
        match token {
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                if has(name) {
                    s.bad = true;
                }
                if tag.kind == TagKind::EndTag {
                    s.raw = None;
                    return TokenSinkResult::Continue;
                }
                if name == "link" {
                    s.bad = true;
                }
                for a in &tag.attrs {
                    let value: &str = &a.value;
                    let whole_url = name == "a"
                        && &*a.name.local == "href"
                        && pieces(value).is_some_and(|p| {
                            matches!(
                                p.as_slice(),
                                [Piece::Link(_) | Piece::Unsubscribe | Piece::Preferences]
                            )
                        });
                    // Attributes that are text to the reader (mrml writes the title into
                    // an aria-label) may hold values; a link's title may be its label.
                    let text_attribute = match &*a.name.local {
                        "aria-label" | "alt" => true,
                        "title" => name != "a",
                        _ => false,
                    };
                    let values_only = !value.contains([LINK, UNSUBSCRIBE, PREFERENCES]);
                    if has(&a.name.local)
                        || (has(value) && !whole_url && !(text_attribute && values_only))
                    {
                        s.bad = true;
                    }
                }
                let kind = match name {
                    "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => {
                        Some(RawKind::Rawtext)
                    }
                    "script" => Some(RawKind::ScriptData),
                    "title" | "textarea" => Some(RawKind::Rcdata),
                    "plaintext" => {
                        s.bad = true;
                        None
                    }
                    _ => None,
                };
                if let Some(kind) = kind
                    && !tag.self_closing
                {
                    s.raw = Some(name.to_owned());
                    return TokenSinkResult::RawData(kind);
                }
            }
            Token::CharacterTokens(chars) => match s.raw.as_deref() {
                None => {}
                // Subject placeholders are text in the title.
                Some("title") => s.bad |= chars.contains([LINK, UNSUBSCRIBE, PREFERENCES]),
                Some(element) => {
                    if element == "style" {
                        s.css.push_str(&chars);
                    }
                    s.bad |= has(&chars);
                }
            },
            Token::CommentToken(c) => s.bad |= has(&c),
            Token::DoctypeToken(d) => {
                s.bad |= [d.name, d.public_id, d.system_id]
                    .iter()
                    .flatten()
                    .any(|t| has(t));
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

#[cfg(test)]
mod tests;
