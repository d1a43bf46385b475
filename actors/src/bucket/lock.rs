//! S3 Object Lock (write once, read many): a bucket's lock configuration, each version's
//! retention and legal hold, and the rules that decide when a locked version may change or go.
//!
//! The rules are pure functions of the stored lock and the clock, so that the bucket actor (the
//! only one to apply them) and the tests share them. A version under an active retention or a
//! legal hold is never deleted: [`ObjectLock::may_delete`] is checked when a delete is asked for,
//! and asserted again at the one place a version row is removed (`Op::forget_version`).

use serde::{Deserialize, Serialize};

use super::change::Op;
use super::model::{BucketReply, Refusal, Versioning};
use super::{Outcome, refused};
use crate::now_ms;

/// Longest default retention in days (S3's limit: 100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Longest default retention in years (S3's limit).
pub const MAX_RETENTION_YEARS: u32 = 100;
/// Milliseconds in a day.
const DAY_MS: u64 = 86_400_000;

/// How strictly a retention holds (S3 `ObjectLockRetentionMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionMode {
    /// Shortened or removed only with `x-amz-bypass-governance-retention` by a caller allowed to.
    Governance,
    /// Never shortened nor removed, by anyone, until it runs out.
    Compliance,
}

/// A version's retention: it may not be deleted before `until_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub mode: RetentionMode,
    /// Retain-until date, Unix milliseconds.
    pub until_ms: u64,
}

impl Retention {
    /// Whether it still holds at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.until_ms > now_ms
    }
}

/// The lock state of one object version (or the lock a write asks for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLock {
    /// Retention, if one was ever set (it may have run out).
    pub retention: Option<Retention>,
    /// Legal hold ON: the version may not be deleted, whatever its retention, until it is OFF.
    pub legal_hold: bool,
}

impl ObjectLock {
    /// Whether the version may be deleted at `now_ms`; `bypass`: the caller asked to bypass
    /// GOVERNANCE retention and may.
    pub fn may_delete(&self, bypass: bool, now_ms: u64) -> bool {
        if self.legal_hold {
            return false;
        }
        match self.retention.filter(|r| r.is_active(now_ms)) {
            None => true,
            Some(Retention { mode: RetentionMode::Governance, .. }) => bypass,
            Some(Retention { mode: RetentionMode::Compliance, .. }) => false,
        }
    }

    /// Whether the retention may become `wanted` (`None`: removed) at `now_ms`. An active
    /// retention may be lengthened (and GOVERNANCE made COMPLIANCE); anything else needs
    /// `bypass` under GOVERNANCE and is never allowed under COMPLIANCE.
    pub fn may_retain(&self, wanted: Option<&Retention>, bypass: bool, now_ms: u64) -> bool {
        let Some(current) = self.retention.filter(|r| r.is_active(now_ms)) else { return true };
        let strengthens = wanted.is_some_and(|wanted| {
            wanted.until_ms >= current.until_ms
                && (wanted.mode == RetentionMode::Compliance || current.mode == RetentionMode::Governance)
        });
        strengthens || (current.mode == RetentionMode::Governance && bypass)
    }
}

/// How long a default retention lasts from a version's creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionPeriod {
    /// 1 to [`MAX_RETENTION_DAYS`] days.
    Days(u32),
    /// 1 to [`MAX_RETENTION_YEARS`] calendar years.
    Years(u32),
}

impl RetentionPeriod {
    /// Whether it lies within S3's bounds.
    pub fn is_valid(&self) -> bool {
        match *self {
            RetentionPeriod::Days(days) => (1..=MAX_RETENTION_DAYS).contains(&days),
            RetentionPeriod::Years(years) => (1..=MAX_RETENTION_YEARS).contains(&years),
        }
    }

    /// When a retention of this period that starts at `from_ms` runs out.
    pub fn after(&self, from_ms: u64) -> u64 {
        match *self {
            RetentionPeriod::Days(days) => from_ms + u64::from(days) * DAY_MS,
            RetentionPeriod::Years(years) => add_years(from_ms, years),
        }
    }
}

