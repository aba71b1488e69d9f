//! The count index: the subscriber columns segments test most (status, tags, custom
//! fields) held in memory as bitmaps and columns, so the dashboard's live count of a
//! segment at a million subscribers takes milliseconds instead of a pass over the table.
//!
//! PostgreSQL stays the only source of truth, and recipients are always selected there
//! (`segments::push_condition`); the index only counts. Before each count it catches up
//! with every change committed so far:
//!
//! - a record change sets `subscribers.updated_at` to its transaction's start time
//!   (trigger or column default), and a removed subscriber leaves a row in
//!   `subscriber_removals` stamped the same way;
//! - each catch-up reads the rows stamped at or after the previous catch-up's *horizon*:
//!   the earlier of its own start and the start of the oldest transaction then open in
//!   this database (`pg_stat_activity`), less a safety margin. A transaction that commits
//!   after a catch-up was either open during it (so its stamp is at or after the horizon)
//!   or began after it.
//!
//! A count whose conditions the index does not hold (lifecycle stage and engagement,
//! which move with every open and click; events) or whose field holds a value the index
//! cannot read exactly as PostgreSQL would (a numeric string with more digits than an
//! `f64` keeps, a text with cased non-ASCII letters, where `lower()` depends on the
//! database's locale) returns `None`, and the caller counts in SQL. So does every count
//! while the index is being built. `tests/it/count_index.rs` checks the index against SQL
//! on random segments and random changes.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt;
use roaring::RoaringBitmap;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};

use super::{
    fields::{FieldDef, FieldType},
    segments::{Condition, FieldOp, Match},
    subscribers::Status,
};

/// Catch-ups re-read this much before the horizon (see the module docs).
const DEFAULT_MARGIN: Duration = Duration::from_secs(5);
/// An index this old is rebuilt in the background (it keeps serving meanwhile), bounding
/// any drift from writers the horizon cannot see.
const REFRESH_AFTER: Duration = Duration::from_secs(30 * 60);
/// Removal rows are kept this long; an index not caught up for half of it is rebuilt.
const REMOVALS_KEPT_HOURS: i64 = 24;
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// One per process, shared by every request.
#[derive(Clone)]
pub struct CountIndex {
    slot: Arc<tokio::sync::Mutex<Slot>>,
    margin: Duration,
}

#[derive(Default)]
struct Slot {
    index: Option<Index>,
    building: bool,
    pruned: Option<Instant>,
}

impl Default for CountIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl CountIndex {
    pub fn new() -> Self {
        Self::with_margin(DEFAULT_MARGIN)
    }

    /// Tests use no margin, so a horizon that missed an open transaction would show.
    pub fn with_margin(margin: Duration) -> Self {
        CountIndex {
            slot: Arc::default(),
            margin,
        }
    }

    /// How many subscribers `cond` selects, from the index caught up with every committed
    /// change; `None` when the index cannot answer (see the module docs). `cond` must
    /// have been validated against `fields`. Starts a build when there is no index yet.
    pub async fn count(
        &self,
        pool: &PgPool,
        cond: &Condition,
        fields: &[FieldDef],
    ) -> sqlx::Result<Option<u64>> {
        if !held(cond, fields) {
            return Ok(None);
        }
        // A count already catching up (or a rebuild swapping in) is not waited for.
        let Ok(mut slot) = self.slot.try_lock() else {
            return Ok(None);
        };
        let layout = Layout::of(fields);
        let stale = slot.index.as_ref().is_some_and(|ix| {
            ix.layout != layout
                || Utc::now() - ix.horizon > chrono::Duration::hours(REMOVALS_KEPT_HOURS / 2)
                || ix.too_large
        });
        if stale {
            slot.index = None;
        }
        let refresh = slot
            .index
            .as_ref()
            .is_some_and(|ix| ix.built.elapsed() > REFRESH_AFTER);
        if (slot.index.is_none() || refresh) && !slot.building {
            slot.building = true;
            let (me, pool, fields) = (self.clone(), pool.clone(), fields.to_vec());
            tokio::spawn(async move {
                let built = Index::build(&pool, &fields, me.margin).await;
                let mut slot = me.slot.lock().await;
                slot.building = false;
                match built {
                    Ok(ix) => slot.index = Some(ix),
                    Err(e) => {
                        tracing::warn!(error = %e, "building the segment count index failed; counting in SQL")
                    }
                }
            });
        }
        if slot.pruned.is_none_or(|p| p.elapsed() > PRUNE_EVERY) {
            slot.pruned = Some(Instant::now());
            sqlx::query("DELETE FROM subscriber_removals WHERE removed_at < now() - make_interval(hours => $1)")
                .bind(REMOVALS_KEPT_HOURS as i32)
                .execute(pool)
                .await?;
        }
        let Some(ix) = slot.index.as_mut() else {
            return Ok(None);
        };
        let mut conn = pool.acquire().await?;
        ix.catch_up(&mut conn, self.margin).await?;
        Ok(ix.eval(cond).map(|b| b.len()))
    }

