//! Turns an author's draft into a finished message: merge fields, Markdown,
//! tracked links, the MJML layout with inlined CSS, and a plain-text part.
//!
//! Drafts come from trusted editors, merge data from subscribers (untrusted).
//! So templates run sandboxed — no loader (`include`/`import`/`extends` do not
//! exist), no functions that touch the environment, files, clock or network,
//! a fuel budget and an output cap — and merge values are escaped in the body
//! while the author's own HTML passes through.
//!
//! Notes for authors:
//! - `{{ subscriber.name | default("friend") }}` falls back when the value is
//!   missing, null *or blank* (Jinja only treats undefined as missing; merge
//!   data often holds `""`). `{{ subscriber.first_name or "there" }}` works too.
//! - `{{ value | safe }}` inserts a value without escaping. In Markdown bodies
//!   values are escaped as character references (so they cannot add Markdown
//!   either); inside code spans those show literally.
//! - Link labels: `[Buy](https://… "purchase")` or `"topic:marketing"` in
//!   Markdown, `data-label="purchase"` in HTML. `data-no-track` keeps a link
//!   untracked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};

use html5ever::Attribute;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use minijinja::value::{Serde, Value};
use minijinja::{
    AutoEscape, Environment, ErrorKind, Output, State, Template, UndefinedBehavior,
    escape_formatter,
};
use pulldown_cmark::{Options, Parser};

mod cache;
pub use cache::RenderCache;

/// Work budget per template render: bounds loops and allocations (about
/// 64 bytes per unit), so a runaway template fails in milliseconds.
const FUEL: u64 = 100_000;
/// Largest merged subject, preheader or body, in bytes.
pub const MAX_OUTPUT: usize = 512 * 1024;
/// Custom auto-escape mode for Markdown bodies (see [`format_value`]).
const MARKDOWN: &str = "markdown";
/// Stands in for the body while mrml renders the layout: mrml's parser wants
/// well-formed XML, author HTML need not be, so the body is spliced in after.
/// A comment, so no escaped subject, preheader or URL can contain it.
const BODY_SLOT: &str = "<!--loopline:body-->";
/// System fonts first; the named ones render Korean well on Apple, Windows and Android.
const FONT_STACK: &str =
    "-apple-system, 'Apple SD Gothic Neo', 'Malgun Gothic', 'Noto Sans KR', sans-serif";
const LAYOUT_CSS: &str = "a { color: #2563eb; text-decoration: underline; }
h1, h2, h3 { line-height: 1.3; margin: 24px 0 12px; }
p, li { word-break: keep-all; overflow-wrap: break-word; }
.footer a { color: #6b7280; }";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyFormat {
    Markdown,
    Html,
}

#[derive(Debug, Clone)]
pub struct Draft {
    pub subject: String,
    pub preheader: String,
    pub body: String,
    pub format: BodyFormat,
}

/// One link in the rendered body, in document order (position starts at 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub position: u32,
    pub url: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub preheader: String,
    pub html: String,
    pub text: String,
    pub links: Vec<Link>,
}

/// Which template of a draft an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Subject,
    Preheader,
    Body,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Subject => "subject",
            Part::Preheader => "preheader",
            Part::Body => "body",
        })
    }
}

/// What kind of problem a template has at run time, as a stable code the dashboard
/// words in the reader's language (`web::i18n`); the engine's own English words stay
/// in the error's `message`, shown second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateIssue {
    UnknownFilter,
    UnknownFunction,
    UnknownTest,
    UnknownMethod,
    /// A value that is not there, used where one is needed (calling it, looping it).
    Undefined,
    /// An operation the values do not support (`"a" - 1`, dividing by zero).
    InvalidOperation,
    /// Too many, too few or wrong arguments to a filter or function.
    Arguments,
    /// Anything else the engine refuses.
    Other,
}

impl TemplateIssue {
    pub const ALL: [TemplateIssue; 8] = [
        Self::UnknownFilter,
        Self::UnknownFunction,
        Self::UnknownTest,
        Self::UnknownMethod,
        Self::Undefined,
        Self::InvalidOperation,
        Self::Arguments,
        Self::Other,
    ];

    fn of(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::UnknownFilter => Self::UnknownFilter,
            ErrorKind::UnknownFunction => Self::UnknownFunction,
            ErrorKind::UnknownTest => Self::UnknownTest,
            ErrorKind::UnknownMethod => Self::UnknownMethod,
            ErrorKind::UndefinedError => Self::Undefined,
            ErrorKind::InvalidOperation => Self::InvalidOperation,
            ErrorKind::TooManyArguments | ErrorKind::MissingArgument => Self::Arguments,
            _ => Self::Other,
        }
    }
}

/// Why a draft does not render. Kept as a value (`Problem::Template`) until a page words
/// it; `Display` is the English text with the engine's words, for logs.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    #[error("{part}, line {line}: {message}")]
    Syntax {
        part: Part,
        line: usize,
        message: String,
    },
    #[error("{part}{}: {message}", at_line(.line))]
    Runtime {
        part: Part,
        line: Option<usize>,
        issue: TemplateIssue,
        message: String,
    },
    #[error("{part} is longer than {limit} bytes after merging")]
    TooLarge { part: Part, limit: usize },
    #[error("{part} needs too much work to render (a loop or repetition is too big)")]
    OutOfFuel { part: Part },
    #[error("the email layout could not be built: {0}")]
    Layout(String),
}

impl RenderError {
    /// The template engine's (or the layout's) own words, in English.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Syntax { message, .. } | Self::Runtime { message, .. } => Some(message),
            Self::Layout(m) => Some(m),
            Self::TooLarge { .. } | Self::OutOfFuel { .. } => None,
        }
    }
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

