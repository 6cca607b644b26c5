//! State that replicas of the server share: single use of confirmation tokens and round-trip
//! states, the change lock (with a lease and a fencing number), and the per-caller rate limit.
//!
//! [`SharedState`] is the narrow async trait; [`MemoryState`] is the default, for one process.
//! The binary implements it over Redis (or Valkey) for several replicas (`--state-url`), with
//! the same semantics: every method is one atomic step of the store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ToolError;

/// The answer to a lock request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// Taken: the fencing number of this holding (greater than every earlier one of the lock).
    Held {
        /// The fencing number.
        fence: u64,
    },
    /// Held by someone else (their description, as given when they took it).
    Busy {
        /// Who holds it.
        holder: String,
    },
}

/// State shared by the replicas serving one organisation. Every method is atomic in the store.
#[async_trait::async_trait]
pub trait SharedState: Send + Sync + std::fmt::Debug {
    /// What the store is, for logs and readiness (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Claims `key` for `ttl`: `true` the first time (within `ttl`), `false` after. The single
    /// use of confirmation tokens and round-trip states (atomic set-if-absent with expiry).
    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, ToolError>;

    /// Takes `lock` for `holder` (a description: replica, caller, tool, node) with a lease of
    /// `lease`, unless it is held: then names who holds it.
    async fn acquire(
        &self,
        lock: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Acquired, ToolError>;

    /// Extends the lease of `lock` if `fence` still holds it; `false` if it lapsed or passed
    /// to another holder (the holder must then stop acting).
    async fn renew(&self, lock: &str, fence: u64, lease: Duration) -> Result<bool, ToolError>;

    /// Gives `lock` up if `fence` still holds it.
    async fn release(&self, lock: &str, fence: u64) -> Result<(), ToolError>;

    /// Counts one request of `caller` against a token bucket of `per_second` refill and `burst`
    /// capacity; `true` if it is allowed.
    async fn admit(&self, caller: &str, per_second: u32, burst: u32) -> Result<bool, ToolError>;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), ToolError>;
}

/// Most single-use claims and rate buckets [`MemoryState`] keeps; past it, expired claims and
/// full buckets are dropped first.
const MEMORY_MAX_ENTRIES: usize = 100_000;

/// [`SharedState`] in this process's memory: the default, for a single replica.
#[derive(Debug, Default)]
pub struct MemoryState {
    claims: Mutex<HashMap<String, Instant>>,
    locks: Mutex<MemoryLocks>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

#[derive(Debug, Default)]
struct MemoryLocks {
    /// The last fencing number handed out.
    fence: u64,
    /// Lock → (fence, holder, lease end).
    held: HashMap<String, (u64, String, Instant)>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait::async_trait]
impl SharedState for MemoryState {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, ToolError> {
        let now = Instant::now();
        let mut claims = guard(&self.claims);
        if claims.get(key).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        if claims.len() >= MEMORY_MAX_ENTRIES {
            claims.retain(|_, until| *until > now);
        }
        claims.insert(key.to_owned(), now + ttl);
        Ok(true)
    }