    /// Builds the index now and waits for it: for a server that should answer its first
    /// counts from the index, and for tests and benchmarks.
    pub async fn build_now(&self, pool: &PgPool, fields: &[FieldDef]) -> sqlx::Result<()> {
        let ix = Index::build(pool, fields, self.margin).await?;
        self.slot.lock().await.index = Some(ix);
        Ok(())
    }
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
    status: Status,
    tag_ids: Vec<i64>,
    fields: Json<HashMap<String, Value>>,
}

const NO_STATUS: u8 = u8::MAX;

/// Positions are subscriber ids (identity values, dense enough); an id beyond `u32`
/// makes the index give up (`too_large`) and counts go to SQL.
struct Index {
    layout: Layout,
    horizon: DateTime<Utc>,
    built: Instant,
    too_large: bool,
    live: RoaringBitmap,
    status: [RoaringBitmap; 5],
    row_status: Vec<u8>,
    tags: HashMap<i64, RoaringBitmap>,
    row_tags: Vec<Box<[i64]>>,
    columns: HashMap<String, Column>,
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

fn read_cell(field_type: FieldType, v: Option<&Value>) -> Cell {
    let Some(v) = v else {
        return Cell::Absent;
    };
    match (field_type, v) {
        (_, Value::Null) => Cell::Absent,
        (FieldType::Number, Value::Number(n)) => {
            exact_number(&n.to_string()).map_or(Cell::Odd, Cell::Number)
        }
        (FieldType::Number, Value::String(s)) => {
            exact_number(s.trim()).map_or(Cell::Odd, Cell::Number)
        }
        (FieldType::Date, Value::String(s)) => parse_date(s).map_or(Cell::Odd, Cell::Date),
        (FieldType::Boolean, Value::Bool(b)) => Cell::Boolean(*b),
        (FieldType::Boolean, Value::String(s)) => match s.as_str() {
            "true" => Cell::Boolean(true),
            "false" => Cell::Boolean(false),
            _ => Cell::Odd,
        },
        (FieldType::Text | FieldType::Choice, Value::String(s)) => {
            simple_lower(s).map_or(Cell::Odd, Cell::Text)
        }
        _ => Cell::Odd,
    }
}

/// A decimal with at most 15 significant digits, which an `f64` orders and compares
/// exactly as PostgreSQL's `numeric` does.
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
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn parse_date(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((d - epoch).num_days()).ok()
}

/// `lower(s)` when every letter is ASCII or has no case (Hangul, digits, punctuation):
/// then it does not depend on the database's locale.
fn simple_lower(s: &str) -> Option<String> {
    s.chars()
        .all(|c| c.is_ascii() || (!c.is_lowercase() && !c.is_uppercase()))
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

/// The earliest stamp a change not yet visible to the next statement can carry.
async fn horizon(conn: &mut PgConnection, margin: Duration) -> sqlx::Result<DateTime<Utc>> {
    let at: DateTime<Utc> = sqlx::query_scalar(
        "SELECT least(clock_timestamp(), min(xact_start))
         FROM pg_stat_activity
         WHERE datname = current_database() AND backend_type = 'client backend'
           AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(at - chrono::Duration::from_std(margin).unwrap_or_default())
}

const ALL_ROWS: &str = "SELECT id, status, tag_ids, fields FROM subscribers";
const CHANGED_ROWS: &str =
    "SELECT id, status, tag_ids, fields FROM subscribers WHERE updated_at >= $1";

impl Index {
    async fn build(pool: &PgPool, fields: &[FieldDef], margin: Duration) -> sqlx::Result<Self> {
        let started = Instant::now();
        let mut conn = pool.acquire().await?;
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
            horizon: horizon(&mut conn, margin).await?,
            layout,
            built: Instant::now(),
            too_large: false,
            live: RoaringBitmap::new(),
            status: Default::default(),
            row_status: Vec::new(),
            tags: HashMap::new(),
            row_tags: Vec::new(),
            columns,
        };
        let mut rows = sqlx::query_as::<_, Row>(ALL_ROWS).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            ix.apply(row);
        }
        tracing::info!(
            subscribers = ix.live.len(),
            ms = started.elapsed().as_millis() as u64,
            "segment count index built"
        );
        Ok(ix)
    }

    async fn catch_up(&mut self, conn: &mut PgConnection, margin: Duration) -> sqlx::Result<()> {
        let next = horizon(conn, margin).await?;
        let changed: Vec<Row> = sqlx::query_as(CHANGED_ROWS)
            .bind(self.horizon)
            .fetch_all(&mut *conn)
            .await?;
        let removed: Vec<i64> = sqlx::query_scalar(
            "SELECT subscriber_id FROM subscriber_removals WHERE removed_at >= $1",
        )
        .bind(self.horizon)
        .fetch_all(&mut *conn)
        .await?;
        for row in changed {
            self.apply(row);
        }
        for id in removed {
            if let Ok(p) = u32::try_from(id) {
                self.remove(p);
            }
        }
        self.horizon = next;
        Ok(())
    }

    fn grow(&mut self, p: u32) {
        let n = p as usize + 1;
        if self.row_status.len() >= n {
            return;
        }
        let n = n.max(self.row_status.len() * 5 / 4);
        self.row_status.resize(n, NO_STATUS);
        self.row_tags.resize_with(n, Default::default);
        for c in self.columns.values_mut() {
            match &mut c.values {
                Values::Number(v) => v.resize(n, f64::NAN),
                Values::Date(v) => v.resize(n, i32::MIN),
                Values::Boolean(v) => v.resize(n, 2),
                Values::Text { rows, .. } => rows.resize(n, u32::MAX),
            }
        }
    }

    fn apply(&mut self, row: Row) {
        let Ok(p) = u32::try_from(row.id) else {
            self.too_large = true;
            return;
        };
        self.remove(p);
        self.grow(p);
        self.live.insert(p);
        let s = status_slot(row.status);
        self.status[s].insert(p);
        self.row_status[p as usize] = s as u8;
        for t in &row.tag_ids {
            self.tags.entry(*t).or_default().insert(p);
        }
        self.row_tags[p as usize] = row.tag_ids.into_boxed_slice();
        let fields = row.fields.0;
        for (key, t) in &self.layout.0 {
            let Some(c) = self.columns.get_mut(key) else {
                continue;
            };
            let v = fields.get(key);
            if v.is_some() {
                c.present.insert(p);
            }
            let i = p as usize;
            match (read_cell(*t, v), &mut c.values) {
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

    fn remove(&mut self, p: u32) {
        if !self.live.remove(p) {
            return;
        }
        let i = p as usize;
        if let Some(s) = self.status.get_mut(self.row_status[i] as usize) {
            s.remove(p);
        }
        self.row_status[i] = NO_STATUS;
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
    fn text_is_held_when_lower_does_not_depend_on_the_locale() {
        assert_eq!(simple_lower("Seoul 서울").as_deref(), Some("seoul 서울"));
        assert_eq!(simple_lower("홍길동"), Some("홍길동".into()));
        assert_eq!(simple_lower("Émile"), None);
        assert_eq!(simple_lower("straße"), None);
    }
}