/// Compile-only check used when the author saves a draft: syntax errors with line numbers.
pub fn check(draft: &Draft) -> Result<(), RenderError> {
    let env = environment();
    for (part, source) in parts(draft) {
        compile(&env, part, draft.format, source)?;
    }
    Ok(())
}

/// A draft with its three templates compiled once, for rendering many messages:
/// compiling was about half of the time of a message rendered from the cache.
pub struct Compiled {
    draft: Draft,
    env: Environment<'static>,
    /// No template captures output and none holds a placeholder character, so the
    /// render cache may take its messages (see `cache`).
    cacheable: bool,
}

impl Compiled {
    /// Fails with the first part's syntax error, as [`check`] does.
    pub fn new(draft: Draft) -> Result<Self, RenderError> {
        let mut env = environment();
        for (part, source) in parts(&draft) {
            env.add_template_owned(template_name(part, draft.format), source.to_owned())
                .map_err(|err| template_error(part, err))?;
        }
        let cacheable = cache::cacheable_sources(&draft);
        Ok(Self {
            draft,
            env,
            cacheable,
        })
    }

    pub fn draft(&self) -> &Draft {
        &self.draft
    }

    fn template(&self, part: Part) -> Template<'_, '_> {
        self.env
            .get_template(template_name(part, self.draft.format))
            .expect("every part is added in `Compiled::new`")
    }

    /// Runs one part's template (within the fuel and output limits).
    fn merge(&self, part: Part, ctx: &Value) -> Result<String, RenderError> {
        let out = self
            .template(part)
            .render(ctx.clone())
            .map_err(|err| template_error(part, err))?;
        if out.len() > MAX_OUTPUT {
            return Err(RenderError::TooLarge {
                part,
                limit: MAX_OUTPUT,
            });
        }
        Ok(out)
    }

    /// The full render of [`render`], without compiling again.
    pub fn render(
        &self,
        data: &serde_json::Value,
        track: &mut dyn FnMut(&Link) -> Option<String>,
    ) -> Result<Rendered, RenderError> {
        let draft = &self.draft;
        let ctx = Value::from(Serde(data));
        let subject = header_line(&self.merge(Part::Subject, &ctx)?);
        let preheader = header_line(&self.merge(Part::Preheader, &ctx)?);
        let body = self.merge(Part::Body, &ctx)?;
        let body = match draft.format {
            BodyFormat::Markdown => markdown_to_html(&body),
            BodyFormat::Html => body,
        };

        let footer = Footer::from_data(data);
        let untracked: Vec<&str> = [footer.unsubscribe, footer.preferences]
            .into_iter()
            .flatten()
            .collect();
        // Markdown has no attribute syntax, so its link titles carry labels.
        let title_labels = draft.format == BodyFormat::Markdown;
        let pass = rewrite_body(&body, title_labels, &untracked, track);
        let html = layout(&pass.html, &subject, &preheader, &footer)?;
        let mut text = pass.text.out;
        append_footer_text(&mut text, &footer);
        Ok(Rendered {
            subject,
            preheader,
            html,
            text,
            links: pass.links,
        })
    }
}

/// Renders `draft` for one recipient. `data` is the merge data (an object with
/// `subscriber`, `unsubscribe_url`, `preferences_url` and whatever else the
/// caller adds). `track` gets every trackable link in document order and
/// returns the URL to put in its place (or `None` to keep it).
pub fn render(
    draft: &Draft,
    data: &serde_json::Value,
    track: &mut dyn FnMut(&Link) -> Option<String>,
) -> Result<Rendered, RenderError> {
    Compiled::new(draft.clone())?.render(data, track)
}

fn parts(draft: &Draft) -> [(Part, &str); 3] {
    [
        (Part::Subject, &draft.subject),
        (Part::Preheader, &draft.preheader),
        (Part::Body, &draft.body),
    ]
}

fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    // Missing merge data (`subscriber.fields.company`) prints as nothing instead of failing.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|name| match name {
        "body.html" => AutoEscape::Html,
        "body.md" => AutoEscape::Custom(MARKDOWN.into()),
        _ => AutoEscape::None,
    });
    env.set_formatter(format_value);
    env.add_filter("default", default_filter);
    env.add_filter("d", default_filter);
    env
}

fn compile<'e, 's>(
    env: &'e Environment<'s>,
    part: Part,
    format: BodyFormat,
    source: &'s str,
) -> Result<Template<'e, 's>, RenderError> {
    env.template_from_named_str(template_name(part, format), source)
        .map_err(|err| template_error(part, err))
}

/// The name picks the auto-escape mode in `environment`.
fn template_name(part: Part, format: BodyFormat) -> &'static str {
    match (part, format) {
        (Part::Subject, _) => "subject",
        (Part::Preheader, _) => "preheader",
        (Part::Body, BodyFormat::Html) => "body.html",
        (Part::Body, BodyFormat::Markdown) => "body.md",
    }
}

fn template_error(part: Part, err: minijinja::Error) -> RenderError {
    let message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    match err.kind() {
        ErrorKind::OutOfFuel => RenderError::OutOfFuel { part },
        ErrorKind::SyntaxError => RenderError::Syntax {
            part,
            line: err.line().unwrap_or(1),
            message,
        },
        kind => RenderError::Runtime {
            part,
            line: err.line(),
            issue: TemplateIssue::of(kind),
            message,
        },
    }
}

