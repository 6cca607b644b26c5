//! Where operation records live: a narrow, serialisable store ([`OperationStore`]) and its
//! in-memory implementation, bounded by a time to live after completion and a cap on records.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::ToolError;

use super::{OperationRecord, unix_ms};

/// Stores operation records. Everything it holds is a serialisable [`OperationRecord`] (no
/// closures, channels or tokens): the live side of an operation stays in the engine, so a
/// shared store for several replicas can implement this trait.
#[async_trait::async_trait]
pub trait OperationStore: Send + Sync + std::fmt::Debug {
    /// Stores a new record; refuses (with an actionable error) when the store is full of
    /// operations that are still running.
    async fn create(&self, record: OperationRecord) -> Result<(), ToolError>;
    /// Replaces the record of the same id.
    async fn put(&self, record: OperationRecord) -> Result<(), ToolError>;
    /// The record of this id, if stored and not expired.
    async fn get(&self, id: &str) -> Result<Option<OperationRecord>, ToolError>;
    /// The records started by `caller` (`None`: the local, unauthenticated caller), newest
    /// first, at most `limit`.
    async fn list(
        &self,
        caller: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OperationRecord>, ToolError>;
    /// Drops the records that finished longer than the time to live before `now`; returns how
    /// many were dropped.
    async fn expire(&self, now: SystemTime) -> Result<usize, ToolError>;

    /// Whether other replicas read and write this store too: the engine then renews the lease
    /// of each operation it runs and polls for cancellations asked on other replicas.
    fn shared(&self) -> bool {
        false
    }

    /// Asks the replica running operation `id` to cancel it (a store shared by replicas);
    /// `false` if the store cannot carry the request.
    async fn request_cancel(&self, _id: &str) -> Result<bool, ToolError> {
        Ok(false)
    }

    /// Whether a cancellation of `id` was asked for on another replica.
    async fn cancel_requested(&self, _id: &str) -> Result<bool, ToolError> {
        Ok(false)
    }

    /// Extends this replica's lease on running operation `id`: an operation whose lease lapses
    /// (its replica died) is marked failed by whoever reads it next, never left running.
    /// `false` if this replica no longer holds it.
    async fn renew(&self, _id: &str) -> Result<bool, ToolError> {
        Ok(true)
    }
}

/// Operation records in memory: finished ones are kept for `ttl`, and at most `cap` are kept at
/// all (when full, the oldest finished one makes room; if every one is running, a new operation
/// is refused).
#[derive(Debug)]
pub struct InMemoryStore {
    ttl: Duration,
    cap: usize,
    records: Mutex<HashMap<String, OperationRecord>>,
}

impl InMemoryStore {
    /// A store keeping finished operations for `ttl` and at most `cap` operations (at least 1).
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            cap: cap.max(1),
            records: Mutex::new(HashMap::new()),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, OperationRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn expire_locked(
        &self,
        records: &mut HashMap<String, OperationRecord>,
        now: SystemTime,
    ) -> usize {
        let now = unix_ms(now);
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let before = records.len();
        records.retain(|_, r| r.finished_ms.is_none_or(|f| f.saturating_add(ttl) > now));
        before - records.len()
    }
}

#[async_trait::async_trait]
impl OperationStore for InMemoryStore {
    async fn create(&self, record: OperationRecord) -> Result<(), ToolError> {
        let mut records = self.records();
        self.expire_locked(&mut records, SystemTime::now());
        if records.len() >= self.cap {
            let oldest = records
                .values()
                .filter_map(|r| r.finished_ms.map(|f| (f, r.id.clone())))
                .min();
            match oldest {
                Some((_, id)) => {
                    records.remove(&id);
                }
                None => {
                    return Err(ToolError::Refused(format!(
                        "{} operations are running, the most this server keeps; wait for one to finish (talos_operations lists them) or ask the operator to raise --max-operations",
                        self.cap
                    )));
                }
            }
        }
        records.insert(record.id.clone(), record);
        Ok(())
    }

