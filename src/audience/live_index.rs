//! The live index: what the dashboard asks of a million subscribers at typing speed —
//! segment counts (status, tags, custom fields) and the list's search by part of an
//! address or name — held in memory as bitmaps, typed columns and one lower-cased text
//! buffer, so each answer takes milliseconds instead of a pass over the table.
//!
//! PostgreSQL stays the only source of truth, and recipients are always selected there
//! (`segments::push_condition`); the index only counts and finds ids. Before each answer
//! it catches up with every change committed so far, exactly, whoever made it:
//!
//! - a record change stamps the row's `change_xid` with the writing transaction's id
//!   (trigger or column default), and a removed subscriber leaves a row in
//!   `subscriber_removals` stamped the same way;
//! - the index remembers the snapshot (`pg_current_snapshot()`) its build or last
//!   catch-up read under; the next catch-up, in a repeatable-read transaction, reads the
//!   rows stamped by transactions that snapshot did not see: those from its `xmax` up
//!   and those in its in-progress list, through an index on `change_xid`.
//!
//! A count whose conditions the index does not hold (lifecycle stage and engagement,
//! which move with every open and click; events) or whose field holds a value the index
//! cannot read exactly as PostgreSQL would (a numeric string with more digits than an
//! `f64` keeps, a text with cased non-ASCII letters, where `lower()` depends on the
//! database's locale) returns `None`, and the caller counts in SQL. So does every
//! answer while the index is being built, while another request has been catching it
//! up for longer than 500 ms, or after a database error (logged; the index is rebuilt).
//! Search folds case one letter at a time (the SQL fallback binds the same folded
//! needle; `lower()` in a C-locale database folds ASCII only). The tests in
//! `tests/it/live_index.rs` check the index against SQL on random segments and changes.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::{FutureExt, TryStreamExt};
use roaring::RoaringBitmap;
use serde_json::value::RawValue;
use sqlx::{PgPool, Postgres, Transaction};

use super::{
    fields::{FieldDef, FieldType},
    segments::{Condition, FieldOp, Match},
    subscribers::Status,
};

/// An index this old is rebuilt in the background (it keeps serving meanwhile): the
/// rebuild drops what removed rows left behind.
const REFRESH_AFTER: Duration = Duration::from_secs(30 * 60);
/// Removal rows are kept this long; an index not caught up for half of it is rebuilt.
const REMOVALS_KEPT_HOURS: i64 = 24;
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
/// After a failed build or catch-up, SQL answers for this long before the next try.
const RETRY_FAILED: Duration = Duration::from_secs(60);
/// After the audience outgrew the index (more than 4 GiB of addresses and names).
const RETRY_OUTGROWN: Duration = Duration::from_secs(60 * 60);
/// How long an answer waits for another request's catch-up before going to SQL.
const LOCK_WAIT: Duration = Duration::from_millis(500);
const MAX_CATCH_UP: usize = 200_000;

/// Why a catch-up did not bring the index up to date.
enum CatchUp {
    Database(sqlx::Error),
    /// Too long since the last read (removals may be pruned) or too many changes.
    Rebuild(&'static str),
}

impl From<sqlx::Error> for CatchUp {
    fn from(e: sqlx::Error) -> Self {
        CatchUp::Database(e)
    }
}

/// Above this many matching rows, a page is found by walking the rows newest first rather
/// than by sorting every match; and the list does not page through them when SQL would
/// reject most (see [`LiveIndex::page`]).
pub const DENSE_PAGE: u64 = 20_000;

/// One per process, shared by every request.
#[derive(Clone)]
pub struct LiveIndex {
    slot: Arc<tokio::sync::Mutex<Slot>>,
    /// How many answers came from the index (for operations and tests).
    answered: Arc<std::sync::atomic::AtomicU64>,
    /// More changed rows than this since the last read: rebuild rather than catch up.
    max_catch_up: usize,
}

impl Default for LiveIndex {
    fn default() -> Self {
        Self::with_catch_up_limit(MAX_CATCH_UP)
    }
}

#[derive(Default)]
struct Slot {
    index: Option<Index>,
    building: bool,
    pruned: Option<Instant>,
    /// No build is tried before then (after a failure, or when the audience outgrew the
    /// index).
    paused_until: Option<Instant>,
}

impl LiveIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tests use a small limit to reach the rebuild a bulk change causes.
    pub fn with_catch_up_limit(max_catch_up: usize) -> Self {
        LiveIndex {
            slot: Arc::default(),
            answered: Arc::default(),
            max_catch_up,
        }
    }

    /// How many subscribers `cond` selects, from the index caught up with every committed
    /// change; `None` when the index cannot answer (see the module docs). `cond` must
    /// have been validated against `fields`. Starts a build when there is no index yet.
    pub async fn count(&self, pool: &PgPool, cond: &Condition, fields: &[FieldDef]) -> Option<u64> {
        if !held(cond, fields) {
            return None;
        }
        let n = self
            .caught_up(pool, fields, |ix| ix.eval(cond).map(|b| b.len()))
            .await
            .flatten();
        self.tally(n)
    }