/// The retention a bucket gives every new version that names none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRetention {
    pub mode: RetentionMode,
    pub period: RetentionPeriod,
}

/// A bucket's object lock configuration (S3 `ObjectLockConfiguration`); a bucket that has one
/// has object lock enabled, for good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLockConfig {
    pub default_retention: Option<DefaultRetention>,
}

impl ObjectLockConfig {
    /// The lock a new version gets when its write asked for `requested`: that, with the default
    /// retention when it names none.
    pub fn lock_of_new(&self, requested: ObjectLock, now_ms: u64) -> ObjectLock {
        let default = self
            .default_retention
            .map(|default| Retention { mode: default.mode, until_ms: default.period.after(now_ms) });
        ObjectLock { retention: requested.retention.or(default), ..requested }
    }
}

/// `ms` plus `years` calendar years (29 February becomes 28 February in a common year).
fn add_years(ms: u64, years: u32) -> u64 {
    let (days, rest) = ((ms / DAY_MS) as i64, ms % DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let year = year + i64::from(years);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let day = if month == 2 && day == 29 && !leap { 28 } else { day };
    days_from_civil(year, month, day) as u64 * DAY_MS + rest
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), after H. Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day number of a proleptic Gregorian date, the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Op<'_> {
    /// PutObjectLockConfiguration: enables object lock (on a bucket with versioning enabled, as
    /// S3 allows since 2023) or changes its default retention.
    pub async fn set_object_lock(mut self, config: ObjectLockConfig) -> Outcome {
        if self.meta.object_lock.is_none() && self.meta.versioning != Versioning::Enabled {
            return refused(Refusal::ObjectLockNeedsVersioning);
        }
        self.meta.object_lock = Some(config);
        let changes = self.storage.write_set();
        self.commit(changes).await?;
        Ok(BucketReply::Done)
    }

    /// PutObjectRetention of `key` (or one version of it); `bypass`: the caller asked to bypass
    /// GOVERNANCE retention and may.
    pub async fn put_retention(
        self,
        key: String,
        version_id: Option<String>,
        retention: Option<Retention>,
        bypass: bool,
    ) -> Outcome {
        self.change_lock(key, version_id, |lock| {
            if !lock.may_retain(retention.as_ref(), bypass, now_ms()) {
                return Err(Refusal::ObjectLocked);
            }
            lock.retention = retention;
            Ok(())
        })
        .await
    }

    /// PutObjectLegalHold of `key` (or one version of it).
    pub async fn put_legal_hold(self, key: String, version_id: Option<String>, on: bool) -> Outcome {
        self.change_lock(key, version_id, |lock| {
            lock.legal_hold = on;
            Ok(())
        })
        .await
    }

    async fn change_lock(
        self,
        key: String,
        version_id: Option<String>,
        change: impl FnOnce(&mut ObjectLock) -> Result<(), Refusal>,
    ) -> Outcome {
        if self.meta.object_lock.is_none() {
            return refused(Refusal::ObjectLockNotEnabled);
        }
        let mut object = match self.bucket.version(&key, version_id.as_deref())? {
            Ok(object) => object,
            Err(refusal) => return refused(refusal),
        };
        if let Err(refusal) = change(&mut object.lock) {
            return refused(refusal);
        }
        self.rewrite(key, object).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn retained(mode: RetentionMode, until_ms: u64) -> ObjectLock {
        ObjectLock { retention: Some(Retention { mode, until_ms }), legal_hold: false }
    }

    fn until(mode: RetentionMode, until_ms: u64) -> Option<Retention> {
        Some(Retention { mode, until_ms })
    }

    #[test]
    fn an_active_retention_may_be_lengthened_without_bypass() {
        for mode in [RetentionMode::Governance, RetentionMode::Compliance] {
            let lock = retained(mode, NOW + 10);
            assert!(lock.may_retain(until(mode, NOW + 10).as_ref(), false, NOW), "{mode:?} kept");
            assert!(lock.may_retain(until(mode, NOW + 99).as_ref(), false, NOW), "{mode:?} lengthened");
        }
        let governance = retained(RetentionMode::Governance, NOW + 10);
        let stricter = until(RetentionMode::Compliance, NOW + 10);
        assert!(governance.may_retain(stricter.as_ref(), false, NOW), "GOVERNANCE made COMPLIANCE");
    }

    #[test]
    fn governance_is_shortened_or_removed_only_with_bypass() {
        let lock = retained(RetentionMode::Governance, NOW + 10);
        let shorter = until(RetentionMode::Governance, NOW + 5);
        assert!(!lock.may_retain(shorter.as_ref(), false, NOW));
        assert!(lock.may_retain(shorter.as_ref(), true, NOW));
        assert!(!lock.may_retain(None, false, NOW));
        assert!(lock.may_retain(None, true, NOW));
    }

    #[test]
    fn compliance_is_never_shortened_weakened_or_removed() {
        let lock = retained(RetentionMode::Compliance, NOW + 10);
        for bypass in [false, true] {
            assert!(!lock.may_retain(until(RetentionMode::Compliance, NOW + 5).as_ref(), bypass, NOW));
            assert!(!lock.may_retain(until(RetentionMode::Governance, NOW + 99).as_ref(), bypass, NOW));
            assert!(!lock.may_retain(None, bypass, NOW));
        }
    }

    #[test]
    fn a_retention_that_ran_out_may_change_freely() {
        let lock = retained(RetentionMode::Compliance, NOW);
        assert!(lock.may_retain(None, false, NOW));
        assert!(lock.may_delete(false, NOW));
    }

    #[test]
    fn deletion_is_refused_under_retention_or_legal_hold() {
        assert!(ObjectLock::default().may_delete(false, NOW));
        let governance = retained(RetentionMode::Governance, NOW + 1);
        assert!(!governance.may_delete(false, NOW));
        assert!(governance.may_delete(true, NOW), "GOVERNANCE yields to bypass");
        assert!(!retained(RetentionMode::Compliance, NOW + 1).may_delete(true, NOW));
        let held = ObjectLock { retention: None, legal_hold: true };
        assert!(!held.may_delete(true, NOW), "a legal hold has no bypass");
        assert!(!ObjectLock { legal_hold: true, ..governance }.may_delete(true, NOW));
    }

    #[test]
    fn the_default_retention_applies_only_when_a_write_names_none() {
        let default = DefaultRetention { mode: RetentionMode::Governance, period: RetentionPeriod::Days(2) };
        let config = ObjectLockConfig { default_retention: Some(default) };
        let lock = config.lock_of_new(ObjectLock { retention: None, legal_hold: true }, NOW);
        assert_eq!(lock.retention, until(RetentionMode::Governance, NOW + 2 * DAY_MS));
        assert!(lock.legal_hold);
        let named = ObjectLock { retention: until(RetentionMode::Compliance, NOW + 7), legal_hold: false };
        assert_eq!(config.lock_of_new(named, NOW), named);
        assert_eq!(
            ObjectLockConfig::default().lock_of_new(ObjectLock::default(), NOW),
            ObjectLock::default()
        );
    }

    #[test]
    fn years_are_calendar_years() {
        // 2024-02-29T12:00Z plus one year is 2025-02-28T12:00Z; 1970-01-01 plus one is 365 days.
        let leap_day = 19_782 * DAY_MS + DAY_MS / 2;
        assert_eq!(RetentionPeriod::Years(1).after(leap_day), (19_782 + 365) * DAY_MS + DAY_MS / 2);
        assert_eq!(RetentionPeriod::Years(4).after(leap_day), (19_782 + 1461) * DAY_MS + DAY_MS / 2);
        assert_eq!(RetentionPeriod::Years(1).after(0), 365 * DAY_MS);
        assert_eq!(RetentionPeriod::Years(2).after(0), 730 * DAY_MS);
        assert!(RetentionPeriod::Years(MAX_RETENTION_YEARS).is_valid());
        assert!(!RetentionPeriod::Years(MAX_RETENTION_YEARS + 1).is_valid());
        assert!(!RetentionPeriod::Days(0).is_valid());
    }
}