    async fn put(&self, record: OperationRecord) -> Result<(), ToolError> {
        let mut records = self.records();
        // A record evicted meanwhile is not brought back by an update of a finished one.
        if records.contains_key(&record.id) || record.finished_ms.is_none() {
            records.insert(record.id.clone(), record);
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<OperationRecord>, ToolError> {
        let mut records = self.records();
        self.expire_locked(&mut records, SystemTime::now());
        Ok(records.get(id).cloned())
    }

    async fn list(
        &self,
        caller: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OperationRecord>, ToolError> {
        let mut records = self.records();
        self.expire_locked(&mut records, SystemTime::now());
        let mut mine: Vec<OperationRecord> = records
            .values()
            .filter(|r| r.caller.as_deref() == caller)
            .cloned()
            .collect();
        mine.sort_by(|a, b| {
            b.created_ms
                .cmp(&a.created_ms)
                .then_with(|| b.id.cmp(&a.id))
        });
        mine.truncate(limit);
        Ok(mine)
    }

    async fn expire(&self, now: SystemTime) -> Result<usize, ToolError> {
        let mut records = self.records();
        Ok(self.expire_locked(&mut records, now))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::operations::OperationState;

    fn record(
        id: &str,
        caller: Option<&str>,
        created_ms: u64,
        finished_ms: Option<u64>,
    ) -> OperationRecord {
        let mut r = OperationRecord::new(
            id.to_owned(),
            "talos_reboot",
            caller.map(str::to_owned),
            Some("prod".into()),
            vec!["10.5.0.2".into()],
            false,
        );
        r.created_ms = created_ms;
        if let Some(f) = finished_ms {
            r.finished_ms = Some(f);
            r.state = OperationState::Completed;
        }
        r
    }

    /// A finished record is kept for the TTL after it finished, then dropped; a running one
    /// is never dropped by age.
    #[tokio::test]
    async fn finished_records_expire_after_the_ttl_running_ones_do_not() {
        let store = InMemoryStore::new(Duration::from_secs(60), 10);
        let now = unix_ms(SystemTime::now());
        store
            .create(record("done", None, 1, Some(now)))
            .await
            .unwrap();
        store
            .create(record("running", None, 1, None))
            .await
            .unwrap();
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(store.expire(at(now + 59_000)).await.unwrap(), 0);
        assert!(store.get("done").await.unwrap().is_some());
        assert_eq!(store.expire(at(now + 60_000)).await.unwrap(), 1);
        assert!(store.get("done").await.unwrap().is_none());
        assert_eq!(store.expire(at(now + 10_000_000)).await.unwrap(), 0);
        assert!(store.get("running").await.unwrap().is_some());
    }

    /// At the cap the oldest finished record makes room; when every record is running a new
    /// operation is refused with what to do.
    #[tokio::test]
    async fn the_cap_evicts_the_oldest_finished_and_refuses_when_all_run() {
        let store = InMemoryStore::new(Duration::from_secs(3600), 3);
        let now = unix_ms(SystemTime::now());
        store
            .create(record("a", None, 1, Some(now + 2)))
            .await
            .unwrap();
        store
            .create(record("b", None, 2, Some(now + 1)))
            .await
            .unwrap();
        store.create(record("c", None, 3, None)).await.unwrap();
        store.create(record("d", None, 4, None)).await.unwrap();
        // b finished first: it went.
        assert!(store.get("b").await.unwrap().is_none());
        assert!(store.get("a").await.unwrap().is_some());
        store.create(record("e", None, 5, None)).await.unwrap();
        assert!(store.get("a").await.unwrap().is_none());
        let err = store.create(record("f", None, 6, None)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("Refused:") && text.contains("--max-operations"),
            "{text}"
        );
        assert!(store.get("f").await.unwrap().is_none());
        // A finished update of an evicted record does not come back.
        store
            .put(record("b", None, 2, Some(now + 9)))
            .await
            .unwrap();
        assert!(store.get("b").await.unwrap().is_none());
    }

    /// Lists are per caller, newest first, bounded.
    #[tokio::test]
    async fn lists_are_per_caller_newest_first_and_bounded() {
        let store = InMemoryStore::new(Duration::from_secs(3600), 10);
        store
            .create(record("a1", Some("alice"), 1, None))
            .await
            .unwrap();
        store
            .create(record("b1", Some("bob"), 2, None))
            .await
            .unwrap();
        store
            .create(record("a2", Some("alice"), 3, None))
            .await
            .unwrap();
        store.create(record("l1", None, 4, None)).await.unwrap();
        let ids = |v: Vec<OperationRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list(Some("alice"), 10).await.unwrap()),
            ["a2", "a1"]
        );
        assert_eq!(ids(store.list(Some("alice"), 1).await.unwrap()), ["a2"]);
        assert_eq!(ids(store.list(None, 10).await.unwrap()), ["l1"]);
        assert_eq!(ids(store.list(Some("bob"), 10).await.unwrap()), ["b1"]);
    }
}