    /// How many answers (counts, pages, tag counts) the index has given since the process
    /// started, each caught up; the rest went to SQL.
    pub fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One page of the subscriber list: at most `limit` ids, newest (largest) first, below
    /// `before`, of subscribers who pass `filter` as far as the index holds it (the caller
    /// applies every filter in SQL too), caught up like [`LiveIndex::count`]. `None` when
    /// the index cannot answer, or should not: when SQL will reject much of what it finds
    /// (`sql_narrows`: a filter the index does not hold, such as the lifecycle stage; or a
    /// segment it cannot evaluate) and more than [`DENSE_PAGE`] rows match, paging through
    /// them a chunk at a time would cost more than one pass in SQL.
    pub async fn page(
        &self,
        pool: &PgPool,
        filter: &ListFilter<'_>,
        fields: &[FieldDef],
        before: Option<i64>,
        limit: usize,
        sql_narrows: bool,
    ) -> Option<Vec<i64>> {
        let segment = filter.segment.filter(|c| held(c, fields));
        let page = self
            .caught_up(pool, fields, |ix| {
                // Where `lower('I')` is not `i`, the search folds otherwise than SQL.
                if !filter.needle.is_empty() && !ix.ascii_lower {
                    return None;
                }
                let (found, segment_applied) = ix.matching(filter, segment);
                let narrows = sql_narrows || (filter.segment.is_some() && !segment_applied);
                if narrows && found.len() > DENSE_PAGE {
                    return None;
                }
                Some(ix.page(&found, before, limit))
            })
            .await
            .flatten();
        self.tally(page)
    }

    /// How many subscribers carry each tag (tags nobody carries are left out), caught up
    /// like [`LiveIndex::count`]; `None` when the index cannot answer.
    pub async fn tag_counts(
        &self,
        pool: &PgPool,
        fields: &[FieldDef],
    ) -> Option<std::collections::HashMap<i64, u64>> {
        let counts = self
            .caught_up(pool, fields, |ix| {
                ix.tags
                    .iter()
                    .filter(|(_, members)| !members.is_empty())
                    .map(|(&t, members)| (t, members.len()))
                    .collect()
            })
            .await;
        self.tally(counts)
    }

    /// Counts an answer the index gave.
    fn tally<T>(&self, answer: Option<T>) -> Option<T> {
        if answer.is_some() {
            self.answered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        answer
    }

    /// Runs `answer` on the index after catching it up; `None` while there is no index
    /// (a build is started), or when another request has held it for longer than
    /// [`LOCK_WAIT`].
    async fn caught_up<R>(
        &self,
        pool: &PgPool,
        fields: &[FieldDef],
        answer: impl FnOnce(&Index) -> R,
    ) -> Option<R> {
        let mut slot = tokio::time::timeout(LOCK_WAIT, self.slot.lock())
            .await
            .ok()?;
        if slot.index.as_ref().is_some_and(|ix| ix.too_large) {
            slot.index = None;
            slot.paused_until = Some(Instant::now() + RETRY_OUTGROWN);
        }
        let layout = Layout::of(fields);
        if slot.index.as_ref().is_some_and(|ix| ix.layout != layout) {
            slot.index = None;
        }
        let refresh = slot
            .index
            .as_ref()
            .is_some_and(|ix| ix.built.elapsed() > REFRESH_AFTER);
        let paused = slot.paused_until.is_some_and(|t| Instant::now() < t);
        if (slot.index.is_none() || refresh) && !slot.building && !paused {
            slot.building = true;
            let (me, pool, fields) = (self.clone(), pool.clone(), fields.to_vec());
            tokio::spawn(async move {
                // A panic in the build must not leave `building` set for good.
                let built = std::panic::AssertUnwindSafe(Index::build(&pool, &fields))
                    .catch_unwind()
                    .await;
                let mut slot = me.slot.lock().await;
                slot.building = false;
                match built {
                    Ok(Ok(ix)) => slot.index = Some(ix),
                    Ok(Err(e)) => {
                        slot.paused_until = Some(Instant::now() + RETRY_FAILED);
                        tracing::warn!(error = %e, "building the live index failed; counting and searching in SQL");
                    }
                    Err(_) => {
                        slot.paused_until = Some(Instant::now() + RETRY_FAILED);
                        tracing::error!(
                            "building the live index panicked; counting and searching in SQL"
                        );
                    }
                }
            });
        }
        if slot.pruned.is_none_or(|p| p.elapsed() > PRUNE_EVERY) {
            slot.pruned = Some(Instant::now());
            let pool = pool.clone();
            tokio::spawn(async move {
                let pruned = sqlx::query("DELETE FROM subscriber_removals WHERE removed_at < now() - make_interval(hours => $1)")
                    .bind(REMOVALS_KEPT_HOURS as i32)
                    .execute(&pool)
                    .await;
                if let Err(e) = pruned {
                    tracing::warn!(error = %e, "pruning subscriber_removals failed");
                }
            });
        }
        let ix = slot.index.as_mut()?;
        if let Err(e) = ix.catch_up(pool, self.max_catch_up).await {
            // The next answer starts a build: at once to rebuild, after a pause when the
            // database failed.
            slot.index = None;
            match e {
                CatchUp::Database(e) => {
                    tracing::warn!(error = %e, "catching up the live index failed; answering in SQL");
                    slot.paused_until = Some(Instant::now() + RETRY_FAILED);
                }
                CatchUp::Rebuild(why) => tracing::info!(why, "the live index is rebuilt"),
            }
            return None;
        }
        if ix.too_large {
            return None;
        }
        Some(answer(ix))
    }

    /// Builds the index now and waits for it: for a server that should answer its first
    /// counts from the index, and for tests and benchmarks.
    pub async fn build_now(&self, pool: &PgPool, fields: &[FieldDef]) -> sqlx::Result<()> {
        self.slot.lock().await.building = true;
        let built = Index::build(pool, fields).await;
        let mut slot = self.slot.lock().await;
        slot.building = false;
        slot.index = Some(built?);
        slot.paused_until = None;
        Ok(())
    }
}

/// The list's search and filters, as far as the index holds them.
#[derive(Default)]
pub struct ListFilter<'a> {
    /// Address or name contains this, ignoring case (what `lower(email) LIKE '%…%' OR
    /// lower(name) LIKE '%…%'` selects); empty: no search.
    pub needle: &'a str,
    pub status: Option<Status>,
    pub tag: Option<i64>,
    pub segment: Option<&'a Condition>,
}

