//! Human or machine: every open and click is judged when it arrives, and the reason is
//! kept on the event, so reports can count people while the raw trail stays complete.
//! Pure functions of what the request carried; the caller supplies the counts and times.
//!
//! # Rules
//!
//! First match wins, in this order:
//!
//! 1. `HEAD` request → machine, `head_request`. People's browsers and mail clients GET;
//!    HEAD is a link checker asking whether the URL exists.
//! 2. Prefetch header (`Purpose: prefetch`, `Sec-Purpose: prefetch…`, `X-Moz: prefetch`,
//!    `X-Purpose: preview`) → machine, `prefetch`: fetched ahead in case someone looks.
//! 3. A mail-security gateway, link unfurler, HTTP library or headless browser named in
//!    the user agent (Barracuda, Mimecast, SafeLinks, python-requests, HeadlessChrome,
//!    Slackbot, …) → machine, `scanner_user_agent`. Clicks only: Office's own link check
//!    (`ms-office`), which Outlook desktop's image requests also carry, so it cannot
//!    mark opens.
//! 4. A user-agent word ending in `bot`, `crawler` or `spider` (Googlebot, Bytespider)
//!    → machine, `bot`. Whole words, not substrings, and CUBOT phones are excepted.
//! 5. IP in a `scanner` range of `machine-ip-ranges.txt` → machine, `scanner_ip`.
//! 6. Opens: Apple Mail Privacy Protection → machine, `apple_mail_privacy`. Apple's
//!    proxy fetches every image on delivery whether or not the mail is read. Recognised
//!    by an IP in an `apple_mpp` range (any user agent: it sends generic ones) or by the
//!    bare `Mozilla/5.0` it sends from its relay partners' networks. Apple Mail's own
//!    `AppleWebKit` user agent from elsewhere is a person reading with MPP off.
//! 7. Opens: Gmail (`GoogleImageProxy`, "via ggpht.com") or Yahoo (`YahooMailProxy`) image
//!    proxy → **human**, `image_proxy`. These proxies fetch when the person opens the
//!    mail, so each is a real open; only the reader's IP and device are hidden.
//! 8. Sooner after sending than [`MIN_HUMAN_CLICK_SECS`] (clicks) or
//!    [`MIN_HUMAN_OPEN_SECS`] (opens) → machine, `too_soon_after_delivery`: a gateway
//!    acting on delivery, before anyone could have read the mail.
//! 9. Clicks: [`LINK_BURST_LINKS`] or more distinct links of one message, or all links of
//!    a message with two or more, within [`BURST_WINDOW_SECS`] → machine, `link_burst`: a
//!    scanner following every link. Each click is judged as it arrives, so the clicks
//!    before the burst became evident stay human unless the caller judges them again.
//! 10. Missing or blank user agent → machine, `empty_user_agent`.
//! 11. Otherwise human, `human`.
//!
//! # IP storage
//!
//! [`ip_for_storage`] keeps the full address, a truncated network address, or a keyed
//! hash, per the privacy setting.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
    sync::LazyLock,
};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Clicks sooner than this many seconds after sending are machines: no one reads a mail
/// and clicks in under five seconds.
pub const MIN_HUMAN_CLICK_SECS: i64 = 5;
/// Opens sooner than this many seconds after sending are gateways fetching on delivery.
pub const MIN_HUMAN_OPEN_SECS: i64 = 2;
/// The window over which the caller counts [`ClickSignal::distinct_links_in_burst`].
pub const BURST_WINDOW_SECS: i64 = 10;
/// Distinct links of one message clicked within [`BURST_WINDOW_SECS`] that make a burst.
pub const LINK_BURST_LINKS: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Human,
    Machine,
}