/// Prints null as nothing (JSON data has nulls; Jinja would print "none") and
/// escapes values in Markdown bodies as character references: they decode to
/// the literal characters, so a name like `[x](https://evil)` or `# hi` can
/// neither add HTML nor Markdown structure.
fn format_value(
    out: &mut Output,
    state: &mut State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if value.is_none() {
        return Ok(());
    }
    // While a render cache records a skeleton, plain values become placeholders.
    if cache::record(out, value)? {
        return Ok(());
    }
    let markdown = matches!(state.auto_escape(), AutoEscape::Custom(mode) if mode == MARKDOWN);
    if value.is_safe() || !markdown {
        return escape_formatter(out, state, value);
    }
    let mut escaped = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii_punctuation() || c == '\n' || c == '\r' {
            let _ = write!(escaped, "&#{};", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    out.write_str(&escaped).map_err(minijinja::Error::from)
}

/// `default` that also treats null and blank strings as missing; with a true
/// second argument (Jinja's form) any falsy value is replaced as well.
fn default_filter(value: &Value, fallback: Option<Value>, falsy: Option<bool>) -> Value {
    let blank = value.is_undefined()
        || value.is_none()
        || value.as_str().is_some_and(|s| s.trim().is_empty());
    if blank || (falsy == Some(true) && !value.is_true()) {
        fallback.unwrap_or_else(|| Value::from(""))
    } else {
        value.clone()
    }
}

/// Mail headers are one line: CR/LF from merge data would let a subscriber
/// inject headers. Control characters and runs of spaces become one space.
fn header_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c == ' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn markdown_to_html(source: &str) -> String {
    let parser = Parser::new_ext(
        source,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    );
    let mut html = String::with_capacity(source.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, parser);
    html
}

/// A label is one token, `[a-z0-9_-]+`, optionally prefixed with `topic:`.
fn is_label(title: &str) -> bool {
    let name = title.strip_prefix("topic:").unwrap_or(title);
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
}

fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

/// Text mrml will also write into an attribute (the title becomes the body's
/// `aria-label`): mrml 6 writes attribute values with Rust's `{:?}`, which would turn a
/// backslash into `\\` and a variation selector (the U+FE0F of ❤️) or a zero-width joiner
/// into `\u{fe0f}`. Such characters go in as numeric references instead, which the HTML
/// parse in CSS inlining turns back into the characters themselves.
fn attribute_safe(escaped: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(escaped.len());
    for c in escaped.chars() {
        if c != '\'' && c.escape_debug().count() > 1 {
            let _ = write!(out, "&#x{:x};", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

fn is_web_url(url: &str) -> bool {
    url.split_once(':').is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
    })
}

/// Unsubscribe and preferences links from the merge data, and the words for them.
struct Footer<'a> {
    lang: &'a str,
    unsubscribe: Option<&'a str>,
    preferences: Option<&'a str>,
}

impl<'a> Footer<'a> {
    fn from_data(data: &'a serde_json::Value) -> Self {
        let text = |pointer| {
            data.pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        // Goes into an attribute unescaped, hence the strict check.
        let lang = text("/subscriber/language")
            .filter(|l| l.len() <= 35 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        Footer {
            lang: lang.unwrap_or("und"),
            unsubscribe: text("/unsubscribe_url"),
            preferences: text("/preferences_url"),
        }
    }

    /// (label, url) for each footer link present.
    fn links(&self) -> impl Iterator<Item = (&'static str, &'a str)> {
        let korean = self
            .lang
            .split('-')
            .next()
            .is_some_and(|l| l.eq_ignore_ascii_case("ko"));
        let (unsubscribe, preferences) = if korean {
            ("수신 거부", "수신 설정")
        } else {
            ("Unsubscribe", "Email preferences")
        };
        [
            self.unsubscribe.map(|url| (unsubscribe, url)),
            self.preferences.map(|url| (preferences, url)),
        ]
        .into_iter()
        .flatten()
    }
}

/// Wraps the body in the MJML layout, renders it and inlines the CSS.
/// The footer's lines at the end of the text part (`label: url`, a blank line apart).
/// The render cache uses it too, so both paths end the text part the same way.
fn append_footer_text(text: &mut String, footer: &Footer) {
    for (label, url) in footer.links() {
        text.push_str(if text.is_empty() { "" } else { "\n\n" });
        let _ = write!(text, "{label}: {url}");
    }
}

fn layout(
    body: &str,
    subject: &str,
    preheader: &str,
    footer: &Footer,
) -> Result<String, RenderError> {
    inline_css(&layout_document(body, subject, preheader, footer)?)
}

/// The layout rendered around the body, before its CSS is inlined.
fn layout_document(
    body: &str,
    subject: &str,
    preheader: &str,
    footer: &Footer,
) -> Result<String, RenderError> {
    let layout_error = |err: &dyn fmt::Display| RenderError::Layout(err.to_string());
    let preview = if preheader.is_empty() {
        String::new()
    } else {
        format!("<mj-preview>{}</mj-preview>", escaped(preheader))
    };
    let footer_links = footer
        .links()
        .map(|(label, url)| format!(r#"<a href="{}">{label}</a>"#, escaped(url)))
        .collect::<Vec<_>>()
        .join(" · ");
    let footer_section = if footer_links.is_empty() {
        String::new()
    } else {
        format!(
            r##"<mj-section><mj-column><mj-text css-class="footer" align="center" font-size="12px" color="#6b7280">{footer_links}</mj-text></mj-column></mj-section>"##
        )
    };
    let lang = footer.lang;
    let title = attribute_safe(&escaped(subject));
    let mjml = format!(
        r##"<mjml lang="{lang}">
  <mj-head>
    <mj-title>{title}</mj-title>
    {preview}
    <mj-attributes>
      <mj-all font-family="{FONT_STACK}" />
      <mj-text font-size="16px" line-height="1.6" color="#1f2937" />
    </mj-attributes>
    <mj-style>{LAYOUT_CSS}</mj-style>
  </mj-head>
  <mj-body width="600px">
    <mj-section><mj-column><mj-text>{BODY_SLOT}</mj-text></mj-column></mj-section>
    {footer_section}
  </mj-body>
</mjml>"##
    );
    let parsed = mrml::parse(&mjml).map_err(|e| layout_error(&e))?;
    let options = mrml::prelude::render::RenderOptions {
        // No web-font <link>s: the stack above only names system fonts.
        fonts: HashMap::new(),
        ..Default::default()
    };
    let html = parsed
        .element
        .render(&options)
        .map_err(|e| layout_error(&e))?
        .replacen(BODY_SLOT, body, 1)
        // mrml only writes the http-equiv form.
        .replacen("<head>", r#"<head><meta charset="utf-8">"#, 1);
    Ok(html)
}

fn inline_css(html: &str) -> Result<String, RenderError> {
    let layout_error = |err: &dyn fmt::Display| RenderError::Layout(err.to_string());
    // Keeps the <style> for what cannot be inlined (media queries, :hover).
    css_inline::CSSInliner::options()
        .load_remote_stylesheets(false)
        .keep_style_tags(true)
        .remove_inlined_selectors(true)
        .build()
        .inline(html)
        .map_err(|e| layout_error(&e))
}

/// Tokenizes the body once: rewrites tracked links, drops authoring
/// attributes and builds the text part from the same tokens.
fn rewrite_body<'a>(
    html: &str,
    title_labels: bool,
    untracked: &'a [&'a str],
    track: &'a mut dyn FnMut(&Link) -> Option<String>,
) -> BodyPass<'a> {
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let pass = BodyPass {
        html: String::with_capacity(html.len() + 256),
        text: Text::default(),
        links: Vec::new(),
        open_links: Vec::new(),
        content: Content::Normal,
        title_labels,
        untracked,
        untracked_hits: 0,
        untrimmed_hrefs: 0,
        track,
    };
    let tokenizer = Tokenizer::new(Sink(RefCell::new(pass)), TokenizerOpts::default());
    // The result only asks to run scripts, which this sink never requests.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.0.into_inner()
}

struct Sink<'a>(RefCell<BodyPass<'a>>);

impl TokenSink for Sink<'_> {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        self.0.borrow_mut().token(token)
    }
}

/// How the tokenizer treats the text inside the current element.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Content {
    Normal,
    /// `<style>`, `<script>`…: copied verbatim, not part of the text.
    Raw,
    /// `<title>`, `<textarea>`: escaped text, not part of the text.
    Hidden,
}