/// Whether every condition of the tree is of a kind the index holds.
fn held(cond: &Condition, fields: &[FieldDef]) -> bool {
    match cond {
        Condition::Group { conditions, .. } => conditions.iter().all(|c| held(c, fields)),
        Condition::Status { .. } | Condition::Tag { .. } => true,
        Condition::Field { key, .. } => fields.iter().any(|f| &f.key == key),
        _ => false,
    }
}

/// The field keys and types an index was built for; a change means a rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout(Vec<(String, FieldType)>);

impl Layout {
    fn of(fields: &[FieldDef]) -> Self {
        let mut v: Vec<_> = fields
            .iter()
            .map(|f| (f.key.clone(), f.field_type))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Layout(v)
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    email: String,
    name: String,
    status: Status,
    tag_ids: Vec<i64>,
    /// As text: numbers are read as PostgreSQL wrote them, not through an `f64`.
    fields: String,
}

const NO_STATUS: u8 = u8::MAX;

/// Rows live at dense positions (0, 1, …) in the order they were first seen; a removed
/// row's position stays empty until the next rebuild.
struct Index {
    layout: Layout,
    /// Whether `lower()` of ASCII letters is plain ASCII in this database (not under a
    /// Turkish or Azerbaijani locale, where `I` folds to `ı`); text conditions go to
    /// SQL otherwise.
    ascii_lower: bool,
    /// The snapshot the last read was taken under (`pg_snapshot` text), and when (the
    /// database's clock, the one removals are pruned by).
    snapshot: String,
    read_at: DateTime<Utc>,
    built: Instant,
    too_large: bool,
    /// Position → id.
    ids: Vec<i64>,
    /// The positions the build assigned, ordered by id (binary-searched: a quarter of
    /// a hash map's memory at a million rows)…
    by_id: Vec<u32>,
    /// …and the ids first seen by a catch-up since.
    later: HashMap<i64, u32>,
    live: RoaringBitmap,
    status: [RoaringBitmap; 5],
    row_status: Vec<u8>,
    tags: HashMap<i64, RoaringBitmap>,
    row_tags: Vec<Box<[i64]>>,
    columns: HashMap<String, Column>,
    text: SearchText,
}

/// Every live row's lower-cased address and name in one buffer, so a search is one
/// SIMD substring scan. A changed row is appended again and its old entry left dead
/// until a compaction.
#[derive(Default)]
struct SearchText {
    /// `\0address\0name` per entry, entries one after another.
    bytes: Vec<u8>,
    /// (offset of the entry in `bytes`, position), in offset order.
    entries: Vec<(u32, u32)>,
    /// By position: the index of its live entry in `entries`, or `u32::MAX`.
    row_entry: Vec<u32>,
    dead_bytes: usize,
}

struct Column {
    /// Rows where the key exists (`fields ? key`), even with a JSON null.
    present: RoaringBitmap,
    /// Rows whose value the index cannot judge exactly as PostgreSQL would.
    odd: RoaringBitmap,
    values: Values,
}

enum Values {
    /// NaN: no value.
    Number(Vec<f64>),
    /// Days since 1970-01-01; `i32::MIN`: no value.
    Date(Vec<i32>),
    /// 0 false, 1 true, 2 no value.
    Boolean(Vec<u8>),
    /// An index into `texts` of the lower-cased value; `u32::MAX`: no value.
    Text { rows: Vec<u32>, texts: Texts },
}

#[derive(Default)]
struct Texts {
    ids: HashMap<Box<str>, u32>,
    all: Vec<Box<str>>,
}

impl Texts {
    fn intern(&mut self, s: String) -> u32 {
        if let Some(&id) = self.ids.get(s.as_str()) {
            return id;
        }
        let id = self.all.len() as u32;
        let s: Box<str> = s.into();
        self.all.push(s.clone());
        self.ids.insert(s, id);
        id
    }
}

/// One value as the index keeps it.
enum Cell {
    Absent,
    Odd,
    Number(f64),
    Date(i32),
    Boolean(bool),
    Text(String),
}

fn read_cell(field_type: FieldType, raw: Option<&RawValue>, ascii_lower: bool) -> Cell {
    let Some(raw) = raw else {
        return Cell::Absent;
    };
    let raw = raw.get();
    if raw == "null" {
        return Cell::Absent;
    }
    let string = || serde_json::from_str::<String>(raw).ok();
    let is_string = raw.starts_with('"');
    match field_type {
        // PostgreSQL's numeric input skips ASCII white space only.
        FieldType::Number if is_string => string()
            .and_then(|s| exact_number(s.trim_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r'])))
            .map_or(Cell::Odd, Cell::Number),
        FieldType::Number => exact_number(raw).map_or(Cell::Odd, Cell::Number),
        FieldType::Date if is_string => string()
            .and_then(|s| parse_date(&s))
            .map_or(Cell::Odd, Cell::Date),
        FieldType::Boolean => match raw {
            "true" | "\"true\"" => Cell::Boolean(true),
            "false" | "\"false\"" => Cell::Boolean(false),
            _ => Cell::Odd,
        },
        FieldType::Text | FieldType::Choice if is_string && ascii_lower => string()
            .and_then(|s| simple_lower(&s))
            .map_or(Cell::Odd, Cell::Text),
        _ => Cell::Odd,
    }
}

/// A decimal with at most 15 significant digits and a normal `f64` value (or zero),
/// which an `f64` orders and compares exactly as PostgreSQL's `numeric` does.
fn exact_number(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_only = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return None;
    }
    if let Some(e) = exponent {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        if e.is_empty() || e.len() > 3 || !digits_only(e) {
            return None;
        }
    }
    let significant = format!("{int}{frac}");
    let significant = significant.trim_start_matches('0').trim_end_matches('0');
    if significant.len() > 15 {
        return None;
    }
    let f = s.parse::<f64>().ok()?;
    // 1e-400 would read as 0, and subnormals lose digits.
    (f.is_normal() || (f == 0.0 && significant.is_empty())).then_some(f)
}

/// `YYYY-M-D` exactly (what the app stores and PostgreSQL's `date` reads the same way).
fn parse_date(s: &str) -> Option<i32> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |p: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
    };
    // PostgreSQL has no year 0.
    if parts.next().is_some()
        || !digits(y, 4..=4)
        || y == "0000"
        || !digits(m, 1..=2)
        || !digits(d, 1..=2)
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((date - epoch).num_days()).ok()
}