    async fn acquire(
        &self,
        lock: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Acquired, ToolError> {
        let now = Instant::now();
        let mut locks = guard(&self.locks);
        if let Some((_, who, until)) = locks.held.get(lock)
            && *until > now
        {
            return Ok(Acquired::Busy {
                holder: who.clone(),
            });
        }
        locks.fence += 1;
        let fence = locks.fence;
        locks
            .held
            .insert(lock.to_owned(), (fence, holder.to_owned(), now + lease));
        Ok(Acquired::Held { fence })
    }

    async fn renew(&self, lock: &str, fence: u64, lease: Duration) -> Result<bool, ToolError> {
        let now = Instant::now();
        let mut locks = guard(&self.locks);
        match locks.held.get_mut(lock) {
            Some((f, _, until)) if *f == fence && *until > now => {
                *until = now + lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, lock: &str, fence: u64) -> Result<(), ToolError> {
        let mut locks = guard(&self.locks);
        if locks.held.get(lock).is_some_and(|(f, _, _)| *f == fence) {
            locks.held.remove(lock);
        }
        Ok(())
    }

    async fn admit(&self, caller: &str, per_second: u32, burst: u32) -> Result<bool, ToolError> {
        let (rate, burst) = (f64::from(per_second.max(1)), f64::from(burst.max(1)));
        let now = Instant::now();
        let mut buckets = guard(&self.buckets);
        if buckets.len() >= MEMORY_MAX_ENTRIES && !buckets.contains_key(caller) {
            // Buckets that have refilled completely carry no information.
            buckets.retain(|_, (tokens, last)| {
                *tokens + now.duration_since(*last).as_secs_f64() * rate < burst
            });
        }
        let (tokens, last) = buckets.entry(caller.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn ping(&self) -> Result<(), ToolError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn claims_are_single_use_until_they_expire() {
        let s = MemoryState::default();
        assert!(s.claim_once("a", Duration::from_secs(60)).await.unwrap());
        assert!(!s.claim_once("a", Duration::from_secs(60)).await.unwrap());
        assert!(s.claim_once("b", Duration::from_secs(60)).await.unwrap());
        // An expired claim can be made again (the token it guarded has expired too).
        assert!(s.claim_once("c", Duration::ZERO).await.unwrap());
        assert!(s.claim_once("c", Duration::from_secs(60)).await.unwrap());
    }

    #[tokio::test]
    async fn locks_name_their_holder_fence_and_lapse() {
        let s = MemoryState::default();
        let lease = Duration::from_secs(60);
        let Acquired::Held { fence: first } = s.acquire("ctx", "A", lease).await.unwrap() else {
            panic!("not taken");
        };
        assert_eq!(
            s.acquire("ctx", "B", lease).await.unwrap(),
            Acquired::Busy { holder: "A".into() }
        );
        // Another lock is independent.
        assert!(matches!(
            s.acquire("other", "B", lease).await.unwrap(),
            Acquired::Held { .. }
        ));
        assert!(s.renew("ctx", first, lease).await.unwrap());
        // A wrong fence neither renews nor releases.
        assert!(!s.renew("ctx", first + 100, lease).await.unwrap());
        s.release("ctx", first + 100).await.unwrap();
        assert!(matches!(
            s.acquire("ctx", "B", lease).await.unwrap(),
            Acquired::Busy { .. }
        ));
        s.release("ctx", first).await.unwrap();
        let Acquired::Held { fence: second } = s.acquire("ctx", "B", Duration::ZERO).await.unwrap()
        else {
            panic!("not taken after release");
        };
        assert!(second > first);
        // A lapsed lease: the holder can no longer renew, and the next holder gets a greater
        // fence, so the stale holder is told apart.
        assert!(!s.renew("ctx", second, lease).await.unwrap());
        let Acquired::Held { fence: third } = s.acquire("ctx", "C", lease).await.unwrap() else {
            panic!("a lapsed lease was not taken over");
        };
        assert!(third > second);
        assert!(!s.renew("ctx", second, lease).await.unwrap());
        s.release("ctx", second).await.unwrap();
        assert!(s.renew("ctx", third, lease).await.unwrap());
    }

    #[tokio::test]
    async fn the_rate_limit_refuses_past_the_burst() {
        let s = MemoryState::default();
        let allowed = {
            let mut n = 0;
            for _ in 0..20 {
                if s.admit("alice", 1, 5).await.unwrap() {
                    n += 1;
                }
            }
            n
        };
        // A second or so of refill at most while the loop runs.
        assert!((5..=6).contains(&allowed), "{allowed}");
        // Another caller has a bucket of its own.
        assert!(s.admit("bob", 1, 5).await.unwrap());
    }
}