struct BodyPass<'a> {
    html: String,
    text: Text,
    links: Vec<Link>,
    /// One entry per open `<a>`: where its text starts and the href to show.
    open_links: Vec<Option<(usize, String)>>,
    content: Content,
    /// Take a label-shaped `title` as the label (Markdown bodies).
    title_labels: bool,
    untracked: &'a [&'a str],
    /// Trackable links left alone because they are a footer link (see [`cache`]).
    untracked_hits: usize,
    /// Tracked links whose href has spaces around the URL (see [`cache`]).
    untrimmed_hrefs: usize,
    track: &'a mut dyn FnMut(&Link) -> Option<String>,
}

const BLOCK_TAGS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "center",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "ul",
];

impl BodyPass<'_> {
    fn token(&mut self, token: Token) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) if tag.kind == TagKind::StartTag => return self.start_tag(tag),
            Token::TagToken(tag) => self.end_tag(&tag),
            Token::CharacterTokens(chars) => {
                if self.content == Content::Raw {
                    self.html.push_str(&chars);
                } else {
                    escape_into(&mut self.html, &chars);
                }
                if self.content == Content::Normal {
                    self.text.push(&chars);
                }
            }
            Token::CommentToken(comment) => {
                let _ = write!(self.html, "<!--{comment}-->");
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }

    fn start_tag(&mut self, mut tag: Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        match name {
            "a" => {
                let open = self.open_link(&mut tag.attrs);
                self.open_links.push(open);
            }
            "br" => self.text.newline(),
            "li" => {
                self.text.gap(Gap::Line);
                self.text.marker = true;
            }
            "tr" => self.text.gap(Gap::Line),
            "td" | "th" => self.text.gap(Gap::Space),
            "img" => {
                if let Some(alt) = attr(&tag.attrs, "alt") {
                    self.text.gap(Gap::Space);
                    self.text.push(alt);
                }
            }
            "pre" => self.text.pre += 1,
            _ => {}
        }
        if BLOCK_TAGS.contains(&name) {
            self.text.gap(Gap::Paragraph);
        }
        self.write_tag(&tag);
        let (content, result) = match name {
            "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                (Content::Raw, TokenSinkResult::RawData(RawKind::Rawtext))
            }
            "script" => (Content::Raw, TokenSinkResult::RawData(RawKind::ScriptData)),
            "title" | "textarea" => (Content::Hidden, TokenSinkResult::RawData(RawKind::Rcdata)),
            _ => (Content::Normal, TokenSinkResult::Continue),
        };
        if !tag.self_closing {
            self.content = content;
            return result;
        }
        TokenSinkResult::Continue
    }

    fn end_tag(&mut self, tag: &Tag) {
        // In raw modes the tokenizer only ends the element that started them.
        self.content = Content::Normal;
        let name: &str = &tag.name;
        match name {
            "a" => {
                if let Some(Some((start, href))) = self.open_links.pop() {
                    self.text.link(start, &href);
                }
            }
            "li" | "tr" => self.text.gap(Gap::Line),
            "td" | "th" => self.text.gap(Gap::Space),
            "pre" => self.text.pre = self.text.pre.saturating_sub(1),
            _ => {}
        }
        if BLOCK_TAGS.contains(&name) {
            self.text.gap(Gap::Paragraph);
        }
        self.write_tag(tag);
    }

    /// Records and tracks the link, removes the authoring attributes and
    /// returns what the text part shows for it.
    fn open_link(&mut self, attrs: &mut Vec<Attribute>) -> Option<(usize, String)> {
        let mut label = take_attr(attrs, "data-label")
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty());
        if self.title_labels
            && label.is_none()
            && let Some(i) = attrs
                .iter()
                .position(|a| is_attr(a, "title") && is_label(&a.value))
        {
            label = Some(attrs.remove(i).value.to_string());
        }
        let no_track = take_attr(attrs, "data-no-track").is_some();
        let href = attrs.iter_mut().find(|a| is_attr(a, "href"))?;
        let url = href.value.trim().to_owned();
        let trackable = !no_track && is_web_url(&url);
        if trackable && self.untracked.contains(&url.as_str()) {
            self.untracked_hits += 1;
        } else if trackable {
            if url.len() != href.value.len() {
                self.untrimmed_hrefs += 1;
            }
            let link = Link {
                position: u32::try_from(self.links.len() + 1).unwrap_or(u32::MAX),
                url,
                label,
            };
            if let Some(tracked) = (self.track)(&link) {
                href.value = StrTendril::from(tracked);
            }
            self.links.push(link);
        }
        let shown = href.value.trim();
        (!shown.is_empty() && !shown.starts_with('#'))
            .then(|| (self.text.out.len(), shown.to_owned()))
    }

    fn write_tag(&mut self, tag: &Tag) {
        // A pasted full document must not nest <html>/<body> inside the layout.
        if matches!(&*tag.name, "html" | "head" | "body") {
            return;
        }
        self.html.push_str(if tag.kind == TagKind::EndTag {
            "</"
        } else {
            "<"
        });
        self.html.push_str(&tag.name);
        for a in &tag.attrs {
            let _ = write!(self.html, " {}=\"", &*a.name.local);
            escape_into(&mut self.html, &a.value);
            self.html.push('"');
        }
        self.html
            .push_str(if tag.self_closing { " />" } else { ">" });
    }
}