/// `lower(s)` when every letter is ASCII or has no case mapping at all (Hangul, digits,
/// punctuation): then it does not depend on the database's locale (given
/// `ascii_lower`).
fn simple_lower(s: &str) -> Option<String> {
    s.chars()
        .all(|c| {
            c.is_ascii()
                || (c.to_lowercase().eq(std::iter::once(c))
                    && c.to_uppercase().eq(std::iter::once(c)))
        })
        .then(|| s.to_ascii_lowercase())
}

fn status_slot(s: Status) -> usize {
    match s {
        Status::Unconfirmed => 0,
        Status::Active => 1,
        Status::Unsubscribed => 2,
        Status::Bounced => 3,
        Status::Complained => 4,
    }
}

const ALL_ROWS: &str =
    "SELECT id, email, name, status, tag_ids, fields::text AS fields FROM subscribers";
/// Rows written by transactions the snapshot `$1` did not see: those in progress when
/// it was taken and those that started after (anything older was visible to it, or
/// aborted). Two index scans on `change_xid`, whatever long transaction holds the
/// snapshot's `xmin` back (an `OR` of the two was planned as a sequential scan).
const CHANGED_ROWS: &str = "SELECT id, email, name, status, tag_ids, fields::text AS fields
     FROM subscribers WHERE change_xid >= pg_snapshot_xmax($1::pg_snapshot)
     UNION ALL
     SELECT id, email, name, status, tag_ids, fields::text AS fields
     FROM subscribers WHERE change_xid = ANY(ARRAY(SELECT pg_snapshot_xip($1::pg_snapshot)))";