/// Why: stored on the event as a short stable snake_case string ([`Reason::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Human,
    AppleMailPrivacy,
    /// Gmail or Yahoo image proxy: a real open, counted as human.
    ImageProxy,
    ScannerUserAgent,
    ScannerIp,
    HeadRequest,
    TooSoonAfterDelivery,
    LinkBurst,
    Prefetch,
    EmptyUserAgent,
    Bot,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Human,
        Reason::AppleMailPrivacy,
        Reason::ImageProxy,
        Reason::ScannerUserAgent,
        Reason::ScannerIp,
        Reason::HeadRequest,
        Reason::TooSoonAfterDelivery,
        Reason::LinkBurst,
        Reason::Prefetch,
        Reason::EmptyUserAgent,
        Reason::Bot,
    ];

    /// The stored name; never change one, stored events refer to it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Human => "human",
            Reason::AppleMailPrivacy => "apple_mail_privacy",
            Reason::ImageProxy => "image_proxy",
            Reason::ScannerUserAgent => "scanner_user_agent",
            Reason::ScannerIp => "scanner_ip",
            Reason::HeadRequest => "head_request",
            Reason::TooSoonAfterDelivery => "too_soon_after_delivery",
            Reason::LinkBurst => "link_burst",
            Reason::Prefetch => "prefetch",
            Reason::EmptyUserAgent => "empty_user_agent",
            Reason::Bot => "bot",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn verdict(self) -> Verdict {
        match self {
            Reason::Human | Reason::ImageProxy => Verdict::Human,
            _ => Verdict::Machine,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    pub verdict: Verdict,
    pub reason: Reason,
}

impl From<Reason> for Classification {
    fn from(reason: Reason) -> Self {
        Self {
            verdict: reason.verdict(),
            reason,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    #[default]
    Get,
    Head,
    Other,
}

/// What an open (tracking-pixel fetch) carried.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenSignal<'a> {
    pub method: Method,
    pub user_agent: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub secs_since_sent: Option<i64>,
    /// The value of whichever of `Purpose`, `Sec-Purpose`, `X-Moz` or `X-Purpose` came.
    pub purpose_header: Option<&'a str>,
}

/// What a click (tracked-link fetch) carried.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClickSignal<'a> {
    pub method: Method,
    pub user_agent: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub secs_since_sent: Option<i64>,
    /// The value of whichever of `Purpose`, `Sec-Purpose`, `X-Moz` or `X-Purpose` came.
    pub purpose_header: Option<&'a str>,
    /// Distinct links of the same message this subscriber clicked within the burst
    /// window (including this one).
    pub distinct_links_in_burst: u32,
    pub links_in_message: u32,
}

pub fn classify_open(s: &OpenSignal) -> Classification {
    open_reason(s).into()
}

pub fn classify_click(s: &ClickSignal) -> Classification {
    click_reason(s).into()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Event {
    Open,
    Click,
}

fn open_reason(s: &OpenSignal) -> Reason {
    let ua = s.user_agent.unwrap_or_default().trim();
    let lower = ua.to_ascii_lowercase();
    if let Some(r) = request_reason(s.method, s.purpose_header, &lower, s.ip, Event::Open) {
        return r;
    }
    if s.ip.is_some_and(|ip| in_ranges(ip, Category::AppleMpp)) || ua == MPP_USER_AGENT {
        return Reason::AppleMailPrivacy;
    }
    if IMAGE_PROXY_AGENTS.iter().any(|t| lower.contains(t)) {
        return Reason::ImageProxy;
    }
    if sooner_than(s.secs_since_sent, MIN_HUMAN_OPEN_SECS) {
        return Reason::TooSoonAfterDelivery;
    }
    last_reason(ua)
}

fn click_reason(s: &ClickSignal) -> Reason {
    let ua = s.user_agent.unwrap_or_default().trim();
    let lower = ua.to_ascii_lowercase();
    if let Some(r) = request_reason(s.method, s.purpose_header, &lower, s.ip, Event::Click) {
        return r;
    }
    if sooner_than(s.secs_since_sent, MIN_HUMAN_CLICK_SECS) {
        return Reason::TooSoonAfterDelivery;
    }
    let every_link = s.links_in_message >= 2 && s.distinct_links_in_burst >= s.links_in_message;
    if s.distinct_links_in_burst >= LINK_BURST_LINKS || every_link {
        return Reason::LinkBurst;
    }
    last_reason(ua)
}

/// Rules 1–5, shared by opens and clicks. `lower_ua` is the lower-cased user agent.
fn request_reason(
    method: Method,
    purpose: Option<&str>,
    lower_ua: &str,
    ip: Option<IpAddr>,
    event: Event,
) -> Option<Reason> {
    if method == Method::Head {
        return Some(Reason::HeadRequest);
    }
    if purpose.is_some_and(is_prefetch) {
        return Some(Reason::Prefetch);
    }
    if SCANNER_AGENTS.iter().any(|t| lower_ua.contains(t))
        || (event == Event::Click && lower_ua.contains(OFFICE_LINK_CHECK))
    {
        return Some(Reason::ScannerUserAgent);
    }
    if has_bot_word(lower_ua) {
        return Some(Reason::Bot);
    }
    if ip.is_some_and(|ip| in_ranges(ip, Category::Scanner)) {
        return Some(Reason::ScannerIp);
    }
    None
}

fn last_reason(trimmed_ua: &str) -> Reason {
    if trimmed_ua.is_empty() {
        Reason::EmptyUserAgent
    } else {
        Reason::Human
    }
}

fn sooner_than(secs_since_sent: Option<i64>, min_secs: i64) -> bool {
    secs_since_sent.is_some_and(|s| s < min_secs)
}

/// Lower-case substrings of user agents that are never a person: mail-security
/// gateways and link protection, scanners, HTTP libraries, headless browsers and the
/// chat apps' link unfurlers.
const SCANNER_AGENTS: &[&str] = &[
    "barracuda",
    "mimecast",
    "proofpoint",
    "microsoft office existence discovery",
    "microsoft-webdav",
    "safelinks",
    "symantec",
    "messagelabs",
    "trend micro",
    "trendmicro",
    "cisco",
    "ironport",
    "fortiguard",
    "sophos",
    "google-safety",
    "bitdefender",
    "zgrab",
    "python-requests",
    "curl/",
    "go-http-client",
    "wget",
    "libwww",
    "headlesschrome",
    "phantomjs",
    "slackbot",
    "facebookexternalhit",
    "twitterbot",
    "linkedinbot",
];

/// Office checks a link itself before handing it to the browser; the person's click
/// follows from the browser.
const OFFICE_LINK_CHECK: &str = "ms-office";

const IMAGE_PROXY_AGENTS: &[&str] = &["googleimageproxy", "ggpht.com", "yahoomailproxy"];

/// The whole user agent Apple's MPP proxy sends.
const MPP_USER_AGENT: &str = "Mozilla/5.0";

fn is_prefetch(header: &str) -> bool {
    header.split([';', ',']).any(|token| {
        let token = token.trim();
        token.eq_ignore_ascii_case("prefetch") || token.eq_ignore_ascii_case("preview")
    })
}

/// A word (run of ASCII letters and digits) ending in a crawler token. Word ends rather
/// than substrings keep browser user agents human; "cubot" is a phone brand.
fn has_bot_word(lower_ua: &str) -> bool {
    lower_ua
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| {
            (w.ends_with("bot") && w != "cubot") || w.ends_with("crawler") || w.ends_with("spider")
        })
}

// ---- IP ranges ----

const RANGES_FILE: &str = include_str!("machine-ip-ranges.txt");

/// Bad lines are skipped, not fatal; the test `data_file_parses_cleanly` keeps the file
/// free of them.
static RANGES: LazyLock<Vec<IpRange>> =
    LazyLock::new(|| parse_ranges(RANGES_FILE).filter_map(Result::ok).collect());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    AppleMpp,
    Scanner,
}