fn is_attr(a: &Attribute, name: &str) -> bool {
    &*a.name.local == name
}

fn attr<'t>(attrs: &'t [Attribute], name: &str) -> Option<&'t str> {
    attrs.iter().find(|a| is_attr(a, name)).map(|a| &*a.value)
}

fn take_attr(attrs: &mut Vec<Attribute>, name: &str) -> Option<StrTendril> {
    let i = attrs.iter().position(|a| is_attr(a, name))?;
    Some(attrs.remove(i).value)
}

/// Separation owed before the next text; larger wins.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    #[default]
    None,
    Space,
    Line,
    Paragraph,
}

/// The plain-text part: collapses HTML whitespace, keeps blocks apart and
/// writes links as `text (url)`.
#[derive(Default)]
struct Text {
    out: String,
    pending: Gap,
    /// A list item started; its "- " is written with its first text.
    marker: bool,
    pre: usize,
}

impl Text {
    fn gap(&mut self, gap: Gap) {
        self.pending = self.pending.max(gap);
    }

    fn flush(&mut self) {
        let gap = std::mem::take(&mut self.pending);
        if !self.out.is_empty() {
            match gap {
                Gap::None => {}
                Gap::Space => {
                    if !self.out.ends_with([' ', '\n']) {
                        self.out.push(' ');
                    }
                }
                Gap::Line | Gap::Paragraph => {
                    let kept = self.out.trim_end_matches([' ', '\n']).len();
                    self.out.truncate(kept);
                    self.out
                        .push_str(if gap == Gap::Line { "\n" } else { "\n\n" });
                }
            }
        }
        if std::mem::take(&mut self.marker) {
            self.out.push_str("- ");
        }
    }

    fn push(&mut self, s: &str) {
        if self.pre > 0 {
            self.flush();
            self.out.push_str(s);
            return;
        }
        for c in s.chars() {
            if c.is_ascii_whitespace() {
                self.gap(Gap::Space);
            } else {
                self.flush();
                self.out.push(c);
            }
        }
    }

    fn newline(&mut self) {
        self.pending = Gap::None;
        let kept = self.out.trim_end_matches(' ').len();
        self.out.truncate(kept);
        if !self.out.is_empty() {
            self.out.push('\n');
        }
    }