const REMOVED: &str = "SELECT subscriber_id FROM subscriber_removals
     WHERE xid >= pg_snapshot_xmax($1::pg_snapshot)
     UNION ALL
     SELECT subscriber_id FROM subscriber_removals
     WHERE xid = ANY(ARRAY(SELECT pg_snapshot_xip($1::pg_snapshot)))";

/// A read-only transaction whose statements all see one snapshot, that snapshot, and
/// the database's clock.
async fn snapshot_read(
    pool: &PgPool,
) -> sqlx::Result<(Transaction<'static, Postgres>, String, DateTime<Utc>)> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let (snapshot, now): (String, DateTime<Utc>) =
        sqlx::query_as("SELECT pg_current_snapshot()::text, now()")
            .fetch_one(&mut *tx)
            .await?;
    Ok((tx, snapshot, now))
}

impl Index {
    async fn build(pool: &PgPool, fields: &[FieldDef]) -> sqlx::Result<Self> {
        let started = Instant::now();
        let (mut tx, snapshot, read_at) = snapshot_read(pool).await?;
        // Asked of `lower()` itself: a database's collation may come from ICU, whose
        // locale `lc_ctype` does not show.
        let ascii_lower: bool = sqlx::query_scalar(
            "SELECT lower('ABCDEFGHIJKLMNOPQRSTUVWXYZ') = 'abcdefghijklmnopqrstuvwxyz'",
        )
        .fetch_one(&mut *tx)
        .await?;
        let layout = Layout::of(fields);
        let columns = layout
            .0
            .iter()
            .map(|(key, t)| {
                let values = match t {
                    FieldType::Number => Values::Number(Vec::new()),
                    FieldType::Date => Values::Date(Vec::new()),
                    FieldType::Boolean => Values::Boolean(Vec::new()),
                    FieldType::Text | FieldType::Choice => Values::Text {
                        rows: Vec::new(),
                        texts: Texts::default(),
                    },
                };
                let column = Column {
                    present: RoaringBitmap::new(),
                    odd: RoaringBitmap::new(),
                    values,
                };
                (key.clone(), column)
            })
            .collect();
        let mut ix = Index {
            layout,
            ascii_lower,
            snapshot,
            read_at,
            built: Instant::now(),
            too_large: false,
            ids: Vec::new(),
            by_id: Vec::new(),
            later: HashMap::new(),
            live: RoaringBitmap::new(),
            status: Default::default(),
            row_status: Vec::new(),
            tags: HashMap::new(),
            row_tags: Vec::new(),
            columns,
            text: SearchText::default(),
        };
        {
            let mut rows = sqlx::query_as::<_, Row>(ALL_ROWS).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                ix.apply(row, true);
            }
        }
        tx.commit().await?;
        let mut by_id: Vec<u32> = (0..ix.ids.len() as u32).collect();
        by_id.sort_unstable_by_key(|&p| ix.ids[p as usize]);
        ix.by_id = by_id;
        ix.later = HashMap::new();
        // Growth left up to half of the largest buffers unused.
        ix.text.bytes.shrink_to_fit();
        ix.text.entries.shrink_to_fit();
        tracing::info!(
            subscribers = ix.live.len(),
            ms = started.elapsed().as_millis() as u64,
            "live index built"
        );
        Ok(ix)
    }

    async fn catch_up(&mut self, pool: &PgPool, max_changes: usize) -> Result<(), CatchUp> {
        let (mut tx, snapshot, read_at) = snapshot_read(pool).await?;
        if read_at - self.read_at > chrono::Duration::hours(REMOVALS_KEPT_HOURS / 2) {
            return Err(CatchUp::Rebuild("not caught up for hours"));
        }
        // xid8 has no statistics the planner can read a range from; the catch-up wants
        // the index whatever the estimate says.
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await?;
        let mut changed = 0;
        let previous = self.snapshot.clone();
        {
            let mut rows = sqlx::query_as::<_, Row>(CHANGED_ROWS)
                .bind(&previous)
                .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                changed += 1;
                if changed > max_changes {
                    return Err(CatchUp::Rebuild("many changes"));
                }
                self.apply(row, false);
            }
        }
        let removed: Vec<i64> = sqlx::query_scalar(REMOVED)
            .bind(&previous)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        for id in removed {
            self.remove(id);
        }
        self.snapshot = snapshot;
        self.read_at = read_at;
        Ok(())
    }

    /// The row's position, a new one for a new id (`first_read`: the build's scan, which
    /// sees each id once).
    fn position(&mut self, id: i64, first_read: bool) -> u32 {
        if !first_read && let Some(p) = self.find(id) {
            return p;
        }
        let p = self.ids.len() as u32;
        self.ids.push(id);
        if !first_read {
            self.later.insert(id, p);
        }
        self.row_status.push(NO_STATUS);
        self.row_tags.push(Box::default());
        self.text.row_entry.push(u32::MAX);
        for c in self.columns.values_mut() {
            match &mut c.values {
                Values::Number(v) => v.push(f64::NAN),
                Values::Date(v) => v.push(i32::MIN),
                Values::Boolean(v) => v.push(2),
                Values::Text { rows, .. } => rows.push(u32::MAX),
            }
        }
        p
    }

    fn apply(&mut self, row: Row, first_read: bool) {
        if self.ids.len() >= u32::MAX as usize {
            self.too_large = true;
            return;
        }
        let p = self.position(row.id, first_read);
        self.clear(p);
        self.live.insert(p);
        let s = status_slot(row.status);
        self.status[s].insert(p);
        self.row_status[p as usize] = s as u8;
        for t in &row.tag_ids {
            self.tags.entry(*t).or_default().insert(p);
        }
        self.row_tags[p as usize] = row.tag_ids.into_boxed_slice();
        if !self.text.add(p, &row.email, &row.name) {
            self.too_large = true;
        }
        // PostgreSQL wrote this text from jsonb; if it cannot be read, every field of the
        // row is odd (counted in SQL).
        let fields: Option<HashMap<&str, &RawValue>> = serde_json::from_str(&row.fields).ok();
        for (key, t) in &self.layout.0 {
            let Some(c) = self.columns.get_mut(key) else {
                continue;
            };
            let Some(fields) = &fields else {
                c.odd.insert(p);
                continue;
            };
            let v = fields.get(key.as_str()).copied();
            if v.is_some() {
                c.present.insert(p);
            }
            let i = p as usize;
            match (read_cell(*t, v, self.ascii_lower), &mut c.values) {
                (Cell::Absent, _) => {}
                (Cell::Number(x), Values::Number(v)) => v[i] = x,
                (Cell::Date(x), Values::Date(v)) => v[i] = x,
                (Cell::Boolean(x), Values::Boolean(v)) => v[i] = u8::from(x),
                (Cell::Text(x), Values::Text { rows, texts }) => rows[i] = texts.intern(x),
                _ => {
                    c.odd.insert(p);
                }
            }
        }
    }

    fn remove(&mut self, id: i64) {
        if let Some(p) = self.find(id) {
            self.clear(p);
        }
    }

    fn find(&self, id: i64) -> Option<u32> {
        let ids = &self.ids;
        self.by_id
            .binary_search_by_key(&id, |&p| ids[p as usize])
            .ok()
            .map(|i| self.by_id[i])
            .or_else(|| self.later.get(&id).copied())
    }

    /// Empties a position (the row is gone, or about to be written again).
    fn clear(&mut self, p: u32) {
        if !self.live.remove(p) {
            return;
        }
        let i = p as usize;
        if let Some(s) = self.status.get_mut(self.row_status[i] as usize) {
            s.remove(p);
        }
        self.row_status[i] = NO_STATUS;
        self.text.kill(p);
        for t in std::mem::take(&mut self.row_tags[i]).iter() {
            if let Some(b) = self.tags.get_mut(t) {
                b.remove(p);
            }
        }
        for c in self.columns.values_mut() {
            c.present.remove(p);
            c.odd.remove(p);
            match &mut c.values {
                Values::Number(v) => v[i] = f64::NAN,
                Values::Date(v) => v[i] = i32::MIN,
                Values::Boolean(v) => v[i] = 2,
                Values::Text { rows, .. } => rows[i] = u32::MAX,
            }
        }
    }

    /// At most `limit` of the ids in `found` below `before`, largest first.
    fn page(&self, found: &RoaringBitmap, before: Option<i64>, limit: usize) -> Vec<i64> {
        if limit == 0 {
            return Vec::new();
        }
        let below = |id: i64| before.is_none_or(|b| id < b);
        let mut ids: Vec<i64> = if found.len() > DENSE_PAGE {
            // Many match (a common status or tag): walk the rows newest first and stop
            // once the page is full, plus the rows added since the build.
            let cut = self.by_id.partition_point(|&p| below(self.ids[p as usize]));
            let mut ids: Vec<i64> = self.by_id[..cut]
                .iter()
                .rev()
                .filter(|&&p| found.contains(p))
                .take(limit)
                .map(|&p| self.ids[p as usize])
                .collect();
            ids.extend(
                self.later
                    .iter()
                    .filter(|&(&id, &p)| below(id) && found.contains(p))
                    .map(|(&id, _)| id),
            );
            ids
        } else {
            found
                .iter()
                .map(|p| self.ids[p as usize])
                .filter(|&id| below(id))
                .collect()
        };
        if ids.len() > limit {
            ids.select_nth_unstable_by(limit - 1, |a, b| b.cmp(a));
            ids.truncate(limit);
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    /// The rows whose text contains the needle (every row when it is empty) and that pass
    /// the filter's status and tag and `segment`, and whether `segment` could be applied
    /// (a column with values the index cannot compare exactly leaves it to SQL).
    fn matching(
        &self,
        filter: &ListFilter<'_>,
        segment: Option<&Condition>,
    ) -> (RoaringBitmap, bool) {
        let mut found = if filter.needle.is_empty() {
            self.live.clone()
        } else {
            self.text.find(filter.needle)
        };
        if let Some(s) = filter.status {
            found &= &self.status[status_slot(s)];
        }
        if let Some(t) = filter.tag {
            match self.tags.get(&t) {
                Some(members) => found &= members,
                None => found.clear(),
            }
        }
        let selected = segment.and_then(|c| self.eval(c));
        let applied = selected.is_some();
        if let Some(selected) = selected {
            found &= selected;
        }
        (found, applied)
    }

    /// The rows `cond` selects, or `None` when a condition cannot be judged here.
    fn eval(&self, cond: &Condition) -> Option<RoaringBitmap> {
        match cond {
            Condition::Group {
                r#match,
                conditions,
            } => {
                let mut parts = conditions.iter().map(|c| self.eval(c));
                match r#match {
                    Match::All => {
                        let mut acc = self.live.clone();
                        for part in parts.by_ref() {
                            acc &= part?;
                        }
                        Some(acc)
                    }
                    Match::Any => {
                        let mut acc = RoaringBitmap::new();
                        for part in parts {
                            acc |= part?;
                        }
                        Some(acc)
                    }
                }
            }
            Condition::Status { is } => Some(self.status[status_slot(*is)].clone()),
            Condition::Tag { tag_id, has } => {
                let members = self.tags.get(tag_id).cloned().unwrap_or_default();
                Some(if *has { members } else { &self.live - members })
            }
            Condition::Field { key, op, value } => self.eval_field(key, *op, value.trim()),
            _ => None,
        }
    }

    fn eval_field(&self, key: &str, op: FieldOp, value: &str) -> Option<RoaringBitmap> {
        let c = self.columns.get(key)?;
        if !c.odd.is_empty() {
            return None;
        }
        if matches!(c.values, Values::Text { .. }) && !self.ascii_lower {
            return None;
        }
        match op {
            FieldOp::IsSet => return Some(c.present.clone()),
            FieldOp::IsNotSet => return Some(&self.live - &c.present),
            _ => {}
        }
        // `IsNot` is everyone `Is` does not select, rows without the value included (as
        // `NOT coalesce(…, false)` in SQL).
        let (op, negate) = match op {
            FieldOp::IsNot => (FieldOp::Is, true),
            op => (op, false),
        };
        let matches = match &c.values {
            Values::Number(v) => {
                let x = exact_number(value)?;
                select(v, |&y| match op {
                    FieldOp::GreaterThan => y > x,
                    FieldOp::LessThan => y < x,
                    _ => y == x,
                })
            }
            Values::Date(v) => {
                let x = parse_date(value)?;
                select(v, |&y| {
                    y != i32::MIN
                        && match op {
                            FieldOp::GreaterThan => y > x,
                            FieldOp::LessThan => y < x,
                            _ => y == x,
                        }
                })
            }
            Values::Boolean(v) => {
                let x = match value {
                    "true" => 1,
                    "false" => 0,
                    _ => return None,
                };
                select(v, |&y| y == x)
            }
            Values::Text { rows, texts } => {
                let x = simple_lower(value)?;
                let wanted: Vec<bool> = texts
                    .all
                    .iter()
                    .map(|t| match op {
                        FieldOp::Contains => t.contains(x.as_str()),
                        FieldOp::Is => **t == *x,
                        _ => false,
                    })
                    .collect();
                select(rows, |&y| wanted.get(y as usize).copied().unwrap_or(false))
            }
        };
        Some(if negate {
            &self.live - matches
        } else {
            matches
        })
    }
}