/// A network in IPv6 space; IPv4 networks sit in the IPv4-mapped block
/// (`::ffff:0:0/96`), so one comparison serves both families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IpRange {
    network: u128,
    prefix_len: u32,
    category: Category,
}

impl IpRange {
    fn contains(&self, addr: u128) -> bool {
        (addr ^ self.network) & mask(self.prefix_len) == 0
    }
}

fn mask(prefix_len: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix_len).unwrap_or(0)
}

/// The address as IPv6 bits, IPv4 mapped, so `::ffff:17.1.2.3` and `17.1.2.3` agree.
fn addr_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

fn in_ranges(ip: IpAddr, category: Category) -> bool {
    let addr = addr_bits(ip);
    RANGES
        .iter()
        .any(|r| r.category == category && r.contains(addr))
}

/// Every range line of `text`; an error names its 1-based line.
fn parse_ranges(text: &str) -> impl Iterator<Item = Result<IpRange, String>> + '_ {
    text.lines().enumerate().filter_map(|(i, line)| {
        parse_range_line(line)
            .map_err(|e| format!("line {}: {e}", i + 1))
            .transpose()
    })
}

/// `<cidr> <category> <vendor>`; `Ok(None)` for blank and comment lines.
fn parse_range_line(line: &str) -> Result<Option<IpRange>, String> {
    let content = line
        .split_once('#')
        .map_or(line, |(before, _)| before)
        .trim();
    if content.is_empty() {
        return Ok(None);
    }
    let fields: Vec<&str> = content.split_whitespace().collect();
    let [cidr, category, _vendor] = fields[..] else {
        return Err(format!(
            "expected `<cidr> <category> <vendor>`, got {content:?}"
        ));
    };
    let category = match category {
        "apple_mpp" => Category::AppleMpp,
        "scanner" => Category::Scanner,
        other => return Err(format!("unknown category {other:?}")),
    };
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?} has no /prefix length"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let len: u32 = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    let (network, prefix_len) = match addr {
        IpAddr::V4(v4) if len <= 32 => (v4.to_ipv6_mapped().into(), len + 96),
        IpAddr::V6(v6) if len <= 128 => (v6.into(), len),
        _ => return Err(format!("prefix length too long in {cidr:?}")),
    };
    if network & !mask(prefix_len) != 0 {
        return Err(format!("{cidr:?} has host bits set"));
    }
    Ok(Some(IpRange {
        network,
        prefix_len,
        category,
    }))
}

