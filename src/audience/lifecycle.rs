//! Lifecycle stage, computed from engagement (the source document's new / active /
//! churn-risk, plus churned). Thresholds are instance settings, editable in Settings.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    New,
    Active,
    AtRisk,
    Churned,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::New, Stage::Active, Stage::AtRisk, Stage::Churned];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::New => "new",
            Stage::Active => "active",
            Stage::AtRisk => "at-risk",
            Stage::Churned => "churned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Thresholds in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Subscribed within this many days and no engagement yet: new.
    pub new_days: i64,
    /// Engaged (human open or click) within this many days: active.
    pub active_days: i64,
    /// No engagement for this many days: churned. Between active and churned: at risk.
    pub churn_days: i64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            new_days: 14,
            active_days: 30,
            churn_days: 90,
        }
    }
}

impl Lifecycle {
    pub fn validate(&self) -> Result<(), crate::Problem> {
        if self.new_days < 1 || self.active_days < 1 {
            return Err(crate::Problem::LifecycleAtLeastOneDay);
        }
        if self.churn_days <= self.active_days {
            return Err(crate::Problem::LifecycleChurnAfterActive);
        }
        Ok(())
    }

    pub fn stage(
        &self,
        created_at: DateTime<Utc>,
        last_engaged_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Stage {
        match last_engaged_at {
            Some(t) if now - t <= Duration::days(self.active_days) => Stage::Active,
            Some(t) if now - t <= Duration::days(self.churn_days) => Stage::AtRisk,
            Some(_) => Stage::Churned,
            None if now - created_at <= Duration::days(self.new_days) => Stage::New,
            None if now - created_at <= Duration::days(self.churn_days) => Stage::AtRisk,
            None => Stage::Churned,
        }
    }

    /// An SQL condition (on `subscribers` aliased `s`) selecting one stage, with `$now`
    /// as the given parameter placeholder. Range conditions, so indexes apply.
    pub fn sql_condition(&self, stage: Stage, now: &str) -> String {
        let (n, a, c) = (self.new_days, self.active_days, self.churn_days);
        match stage {
            Stage::Active => format!("s.last_engaged_at > {now} - interval '{a} days'"),
            Stage::AtRisk => format!(
                "((s.last_engaged_at <= {now} - interval '{a} days' AND s.last_engaged_at > {now} - interval '{c} days') \
                 OR (s.last_engaged_at IS NULL AND s.created_at <= {now} - interval '{n} days' AND s.created_at > {now} - interval '{c} days'))"
            ),
            Stage::Churned => format!(
                "((s.last_engaged_at <= {now} - interval '{c} days') OR (s.last_engaged_at IS NULL AND s.created_at <= {now} - interval '{c} days'))"
            ),
            Stage::New => format!(
                "(s.last_engaged_at IS NULL AND s.created_at > {now} - interval '{n} days')"
            ),
        }
    }

    pub async fn load(pool: &PgPool) -> sqlx::Result<Self> {
        let raw: Option<String> =
            sqlx::query_scalar("SELECT value FROM instance_settings WHERE key = 'lifecycle'")
                .fetch_optional(pool)
                .await?;
        Ok(raw
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default())
    }

    pub async fn save(&self, pool: &PgPool) -> sqlx::Result<()> {
        let value = serde_json::to_string(self).unwrap_or_default();
        sqlx::query("INSERT INTO instance_settings (key, value) VALUES ('lifecycle', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
            .bind(value)
            .execute(pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_engagement_and_age() {
        let l = Lifecycle::default();
        let now = Utc::now();
        let d = Duration::days;
        assert_eq!(l.stage(now - d(3), None, now), Stage::New);
        assert_eq!(l.stage(now - d(20), None, now), Stage::AtRisk);
        assert_eq!(l.stage(now - d(200), None, now), Stage::Churned);
        assert_eq!(l.stage(now - d(200), Some(now - d(5)), now), Stage::Active);
        assert_eq!(l.stage(now - d(200), Some(now - d(45)), now), Stage::AtRisk);
        assert_eq!(
            l.stage(now - d(200), Some(now - d(100)), now),
            Stage::Churned
        );
        assert!(
            Lifecycle {
                new_days: 14,
                active_days: 30,
                churn_days: 30
            }
            .validate()
            .is_err()
        );
    }
}