impl SearchText {
    /// Appends the row's entry (its old one goes dead); false when the buffer would
    /// outgrow `u32` offsets.
    fn add(&mut self, p: u32, email: &str, name: &str) -> bool {
        self.kill(p);
        if self.dead_bytes > (1 << 16) && self.dead_bytes > self.bytes.len() / 2 {
            self.compact();
        }
        let offset = self.bytes.len();
        self.bytes.push(0);
        push_lower(&mut self.bytes, email);
        self.bytes.push(0);
        push_lower(&mut self.bytes, name);
        let Ok(offset) = u32::try_from(offset) else {
            self.bytes.truncate(offset);
            return false;
        };
        if u32::try_from(self.bytes.len()).is_err() {
            self.bytes.truncate(offset as usize);
            return false;
        }
        self.row_entry[p as usize] = self.entries.len() as u32;
        self.entries.push((offset, p));
        true
    }

    fn kill(&mut self, p: u32) {
        let Some(e) = self.row_entry.get_mut(p as usize) else {
            return;
        };
        if *e == u32::MAX {
            return;
        }
        let i = *e as usize;
        *e = u32::MAX;
        self.dead_bytes += self.entry_end(i) - self.entries[i].0 as usize;
    }

    fn entry_end(&self, i: usize) -> usize {
        self.entries
            .get(i + 1)
            .map_or(self.bytes.len(), |e| e.0 as usize)
    }