// ---- IP storage ----

/// How much of a subscriber's IP address is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpPrivacy {
    Full,
    /// The /24 (IPv4) or /48 (IPv6) network: region and provider, not the household.
    Truncated,
    /// A keyed hash: equal addresses still compare equal, but it cannot be reversed
    /// without the key.
    Hashed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown IP privacy mode {0:?}: expected full, truncated or hashed")]
pub struct UnknownIpPrivacy(pub String);

impl FromStr for IpPrivacy {
    type Err = UnknownIpPrivacy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(IpPrivacy::Full),
            "truncated" => Ok(IpPrivacy::Truncated),
            "hashed" => Ok(IpPrivacy::Hashed),
            other => Err(UnknownIpPrivacy(other.to_owned())),
        }
    }
}

/// What to store for `ip` under `mode`: the full address as text; the truncated network
/// address (`203.0.113.0`, `2001:db8:1::`); or the HMAC-SHA256 under `key` of a
/// purpose label and the address bytes, first 16 bytes as hex. IPv4-mapped IPv6 addresses are stored as IPv4,
/// so one client is stored alike whichever socket family it arrived on. With the key an
/// IPv4 hash can be found by trying every address, so keep the key secret; changing it
/// makes new hashes incomparable with old ones.
pub fn ip_for_storage(ip: IpAddr, mode: IpPrivacy, key: &[u8]) -> String {
    let ip = ip.to_canonical();
    match mode {
        IpPrivacy::Full => ip.to_string(),
        IpPrivacy::Truncated => match ip {
            IpAddr::V4(v4) => Ipv4Addr::from(u32::from(v4) & !0xff).to_string(),
            IpAddr::V6(v6) => Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 48)).to_string(),
        },
        IpPrivacy::Hashed => {
            let mut mac =
                <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
            // Purpose-separated like `signing`, in case the key is shared with it.
            mac.update(b"ip-storage\0");
            match ip {
                IpAddr::V4(v4) => mac.update(&v4.octets()),
                IpAddr::V6(v6) => mac.update(&v6.octets()),
            }
            mac.finalize().into_bytes()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const FIREFOX: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15";
    const IPHONE_MAIL: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";
    const MAC_MAIL: &str =
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";
    const OUTLOOK_DESKTOP: &str = "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; Microsoft Outlook 16.0.17928; ms-office; MSOffice 16)";
    const OFFICE_LINK_CHECK_UA: &str = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)";
    const GMAIL_PROXY: &str =
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
    const YAHOO_PROXY: &str =
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html";
    const EXISTENCE_DISCOVERY: &str = "Microsoft Office Existence Discovery";
    const WEBDAV: &str = "Microsoft-WebDAV-MiniRedir/10.0.19045";
    const BARRACUDA: &str = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))";
    const PYTHON_REQUESTS: &str = "python-requests/2.32.3";
    const CURL: &str = "curl/8.5.0";
    const HEADLESS_CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.6778.85 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const BYTESPIDER: &str = "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)";
    const CUBOT: &str = "Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.230 Mobile Safari/537.36";
    const CUBOT_UNDERSCORE: &str = "Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.163 Mobile Safari/537.36";
    const SLACKBOT: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

    /// Documentation addresses: in no range.
    const HOME_V4: &str = "203.0.113.7";
    const HOME_V6: &str = "2001:db8:1234:5678::1";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn open(ua: &str, addr: &str) -> Reason {
        classify_open(&OpenSignal {
            user_agent: Some(ua),
            ip: Some(ip(addr)),
            secs_since_sent: Some(3600),
            ..Default::default()
        })
        .reason
    }

    /// A single click on one of four links, an hour after sending.
    fn click_signal<'a>(ua: &'a str, addr: &str) -> ClickSignal<'a> {
        ClickSignal {
            user_agent: Some(ua),
            ip: Some(ip(addr)),
            secs_since_sent: Some(3600),
            distinct_links_in_burst: 1,
            links_in_message: 4,
            ..Default::default()
        }
    }

    fn click(ua: &str, addr: &str) -> Reason {
        classify_click(&click_signal(ua, addr)).reason
    }

    #[test]
    fn people_in_browsers_and_mail_clients_are_human() {
        for ua in [
            CHROME,
            FIREFOX,
            SAFARI,
            IPHONE_MAIL,
            MAC_MAIL,
            OUTLOOK_DESKTOP,
        ] {
            for addr in [HOME_V4, HOME_V6] {
                assert_eq!(open(ua, addr), Reason::Human, "open by {ua} from {addr}");
            }
        }
        for ua in [CHROME, FIREFOX, SAFARI, IPHONE_MAIL] {
            assert_eq!(click(ua, HOME_V4), Reason::Human, "click by {ua}");
        }
        let c = classify_open(&OpenSignal {
            user_agent: Some(CHROME),
            ..Default::default()
        });
        assert_eq!(
            c,
            Classification {
                verdict: Verdict::Human,
                reason: Reason::Human
            }
        );
    }

    #[test]
    fn gmail_and_yahoo_image_proxies_are_human_opens() {
        for ua in [GMAIL_PROXY, YAHOO_PROXY] {
            let c = classify_open(&OpenSignal {
                user_agent: Some(ua),
                ip: Some(ip("66.249.84.1")),
                secs_since_sent: Some(120),
                ..Default::default()
            });
            assert_eq!(c.reason, Reason::ImageProxy, "{ua}");
            assert_eq!(c.verdict, Verdict::Human, "{ua}");
        }
    }

    #[test]
    fn apple_mail_privacy_protection() {
        // The bare MPP user agent, from Apple's own network and from a relay partner's.
        assert_eq!(open("Mozilla/5.0", "17.58.101.4"), Reason::AppleMailPrivacy);
        assert_eq!(open(" Mozilla/5.0 ", HOME_V4), Reason::AppleMailPrivacy);
        // Apple's network with Apple Mail's generic WebKit user agent.
        assert_eq!(open(MAC_MAIL, "17.1.2.3"), Reason::AppleMailPrivacy);
        assert_eq!(
            open(IPHONE_MAIL, "2620:149:a0c::10"),
            Reason::AppleMailPrivacy
        );
        let c = classify_open(&OpenSignal {
            user_agent: Some("Mozilla/5.0"),
            ip: Some(ip("17.58.101.4")),
            ..Default::default()
        });
        assert_eq!(c.verdict, Verdict::Machine);
        // Opens only: a click from Apple's network is a person (e.g. at Apple).
        assert_eq!(click(SAFARI, "17.1.2.3"), Reason::Human);
        // Just outside 17.0.0.0/8.
        assert_eq!(open(MAC_MAIL, "18.0.0.1"), Reason::Human);
        assert_eq!(open(MAC_MAIL, "16.255.255.255"), Reason::Human);
    }

    #[test]
    fn microsoft_link_checks() {
        // Safe Links / Defender detonate with a browser user agent from Exchange Online
        // Protection's network.
        assert_eq!(click(CHROME, "40.107.22.101"), Reason::ScannerIp);
        assert_eq!(open(CHROME, "52.101.4.1"), Reason::ScannerIp);
        for ua in [EXISTENCE_DISCOVERY, WEBDAV, "Mozilla/5.0 SafeLinks"] {
            assert_eq!(click(ua, HOME_V4), Reason::ScannerUserAgent, "{ua}");
            assert_eq!(open(ua, HOME_V4), Reason::ScannerUserAgent, "{ua}");
        }
        // Office's link check is a machine click, but Outlook's image fetch is a read.
        assert_eq!(
            click(OFFICE_LINK_CHECK_UA, HOME_V4),
            Reason::ScannerUserAgent
        );
        assert_eq!(click(OUTLOOK_DESKTOP, HOME_V4), Reason::ScannerUserAgent);
        assert_eq!(open(OUTLOOK_DESKTOP, HOME_V4), Reason::Human);
    }

    #[test]
    fn scanners_libraries_and_headless_browsers() {
        for ua in [BARRACUDA, PYTHON_REQUESTS, CURL, HEADLESS_CHROME, SLACKBOT] {
            assert_eq!(click(ua, HOME_V4), Reason::ScannerUserAgent, "{ua}");
            assert_eq!(open(ua, HOME_V4), Reason::ScannerUserAgent, "{ua}");
        }
        // Barracuda's and Mimecast's networks, whatever the user agent says.
        assert_eq!(click(CHROME, "64.235.150.9"), Reason::ScannerIp);
        assert_eq!(click(CHROME, "205.139.110.30"), Reason::ScannerIp);
    }

    #[test]
    fn generic_bots_by_whole_word_only() {
        assert_eq!(click(GOOGLEBOT, HOME_V4), Reason::Bot);
        assert_eq!(open(BYTESPIDER, HOME_V4), Reason::Bot);
        assert_eq!(click("SomeCrawler/1.0", HOME_V4), Reason::Bot);
        assert_eq!(click(CUBOT, HOME_V4), Reason::Human);
        assert_eq!(click(CUBOT_UNDERSCORE, HOME_V4), Reason::Human);
        assert_eq!(click("Mozilla/5.0 (Botanic 1.0)", HOME_V4), Reason::Human);
    }

    #[test]
    fn head_requests_are_machines() {
        let c = classify_click(&ClickSignal {
            method: Method::Head,
            ..click_signal(CHROME, HOME_V4)
        });
        assert_eq!(c.reason, Reason::HeadRequest);
        assert_eq!(c.verdict, Verdict::Machine);
        let o = classify_open(&OpenSignal {
            method: Method::Head,
            user_agent: Some(CHROME),
            ..Default::default()
        });
        assert_eq!(o.reason, Reason::HeadRequest);
        let other = ClickSignal {
            method: Method::Other,
            ..click_signal(CHROME, HOME_V4)
        };
        assert_eq!(classify_click(&other).reason, Reason::Human);
    }

    #[test]
    fn prefetch_headers_are_machines() {
        for value in [
            "prefetch",
            "Prefetch",
            "prefetch;prerender",
            "prefetch; anonymous-client-ip",
            "preview",
        ] {
            let c = classify_click(&ClickSignal {
                purpose_header: Some(value),
                ..click_signal(CHROME, HOME_V4)
            });
            assert_eq!(c.reason, Reason::Prefetch, "{value}");
            let o = classify_open(&OpenSignal {
                purpose_header: Some(value),
                user_agent: Some(CHROME),
                ..Default::default()
            });
            assert_eq!(o.reason, Reason::Prefetch, "{value}");
        }
        let not_prefetch = ClickSignal {
            purpose_header: Some("prerender-only"),
            ..click_signal(CHROME, HOME_V4)
        };
        assert_eq!(classify_click(&not_prefetch).reason, Reason::Human);
    }

    #[test]
    fn link_bursts_are_scanners() {
        let burst = |distinct, links| {
            classify_click(&ClickSignal {
                distinct_links_in_burst: distinct,
                links_in_message: links,
                ..click_signal(CHROME, HOME_V4)
            })
            .reason
        };
        assert_eq!(burst(3, 10), Reason::LinkBurst);
        assert_eq!(burst(2, 2), Reason::LinkBurst);
        assert_eq!(burst(2, 5), Reason::Human);
        assert_eq!(burst(1, 1), Reason::Human, "the only link of a message");
        assert_eq!(burst(0, 0), Reason::Human, "counts unknown");
    }

    #[test]
    fn too_soon_after_delivery() {
        let click_at = |secs| {
            classify_click(&ClickSignal {
                secs_since_sent: Some(secs),
                ..click_signal(CHROME, HOME_V4)
            })
            .reason
        };
        assert_eq!(click_at(0), Reason::TooSoonAfterDelivery);
        assert_eq!(
            click_at(MIN_HUMAN_CLICK_SECS - 1),
            Reason::TooSoonAfterDelivery
        );
        assert_eq!(click_at(MIN_HUMAN_CLICK_SECS), Reason::Human);
        let open_at = |secs| {
            classify_open(&OpenSignal {
                secs_since_sent: Some(secs),
                user_agent: Some(CHROME),
                ..Default::default()
            })
            .reason
        };
        assert_eq!(open_at(1), Reason::TooSoonAfterDelivery);
        assert_eq!(open_at(MIN_HUMAN_OPEN_SECS), Reason::Human);
        assert_eq!(open(CHROME, HOME_V4), Reason::Human, "time unknown");
    }

    #[test]
    fn missing_or_blank_user_agent() {
        for ua in [None, Some(""), Some("   ")] {
            let c = classify_click(&ClickSignal {
                user_agent: ua,
                ..click_signal("", HOME_V4)
            });
            assert_eq!(c.reason, Reason::EmptyUserAgent, "{ua:?}");
            let o = classify_open(&OpenSignal {
                user_agent: ua,
                ..Default::default()
            });
            assert_eq!(o.reason, Reason::EmptyUserAgent, "{ua:?}");
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let all = ClickSignal {
            method: Method::Head,
            purpose_header: Some("prefetch"),
            user_agent: Some(PYTHON_REQUESTS),
            ip: Some(ip("40.107.1.1")),
            secs_since_sent: Some(0),
            distinct_links_in_burst: 5,
            links_in_message: 5,
        };
        let mut expected = vec![
            Reason::HeadRequest,
            Reason::Prefetch,
            Reason::ScannerUserAgent,
            Reason::ScannerIp,
            Reason::TooSoonAfterDelivery,
            Reason::LinkBurst,
            Reason::EmptyUserAgent,
        ];
        let mut s = all;
        for step in 0.. {
            assert_eq!(classify_click(&s).reason, expected.remove(0), "step {step}");
            match step {
                0 => s.method = Method::Get,
                1 => s.purpose_header = None,
                2 => s.user_agent = Some(""),
                3 => s.ip = None,
                4 => s.secs_since_sent = None,
                5 => s.distinct_links_in_burst = 1,
                _ => break,
            }
        }
        assert!(expected.is_empty());

        // Opens: a scanner network beats MPP, MPP beats timing, a proxy beats timing.
        let open_with = |ua, addr, secs| {
            classify_open(&OpenSignal {
                user_agent: Some(ua),
                ip: Some(ip(addr)),
                secs_since_sent: Some(secs),
                ..Default::default()
            })
            .reason
        };
        assert_eq!(open_with("Mozilla/5.0", "40.92.0.1", 0), Reason::ScannerIp);
        assert_eq!(
            open_with("Mozilla/5.0", "17.0.0.1", 0),
            Reason::AppleMailPrivacy
        );
        assert_eq!(open_with(GMAIL_PROXY, "66.249.84.1", 0), Reason::ImageProxy);
        assert_eq!(open_with(CHROME, HOME_V4, 0), Reason::TooSoonAfterDelivery);
    }

    #[test]
    fn ipv6_and_ipv4_mapped_ranges() {
        assert_eq!(click(CHROME, "2a01:111:f403:c10d::5"), Reason::ScannerIp);
        assert_eq!(click(CHROME, "2a01:111:f404::1"), Reason::Human);
        assert_eq!(click(CHROME, "::ffff:40.107.1.1"), Reason::ScannerIp);
        assert_eq!(open(MAC_MAIL, "::ffff:17.1.2.3"), Reason::AppleMailPrivacy);
        assert_eq!(open(MAC_MAIL, "2a01:b740:a41::1"), Reason::AppleMailPrivacy);
        // An IPv4 range does not match the IPv6 address with the same low bits.
        assert_eq!(click(CHROME, "::40.107.1.1"), Reason::Human);
    }

    #[test]
    fn range_edges() {
        let range = parse_range_line("104.47.0.0/17 scanner microsoft")
            .unwrap()
            .unwrap();
        let has = |s: &str| range.contains(addr_bits(ip(s)));
        assert!(has("104.47.0.0"));
        assert!(has("104.47.127.255"));
        assert!(!has("104.47.128.0"));
        assert!(!has("104.46.255.255"));
        let v6 = parse_range_line("2a01:111:f400::/48 scanner microsoft")
            .unwrap()
            .unwrap();
        assert!(v6.contains(addr_bits(ip("2a01:111:f400:ffff:ffff:ffff:ffff:ffff"))));
        assert!(!v6.contains(addr_bits(ip("2a01:111:f401::"))));
        let everything = parse_range_line("0.0.0.0/0 scanner test").unwrap().unwrap();
        assert!(everything.contains(addr_bits(ip("255.255.255.255"))));
        assert!(!everything.contains(addr_bits(ip("2001:db8::1"))));
    }

    #[test]
    fn malformed_range_lines_are_errors() {
        for line in [
            "17.0.0.0 apple_mpp apple",
            "17.0.0.0/8 apple_mpp",
            "17.0.0.0/8 apple_mpp apple extra",
            "17.0.0.0/8 cloud apple",
            "17.0.0.0/33 scanner x",
            "2001:db8::/129 scanner x",
            "17.1.0.0/8 scanner x",
            "17.0.0/8 scanner x",
            "17.0.0.0/x scanner x",
        ] {
            assert!(parse_range_line(line).is_err(), "{line}");
        }
        for line in ["", "   ", "# comment", "17.0.0.0/8 apple_mpp apple # note"] {
            assert!(parse_range_line(line).is_ok(), "{line}");
        }
        let errors: Vec<_> = parse_ranges("# ok\n1.2.3.0/24 scanner x\nbad line\n")
            .filter_map(Result::err)
            .collect();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("line 3:"), "{}", errors[0]);
    }

    #[test]
    fn data_file_parses_cleanly() {
        let (ranges, errors): (Vec<_>, Vec<_>) = parse_ranges(RANGES_FILE).partition(Result::is_ok);
        let errors: Vec<String> = errors.into_iter().filter_map(Result::err).collect();
        assert!(
            errors.is_empty(),
            "bad lines in machine-ip-ranges.txt: {errors:#?}"
        );
        let ranges: Vec<IpRange> = ranges.into_iter().filter_map(Result::ok).collect();
        assert_eq!(ranges.len(), RANGES.len());
        for category in [Category::AppleMpp, Category::Scanner] {
            assert!(
                ranges.iter().any(|r| r.category == category),
                "{category:?}"
            );
        }
        assert!(
            RANGES_FILE.contains("2026-11-25"),
            "the header dates the compilation"
        );
    }

    #[test]
    fn ip_storage_full_and_truncated() {
        let key = b"k";
        let cases = [
            ("203.0.113.77", "203.0.113.77", "203.0.113.0"),
            ("::ffff:203.0.113.77", "203.0.113.77", "203.0.113.0"),
            (
                "2001:db8:1234:5678::1",
                "2001:db8:1234:5678::1",
                "2001:db8:1234::",
            ),
            (
                "2001:db8:1234:ffff:ffff::1",
                "2001:db8:1234:ffff:ffff::1",
                "2001:db8:1234::",
            ),
        ];
        for (addr, full, truncated) in cases {
            assert_eq!(ip_for_storage(ip(addr), IpPrivacy::Full, key), full);
            assert_eq!(
                ip_for_storage(ip(addr), IpPrivacy::Truncated, key),
                truncated
            );
        }
    }

    #[test]
    fn ip_storage_hashed() {
        let hashed = |addr: &str, key: &[u8]| ip_for_storage(ip(addr), IpPrivacy::Hashed, key);
        for addr in ["203.0.113.77", HOME_V6] {
            let h = hashed(addr, b"key one");
            assert_eq!(h.len(), 32, "16 bytes as hex");
            assert!(
                h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_eq!(h, hashed(addr, b"key one"), "stable for one key");
            assert_ne!(h, hashed(addr, b"key two"), "differs across keys");
            assert!(!h.contains(addr));
        }
        assert_ne!(hashed("203.0.113.77", b"k"), hashed("203.0.113.78", b"k"));
        assert_eq!(
            hashed("::ffff:203.0.113.77", b"k"),
            hashed("203.0.113.77", b"k"),
            "one client, one hash"
        );
        assert_eq!(hashed("1.2.3.4", b""), hashed("1.2.3.4", b""), "empty key");
    }

    #[test]
    fn ip_privacy_from_str() {
        assert_eq!("full".parse(), Ok(IpPrivacy::Full));
        assert_eq!("truncated".parse(), Ok(IpPrivacy::Truncated));
        assert_eq!("hashed".parse(), Ok(IpPrivacy::Hashed));
        assert_eq!(
            "Hashed".parse::<IpPrivacy>(),
            Err(UnknownIpPrivacy("Hashed".into()))
        );
    }

    #[test]
    fn reasons_round_trip_and_carry_their_verdict() {
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            let snake = r
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(snake, "{r:?}");
            let human = matches!(r, Reason::Human | Reason::ImageProxy);
            assert_eq!(r.verdict() == Verdict::Human, human, "{r:?}");
            assert_eq!(Classification::from(r).verdict, r.verdict());
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len(), "names are unique");
        assert_eq!(Reason::parse("Human"), None);
        assert_eq!(Reason::parse(""), None);
    }
}