    /// Ends a link whose text started at `start`: `text (url)`, or just the
    /// url when the link had no text (an image without alt).
    fn link(&mut self, start: usize, href: &str) {
        let had_text = self.out.len() > start;
        self.gap(Gap::Space);
        self.flush();
        if had_text {
            let _ = write!(self.out, "({href})");
        } else {
            self.out.push_str(href);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn draft(format: BodyFormat, subject: &str, body: &str) -> Draft {
        Draft {
            subject: subject.into(),
            preheader: String::new(),
            body: body.into(),
            format,
        }
    }

    fn data(name: serde_json::Value) -> serde_json::Value {
        json!({
            "subscriber": {"email": "a@example.com", "name": name, "first_name": name, "language": "ko", "fields": {}},
            "unsubscribe_url": "https://app.example/u/tok?x=1&y=2",
            "preferences_url": "https://app.example/p/tok",
            "slug": "spring-sale",
        })
    }

    fn tracker(l: &Link) -> Option<String> {
        Some(format!("https://t.example/c/{}", l.position))
    }

    fn run(draft: &Draft, data: &serde_json::Value) -> Result<Rendered, RenderError> {
        render(draft, data, &mut tracker)
    }

    /// (text, href, title) of every link in the document, footer included.
    fn anchors(html: &str) -> Vec<(String, String, Option<String>)> {
        let doc = scraper::Html::parse_document(html);
        let a = scraper::Selector::parse("a").unwrap();
        doc.select(&a)
            .map(|e| {
                let attr = |name| e.value().attr(name).map(str::to_owned);
                (
                    e.text().collect(),
                    attr("href").unwrap_or_default(),
                    attr("title"),
                )
            })
            .collect()
    }

    fn subject(template: &str, data: &serde_json::Value) -> String {
        run(&draft(BodyFormat::Markdown, template, ""), data)
            .unwrap()
            .subject
    }

    #[test]
    fn merge_fields_fall_back_when_name_is_missing_null_or_blank() {
        let t = r#"Hi {{ subscriber.name | default("friend") }}, {{ subscriber.first_name or "there" }}"#;
        assert_eq!(subject(t, &data(json!("Ann"))), "Hi Ann, Ann");
        assert_eq!(subject(t, &data(json!(""))), "Hi friend, there");
        assert_eq!(subject(t, &data(json!(null))), "Hi friend, there");
        assert_eq!(subject(t, &json!({})), "Hi friend, there");
        // Jinja's two-argument form still works.
        assert_eq!(
            subject(
                r#"{{ subscriber.name | default("friend", true) }}"#,
                &data(json!(""))
            ),
            "friend"
        );
        // Undefined variables render empty, null prints nothing.
        assert_eq!(
            subject(
                "[{{ nope.deeper }}{{ subscriber.name }}]",
                &data(json!(null))
            ),
            "[]"
        );
    }

    #[test]
    fn a_subject_with_emoji_sequences_and_a_backslash_is_the_title_and_label_as_written() {
        let subject = "❤️ 👨‍👩‍👧 세일 \\ \"끝\" & <b>";
        let r = run(
            &draft(BodyFormat::Markdown, subject, "본문"),
            &data(json!("홍길동")),
        )
        .unwrap();
        let doc = scraper::Html::parse_document(&r.html);
        let title = scraper::Selector::parse("title").unwrap();
        let labelled = scraper::Selector::parse("[aria-label]").unwrap();
        assert_eq!(
            doc.select(&title)
                .next()
                .unwrap()
                .text()
                .collect::<String>(),
            subject
        );
        let labels: Vec<_> = doc
            .select(&labelled)
            .map(|e| e.value().attr("aria-label").unwrap())
            .collect();
        assert!(!labels.is_empty(), "{}", r.html);
        assert!(labels.iter().all(|l| *l == subject), "{labels:?}");
        assert!(!r.html.contains("\\u{"), "{}", r.html);
    }

    #[test]
    fn korean_name_stays_intact_everywhere() {
        let d = Draft {
            subject: "{{ subscriber.name }}님, 봄 세일이 시작됐어요".into(),
            preheader: "{{ subscriber.name }}님께만 드리는 쿠폰".into(),
            body: "# 안녕하세요 {{ subscriber.name }}님\n\n오늘의 소식입니다.".into(),
            format: BodyFormat::Markdown,
        };
        let r = run(&d, &data(json!("홍길동"))).unwrap();
        assert_eq!(r.subject, "홍길동님, 봄 세일이 시작됐어요");
        assert_eq!(r.preheader, "홍길동님께만 드리는 쿠폰");
        assert!(r.html.contains("안녕하세요 홍길동님"), "{}", r.html);
        assert!(r.html.contains("홍길동님께만 드리는 쿠폰"));
        assert!(!r.html.contains("&#"), "Hangul must not be entity-escaped");
        assert!(
            r.text
                .starts_with("안녕하세요 홍길동님\n\n오늘의 소식입니다."),
            "{}",
            r.text
        );
        assert!(
            r.text
                .contains("수신 거부: https://app.example/u/tok?x=1&y=2")
        );
    }

    #[test]
    fn attacker_name_is_escaped_in_html_and_literal_in_text() {
        let name = r#"<script>alert(1)</script><img src=x onerror=alert(1)> [win](https://evil.example) # x"#;
        for format in [BodyFormat::Markdown, BodyFormat::Html] {
            let d = draft(
                format,
                "Hi {{ subscriber.name }}",
                "<p>Hello {{ subscriber.name }}!</p>",
            );
            let r = run(&d, &data(json!(name))).unwrap();
            let doc = scraper::Html::parse_document(&r.html);
            let injected = scraper::Selector::parse("script, img, [onerror]").unwrap();
            assert_eq!(doc.select(&injected).count(), 0, "{format:?}: {}", r.html);
            assert!(
                r.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{format:?}: {}",
                r.html
            );
            assert!(r.links.is_empty(), "{format:?}: merge data added a link");
            assert!(!r.html.contains("href=\"https://evil"), "{format:?}");
            assert!(
                r.text.contains(&format!("Hello {name}!")),
                "{format:?}: {}",
                r.text
            );
            assert_eq!(r.subject, format!("Hi {name}"));
        }
        // Markdown structure in a value stays text, too.
        let r = run(
            &draft(BodyFormat::Markdown, "", "{{ subscriber.name }}"),
            &data(json!("# Not a heading")),
        )
        .unwrap();
        assert!(!r.html.contains("<h1"));
        assert!(r.text.starts_with("# Not a heading"));
    }

    #[test]
    fn runaway_templates_fail_fast() {
        let started = Instant::now();
        let nested =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        assert!(matches!(
            run(&draft(BodyFormat::Html, "", nested), &json!({})),
            Err(RenderError::OutOfFuel { part: Part::Body })
        ));
        assert!(matches!(
            run(
                &draft(BodyFormat::Html, "", r#"{{ "x" * 100000000 }}"#),
                &json!({})
            ),
            Err(RenderError::OutOfFuel { .. })
        ));
        let huge = run(
            &draft(
                BodyFormat::Html,
                "{% for i in range(100000000) %}x{% endfor %}",
                "",
            ),
            &json!({}),
        );
        assert!(
            matches!(
                huge,
                Err(RenderError::Runtime {
                    part: Part::Subject,
                    ..
                })
            ),
            "{huge:?}"
        );
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(1000), ")".repeat(1000));
        assert!(matches!(
            run(&draft(BodyFormat::Html, "", &deep), &json!({})),
            Err(RenderError::Syntax { .. })
        ));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn template_problems_carry_a_code_and_their_line() {
        let body = "line one\n\n{{ subscriber.name | shout }}";
        let err = run(&draft(BodyFormat::Markdown, "", body), &data(json!("Ann"))).unwrap_err();
        assert!(
            matches!(
                err,
                RenderError::Runtime {
                    part: Part::Body,
                    line: Some(3),
                    issue: TemplateIssue::UnknownFilter,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.detail().is_some_and(|d| d.contains("shout")), "{err:?}");
        let err = run(
            &draft(BodyFormat::Html, "{{ nothing_here() }}", ""),
            &json!({}),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                RenderError::Runtime {
                    part: Part::Subject,
                    issue: TemplateIssue::UnknownFunction,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = run(&draft(BodyFormat::Html, "{{ 1 - \"a\" }}", ""), &json!({})).unwrap_err();
        assert!(
            matches!(
                err,
                RenderError::Runtime {
                    issue: TemplateIssue::InvalidOperation,
                    ..
                }
            ),
            "{err:?}"
        );
        // Only the layout and the engine's words are detail; sizes and budgets are not.
        assert_eq!(RenderError::OutOfFuel { part: Part::Body }.detail(), None);
    }

    #[test]
    fn output_is_capped() {
        let err = run(
            &draft(BodyFormat::Html, "", r#"{{ "x" * 600000 }}"#),
            &json!({}),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            RenderError::TooLarge {
                part: Part::Body,
                limit: MAX_OUTPUT
            }
        ));
        assert!(err.to_string().starts_with("body is longer than"));
    }

    #[test]
    fn no_access_to_files_environment_or_time() {
        for body in [
            r#"{% include "/etc/passwd" %}"#,
            r#"{% import "x" as x %}"#,
            r#"{% extends "x" %}"#,
        ] {
            let err = check(&draft(BodyFormat::Html, "", body)).unwrap_err();
            assert!(
                matches!(
                    err,
                    RenderError::Syntax {
                        part: Part::Body,
                        ..
                    }
                ),
                "{body}: {err:?}"
            );
        }
        for call in ["{{ now() }}", "{{ env('HOME') }}", "{{ getenv('HOME') }}"] {
            let r = run(&draft(BodyFormat::Html, call, ""), &json!({}));
            assert!(
                matches!(r, Err(RenderError::Runtime { .. })),
                "{call}: {r:?}"
            );
        }
        assert_eq!(subject("{{ env }}{{ environ }}{{ HOME }}", &json!({})), "");
    }

    #[test]
    fn links_are_tracked_labelled_or_left_alone() {
        let body = r#"[Buy](https://shop.example/x "purchase") and [Read](https://blog.example/{{ slug }} "topic:marketing").

[Plain](https://a.example/ "A normal title") [Mail](mailto:a@example.com) [Top](#top)
<a href="https://skip.example/" data-no-track>skip</a> [Leave]({{ unsubscribe_url }})
<a href="{{ preferences_url }}">prefs</a> ![logo](https://img.example/l.png "logo")"#;
        let r = run(&draft(BodyFormat::Markdown, "", body), &data(json!("Ann"))).unwrap();
        assert_eq!(
            r.links,
            vec![
                Link {
                    position: 1,
                    url: "https://shop.example/x".into(),
                    label: Some("purchase".into())
                },
                Link {
                    position: 2,
                    url: "https://blog.example/spring-sale".into(),
                    label: Some("topic:marketing".into())
                },
                Link {
                    position: 3,
                    url: "https://a.example/".into(),
                    label: None
                },
            ]
        );
        let h = &r.html;
        let unsubscribe = "https://app.example/u/tok?x=1&y=2";
        let preferences = "https://app.example/p/tok";
        let expected: Vec<(&str, &str, Option<&str>)> = vec![
            ("Buy", "https://t.example/c/1", None),
            ("Read", "https://t.example/c/2", None),
            ("Plain", "https://t.example/c/3", Some("A normal title")),
            ("Mail", "mailto:a@example.com", None),
            ("Top", "#top", None),
            ("skip", "https://skip.example/", None),
            ("Leave", unsubscribe, None),
            ("prefs", preferences, None),
            ("수신 거부", unsubscribe, None),
            ("수신 설정", preferences, None),
        ];
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(text, href, title)| (text.to_owned(), href.to_owned(), title.map(str::to_owned)))
            .collect();
        assert_eq!(anchors(h), expected);
        assert!(!h.contains("data-label") && !h.contains("data-no-track"));
        // Image titles are not link labels.
        assert!(h.contains("title=\"logo\""));

        let html_body = r#"<p><a href="https://x.example/a" data-label="purchase" class="btn">A</a>
            <a href="HTTPS://x.example/b">B</a> <a href="tel:+821012345678">call</a> <a>none</a></p>"#;
        let mut seen = Vec::new();
        let r = render(
            &draft(BodyFormat::Html, "", html_body),
            &json!({}),
            &mut |l| {
                seen.push(l.clone());
                (l.position == 1).then(|| "https://t.example/one".to_owned())
            },
        )
        .unwrap();
        assert_eq!(seen, r.links);
        assert_eq!(r.links[0].label.as_deref(), Some("purchase"));
        assert_eq!(
            r.links[1],
            Link {
                position: 2,
                url: "HTTPS://x.example/b".into(),
                label: None
            }
        );
        let hrefs: Vec<String> = anchors(&r.html)
            .into_iter()
            .map(|(_, href, _)| href)
            .collect();
        // `None` from track keeps the author's href.
        assert_eq!(
            hrefs,
            [
                "https://t.example/one",
                "HTTPS://x.example/b",
                "tel:+821012345678",
                ""
            ]
        );
        assert!(r.html.contains(r#"class="btn""#));
        assert!(!r.html.contains("data-label"));
    }

    #[test]
    fn layout_has_preheader_body_footer_and_inlined_css() {
        let d = Draft {
            subject: "News".into(),
            preheader: "Only {{ subscriber.name }} & friends".into(),
            body: "Read [the post](https://blog.example/p).".into(),
            format: BodyFormat::Markdown,
        };
        let r = run(&d, &data(json!("Ann"))).unwrap();
        let h = &r.html;
        assert!(
            h.starts_with("<!doctype html>") || h.starts_with("<!DOCTYPE html>"),
            "{h}"
        );
        assert!(h.contains(r#"<meta charset="utf-8">"#), "{h}");
        assert!(h.contains("name=\"viewport\""));
        assert!(h.contains(r#"lang="ko""#));
        assert!(h.contains("<title>News</title>"));
        let preview = h.find("Only Ann &amp; friends").expect("preheader in html");
        let hidden = h[..preview].rfind("<div").unwrap();
        assert!(
            h[hidden..preview].contains("display:none"),
            "{}",
            &h[hidden..preview]
        );
        assert_eq!(h.matches("Read ").count(), 1, "body exactly once");
        assert!(!h.contains(BODY_SLOT));
        assert!(h.contains("수신 거부</a>"));
        assert!(h.contains(r#"href="https://app.example/u/tok?x=1&amp;y=2""#));
        assert!(h.contains("Apple SD Gothic Neo"));
        // `a { color: #2563eb }` from the layout's mj-style is now on the link itself.
        let link = h.find(r#"href="https://t.example/c/1""#).unwrap();
        let tag = &h[h[..link].rfind("<a").unwrap()..link + h[link..].find('>').unwrap()];
        assert!(tag.contains("style=") && tag.contains("#2563eb"), "{tag}");
        // Media queries stay in the head.
        assert!(h.contains("@media"));
    }

    #[test]
    fn merge_data_cannot_move_the_body_out_of_its_slot() {
        let d = Draft {
            subject: "{{ subscriber.name }}".into(),
            preheader: "{{ subscriber.name }}".into(),
            body: r#"<p id="b">Body</p>"#.into(),
            format: BodyFormat::Html,
        };
        let r = run(&d, &data(json!(BODY_SLOT))).unwrap();
        let doc = scraper::Html::parse_document(&r.html);
        let select = |css| doc.select(&scraper::Selector::parse(css).unwrap()).count();
        assert_eq!(select("td p#b"), 1, "{}", r.html);
        assert_eq!(select("head p, title p"), 0);
        assert_eq!(r.subject, BODY_SLOT);
    }

    #[test]
    fn text_part_reads_like_the_body() {
        let body = "# Big news\n\nFirst paragraph with [a link](https://x.example/a) and **bold**.\n\
                    Same paragraph.\n\n- one\n- two &amp; three\n\n## Later\n\n\
                    [https://x.example/b](https://x.example/b) ![logo](https://img.example/l.png)\n\n\
                    <div>Raw <b>HTML</b>&nbsp;too<br>next line</div><style>p { color: red }</style>";
        let r = run(&draft(BodyFormat::Markdown, "", body), &data(json!("Ann"))).unwrap();
        let expected = "Big news\n\n\
            First paragraph with a link (https://t.example/c/1) and bold.\nSame paragraph.\n\n\
            - one\n- two & three\n\n\
            Later\n\n\
            https://x.example/b (https://t.example/c/2) logo\n\n\
            Raw HTML\u{a0}too\nnext line\n\n\
            수신 거부: https://app.example/u/tok?x=1&y=2\n\n\
            수신 설정: https://app.example/p/tok";
        // Markdown keeps the soft break inside a paragraph as a space.
        let expected = expected.replace("bold.\nSame", "bold. Same");
        assert_eq!(r.text, expected);
        assert!(!r.text.contains('<'));

        let html = r#"<h2>Title</h2><p>Tom &amp; Jerry&hellip; <a href="https://x.example">go</a></p><ul><li><p>loose</p></li></ul><table><tr><td>a</td><td>b</td></tr></table>"#;
        let r = run(&draft(BodyFormat::Html, "", html), &json!({})).unwrap();
        assert_eq!(
            r.text,
            "Title\n\nTom & Jerry… go (https://t.example/c/1)\n\n- loose\n\na b"
        );
    }

    #[test]
    fn check_reports_part_and_line() {
        assert!(
            check(&draft(
                BodyFormat::Markdown,
                "Hi {{ subscriber.name }}",
                "ok"
            ))
            .is_ok()
        );
        let err = check(&draft(
            BodyFormat::Markdown,
            "Hi",
            "line one\nline two\n{{ name }\n",
        ))
        .unwrap_err();
        match &err {
            RenderError::Syntax { part, line, .. } => {
                assert_eq!((*part, *line), (Part::Body, 3));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().starts_with("body, line 3: syntax error"),
            "{err}"
        );
        let err = check(&Draft {
            preheader: "{% if x %}".into(),
            ..draft(BodyFormat::Html, "", "")
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                RenderError::Syntax {
                    part: Part::Preheader,
                    line: 1,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn subject_and_preheader_are_one_line() {
        let d = Draft {
            preheader: "a\n\n b\tc".into(),
            ..draft(BodyFormat::Html, "  Hello {{ subscriber.name }}\r\n ", "")
        };
        let r = run(&d, &data(json!("Bob\r\nBcc: victim@example.com"))).unwrap();
        assert_eq!(r.subject, "Hello Bob Bcc: victim@example.com");
        assert_eq!(r.preheader, "a b c");
    }
}