    /// Rewrites the buffer with live entries only.
    fn compact(&mut self) {
        let old_bytes = std::mem::take(&mut self.bytes);
        let old_entries = std::mem::take(&mut self.entries);
        for (i, &(offset, p)) in old_entries.iter().enumerate() {
            if self.row_entry[p as usize] != i as u32 {
                continue;
            }
            let end = old_entries
                .get(i + 1)
                .map_or(old_bytes.len(), |e| e.0 as usize);
            self.row_entry[p as usize] = self.entries.len() as u32;
            self.entries.push((self.bytes.len() as u32, p));
            self.bytes
                .extend_from_slice(&old_bytes[offset as usize..end]);
        }
        self.dead_bytes = 0;
    }

    /// Positions of live entries containing `needle` (lower-cased) in the address or the
    /// name.
    fn find(&self, needle: &str) -> RoaringBitmap {
        let mut lower = Vec::with_capacity(needle.len());
        push_lower(&mut lower, needle);
        let mut found = RoaringBitmap::new();
        // The separator cannot be searched for, so a match never spans two values.
        if lower.contains(&0) {
            return found;
        }
        let finder = memchr::memmem::Finder::new(&lower);
        let mut at = 0;
        while let Some(hit) = finder.find(&self.bytes[at..]) {
            let hit = at + hit;
            // The entry holding the hit, then on to the next entry: one hit per row is
            // enough.
            let i = self.entries.partition_point(|e| e.0 as usize <= hit) - 1;
            let (_, p) = self.entries[i];
            if self.row_entry[p as usize] == i as u32 {
                found.insert(p);
            }
            at = self.entry_end(i);
            if at >= self.bytes.len() {
                break;
            }
        }
        found
    }
}

fn push_lower(out: &mut Vec<u8>, s: &str) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| b.to_ascii_lowercase()));
    } else {
        out.extend_from_slice(fold_case(s).as_bytes());
    }
}

/// Lower case one character at a time, as PostgreSQL's `lower()` does under a libc
/// locale that knows the letter (no final-sigma rule, which ICU's `lower()` applies;
/// İ is i, not i + a combining dot): the search
/// needle and the searched text fold the same way, and the SQL fallback binds the same
/// folded needle.
pub fn fold_case(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let lower = if c == '\u{130}' { 'i' } else { c };
            lower.to_lowercase()
        })
        .collect()
}

/// The positions whose value passes `keep`.
fn select<T>(values: &[T], keep: impl Fn(&T) -> bool) -> RoaringBitmap {
    let positions = values
        .iter()
        .enumerate()
        .filter(|(_, v)| keep(v))
        .map(|(i, _)| i as u32);
    // Ascending by construction.
    RoaringBitmap::from_sorted_iter(positions).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_held_only_when_an_f64_compares_them_exactly() {
        assert_eq!(exact_number("25"), Some(25.0));
        assert_eq!(exact_number("-1.50"), Some(-1.5));
        assert_eq!(exact_number("1e3"), Some(1000.0));
        assert_eq!(exact_number(".5"), Some(0.5));
        assert_eq!(exact_number("123456789012345"), Some(123456789012345.0));
        assert_eq!(exact_number("1234567890123456"), None);
        assert_eq!(exact_number("0.1234567890123456"), None);
        for odd in [
            "", ".", "abc", "1,000", "NaN", "Infinity", "1e", "1e1000", "--1",
        ] {
            assert_eq!(exact_number(odd), None, "{odd}");
        }
    }

    #[test]
    fn dates_are_held_only_in_the_stored_shape() {
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(parse_date("2024-3-5"), parse_date("2024-03-05"));
        for odd in [
            "+2024-03-05",
            "0000-01-01x",
            "2024-02-30",
            " 2024-03-05",
            "2024/03/05",
        ] {
            assert_eq!(parse_date(odd), None, "{odd}");
        }
    }

    #[test]
    fn text_is_held_when_lower_does_not_depend_on_the_locale() {
        assert_eq!(simple_lower("Seoul 서울").as_deref(), Some("seoul 서울"));
        assert_eq!(simple_lower("홍길동"), Some("홍길동".into()));
        assert_eq!(simple_lower("Émile"), None);
        assert_eq!(simple_lower("straße"), None);
        assert_eq!(simple_lower("ǅakovo"), None, "title case has a mapping");
    }
}
