//! The state replicas share, in Redis (or Valkey, the same protocol): `--state-url`.
//!
//! [`RedisState`] implements [`SharedState`] and [`RedisOperations`] implements
//! [`OperationStore`] over one reconnecting connection. Every step that must be atomic is one
//! command (`SET NX PX` for single use) or one Lua script (the lock, its fencing number, the
//! rate limit's bucket, an operation's lease). Keys start with `talos-mcp:`:
//!
//! | key | holds |
//! |---|---|
//! | `talos-mcp:once:<name>` | a used confirmation nonce, until the token's expiry |
//! | `talos-mcp:lock:<name>` | `<fence>\|<holder>`, with the lease as its expiry |
//! | `talos-mcp:fence:<name>` | the lock's last fencing number (`INCR`) |
//! | `talos-mcp:rate:<caller>` | the caller's bucket: `tokens`, `at` (ms, the server's clock) |
//! | `talos-mcp:op:<id>` | an operation record (JSON); finished ones expire after the TTL |
//! | `talos-mcp:op:<id>:lease` | the id of the process running it, with the lease as expiry |
//! | `talos-mcp:op:<id>:cancel` | set when a replica asks for its cancellation |
//! | `talos-mcp:ops:running` | running operation ids (sorted by start) |
//! | `talos-mcp:ops:caller:<caller>` | a caller's operation ids (newest kept, sorted by start) |

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use talos_mcp::ToolError;
use talos_mcp::operations::{OperationRecord, OperationStore};
use talos_mcp::state::{Acquired, SharedState};

/// The prefix of every key.
const PREFIX: &str = "talos-mcp:";

/// How long one command may take before the store counts as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Takes a lock unless it is held. KEYS: lock, fencing counter. ARGV: holder, lease (ms).
/// Returns `{fence, ""}` when taken, `{0, holder}` when held.
const ACQUIRE: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local sep = string.find(held, '|', 1, true)
  return {0, string.sub(held, (sep or 0) + 1)}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence .. '|' .. ARGV[1], 'PX', ARGV[2])
return {fence, ''}
";

/// Extends a lock held with this fence. KEYS: lock. ARGV: fence, lease (ms). 1 or 0.
const RENEW: &str = r"
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Gives up a lock held with this fence. KEYS: lock. ARGV: fence.
const RELEASE: &str = r"
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
  redis.call('DEL', KEYS[1])
end
return 0
";

/// One request against a token bucket, timed by the server's clock (replicas' clocks do not
/// matter). KEYS: bucket. ARGV: refill per second, capacity. 1 (allowed) or 0.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local ok = 0
if tokens >= 1 then
  tokens = tokens - 1
  ok = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(math.max(now, at)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return ok
";

/// Writes an operation record if this process still holds its lease. KEYS: record, lease,
/// running set. ARGV: JSON, owner, finished (1/0), TTL (ms), id. 1 or 0.
const PUT: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
";

/// Records that a running operation's replica is gone, if its lease is still absent. KEYS:
/// record, lease, running set. ARGV: JSON, TTL (ms), id. 1 or 0.
const LAPSE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[3])
return 1
";

/// Extends this process's lease on an operation. KEYS: lease. ARGV: owner, lease (ms). 1 or 0.
const RENEW_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// The store's address without credentials, for messages and logs.
fn display(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    format!("{scheme}://{host}")
}

/// Whether `id` has the form of an operation id (32 lowercase hex digits).
fn is_operation_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Milliseconds of a duration, at least 1 (Redis refuses an expiry of 0).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The shared state in Redis. Cheap to clone; connects on first use and reconnects by itself.
#[derive(Clone)]
pub(crate) struct RedisState {
    client: redis::Client,
    conn: Arc<tokio::sync::OnceCell<ConnectionManager>>,
    /// The address without credentials.
    shown: String,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("store", &self.shown)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// A store at `url` (`redis://` or `rediss://`), with `password` replacing the URL's and
    /// `ca_pem` as the only trust root for TLS. Nothing is connected yet.
    pub(crate) fn open(url: &str, password: Option<&str>, ca_pem: Option<Vec<u8>>) -> Result<Self> {
        use redis::IntoConnectionInfo as _;
        let shown = display(url);
        // The URL may carry a password: its parse error is not quoted.
        let mut info = url.into_connection_info().map_err(|_| {
            anyhow::anyhow!("--state-url {shown}… is not a redis:// or rediss:// URL")
        })?;
        if let Some(password) = password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match ca_pem {
            Some(root_cert) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| anyhow::anyhow!("--state-url {shown}: {}", e.category()))?;
        Ok(Self {
            client,
            conn: Arc::default(),
            shown,
        })
    }

    fn err(&self, e: &redis::RedisError) -> ToolError {
        // The kind and the server's words; never the URL (it may hold a password).
        let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
        ToolError::State(format!(
            "the shared state store at {} failed ({}{detail}); nothing that needed it was done, retry shortly",
            self.shown,
            e.category()
        ))
    }

    async fn conn(&self) -> Result<ConnectionManager, ToolError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        self.conn
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .cloned()
            .map_err(|e| self.err(&e))
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        source: &str,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, ToolError> {
        let mut conn = self.conn().await?;
        let script = redis::Script::new(source);
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(*a);
        }
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(&e))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ToolError> {
        let mut conn = self.conn().await?;
        cmd.query_async(&mut conn).await.map_err(|e| self.err(&e))
    }
}

#[async_trait::async_trait]
impl SharedState for RedisState {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, ToolError> {
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(format!("{PREFIX}once:{key}"))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms(ttl)),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn acquire(
        &self,
        lock: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Acquired, ToolError> {
        let (fence, held_by): (u64, String) = self
            .script(
                ACQUIRE,
                &[
                    &format!("{PREFIX}lock:{lock}"),
                    &format!("{PREFIX}fence:{lock}"),
                ],
                &[holder, &ms(lease).to_string()],
            )
            .await?;
        Ok(if fence == 0 {
            Acquired::Busy { holder: held_by }
        } else {
            Acquired::Held { fence }
        })
    }

    async fn renew(&self, lock: &str, fence: u64, lease: Duration) -> Result<bool, ToolError> {
        let renewed: i64 = self
            .script(
                RENEW,
                &[&format!("{PREFIX}lock:{lock}")],
                &[&fence.to_string(), &ms(lease).to_string()],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn release(&self, lock: &str, fence: u64) -> Result<(), ToolError> {
        let _: i64 = self
            .script(
                RELEASE,
                &[&format!("{PREFIX}lock:{lock}")],
                &[&fence.to_string()],
            )
            .await?;
        Ok(())
    }

    async fn admit(&self, caller: &str, per_second: u32, burst: u32) -> Result<bool, ToolError> {
        let allowed: i64 = self
            .script(
                ADMIT,
                &[&format!("{PREFIX}rate:{caller}")],
                &[&per_second.max(1).to_string(), &burst.max(1).to_string()],
            )
            .await?;
        Ok(allowed == 1)
    }

    async fn ping(&self) -> Result<(), ToolError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

/// Operation records in Redis, readable and cancellable from every replica. Each running
/// operation carries a lease held by the process running it; an operation whose lease lapsed
/// (its replica died) is marked failed by whoever reads it next.
#[derive(Debug)]
pub(crate) struct RedisOperations {
    store: RedisState,
    /// This process's lease value: the replica's name and a random suffix (two processes with
    /// one name never share a lease).
    owner: String,
    ttl: Duration,
    cap: usize,
    lease: Duration,
}

impl RedisOperations {
    /// Records in `store` for the replica named `replica`: finished ones kept for `ttl`, at most
    /// `cap` running, leases of `lease`.
    pub(crate) fn new(
        store: RedisState,
        replica: &str,
        ttl: Duration,
        cap: usize,
        lease: Duration,
    ) -> Self {
        let mut suffix = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix);
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            store,
            owner: format!("{replica}/{suffix}"),
            ttl,
            cap: cap.max(1),
            lease,
        }
    }

    fn key(id: &str) -> String {
        format!("{PREFIX}op:{id}")
    }

    fn lease_key(id: &str) -> String {
        format!("{PREFIX}op:{id}:lease")
    }

    fn cancel_key(id: &str) -> String {
        format!("{PREFIX}op:{id}:cancel")
    }

    fn running_key() -> String {
        format!("{PREFIX}ops:running")
    }

    fn caller_key(caller: Option<&str>) -> String {
        match caller {
            Some(c) => format!("{PREFIX}ops:caller:={c}"),
            None => format!("{PREFIX}ops:local"),
        }
    }

    fn encode(&self, record: &OperationRecord) -> Result<String, ToolError> {
        serde_json::to_string(record)
            .map_err(|e| ToolError::Internal(format!("an operation record did not encode: {e}")))
    }

    fn decode(raw: &str) -> Result<OperationRecord, ToolError> {
        serde_json::from_str(raw).map_err(|e| {
            ToolError::State(format!(
                "an operation record in the shared store is unreadable ({e}); was it written by another version?"
            ))
        })
    }

    /// A record as it stands: one left running by a replica whose lease lapsed is marked
    /// failed (once, by whoever reads it first).
    async fn settle(&self, record: OperationRecord) -> Result<OperationRecord, ToolError> {
        if record.state.is_terminal() {
            return Ok(record);
        }
        let leased: bool = self
            .store
            .query(redis::cmd("EXISTS").arg(Self::lease_key(&record.id)))
            .await?;
        if leased {
            return Ok(record);
        }
        let mut lapsed = record;
        lapsed.mark_replica_lost();
        let json = self.encode(&lapsed)?;
        let written: i64 = self
            .store
            .script(
                LAPSE,
                &[
                    &Self::key(&lapsed.id),
                    &Self::lease_key(&lapsed.id),
                    &Self::running_key(),
                ],
                &[&json, &ms(self.ttl).to_string(), &lapsed.id],
            )
            .await?;
        if written == 1 {
            tracing::warn!(
                replica_lost = true,
                "an operation's replica stopped; its record is marked failed"
            );
            return Ok(lapsed);
        }
        // Its replica renewed meanwhile: read it again.
        let raw: Option<String> = self
            .store
            .query(redis::cmd("GET").arg(Self::key(&lapsed.id)))
            .await?;
        raw.as_deref().map_or(Ok(lapsed), Self::decode)
    }

    /// Running operations, after marking those whose replica is gone.
    async fn running(&self) -> Result<usize, ToolError> {
        let ids: Vec<String> = self
            .store
            .query(redis::cmd("ZRANGE").arg(Self::running_key()).arg(0).arg(-1))
            .await?;
        let mut running = 0;
        for id in ids {
            let raw: Option<String> = self
                .store
                .query(redis::cmd("GET").arg(Self::key(&id)))
                .await?;
            match raw {
                Some(raw) => {
                    if !self.settle(Self::decode(&raw)?).await?.state.is_terminal() {
                        running += 1;
                    }
                }
                None => {
                    let _: i64 = self
                        .store
                        .query(redis::cmd("ZREM").arg(Self::running_key()).arg(&id))
                        .await?;
                }
            }
        }
        Ok(running)
    }
}

#[async_trait::async_trait]
impl OperationStore for RedisOperations {
    async fn create(&self, record: OperationRecord) -> Result<(), ToolError> {
        if self.running().await? >= self.cap {
            return Err(ToolError::Refused(format!(
                "{} operations are running across the replicas, the most this server keeps; wait for one to finish (talos_operations lists them) or ask the operator to raise --max-operations",
                self.cap
            )));
        }
        let json = self.encode(&record)?;
        let by_caller = Self::caller_key(record.caller.as_deref());
        let keep = i64::try_from(self.cap).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(Self::key(&record.id))
            .arg(&json)
            .ignore()
            .cmd("SET")
            .arg(Self::lease_key(&record.id))
            .arg(&self.owner)
            .arg("PX")
            .arg(ms(self.lease))
            .ignore()
            .cmd("ZADD")
            .arg(Self::running_key())
            .arg(record.created_ms)
            .arg(&record.id)
            .ignore()
            .cmd("ZADD")
            .arg(&by_caller)
            .arg(record.created_ms)
            .arg(&record.id)
            .ignore()
            // The newest `cap` ids of a caller are kept.
            .cmd("ZREMRANGEBYRANK")
            .arg(&by_caller)
            .arg(0)
            .arg(-keep - 1)
            .ignore();
        let mut conn = self.store.conn().await?;
        let () = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.store.err(&e))?;
        Ok(())
    }

    async fn put(&self, record: OperationRecord) -> Result<(), ToolError> {
        let json = self.encode(&record)?;
        let finished = if record.finished_ms.is_some() {
            "1"
        } else {
            "0"
        };
        let written: i64 = self
            .store
            .script(
                PUT,
                &[
                    &Self::key(&record.id),
                    &Self::lease_key(&record.id),
                    &Self::running_key(),
                ],
                &[
                    &json,
                    &self.owner,
                    finished,
                    &ms(self.ttl).to_string(),
                    &record.id,
                ],
            )
            .await?;
        if written == 1 {
            Ok(())
        } else {
            Err(ToolError::State(
                "this replica's lease on the operation lapsed; its record is no longer this replica's to write".into(),
            ))
        }
    }

    async fn get(&self, id: &str) -> Result<Option<OperationRecord>, ToolError> {
        // A client-supplied id never names another kind of key (`<id>:lease`), nor costs a
        // round trip when it cannot be an operation's.
        if !is_operation_id(id) {
            return Ok(None);
        }
        let raw: Option<String> = self
            .store
            .query(redis::cmd("GET").arg(Self::key(id)))
            .await?;
        match raw {
            Some(raw) => Ok(Some(self.settle(Self::decode(&raw)?).await?)),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        caller: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OperationRecord>, ToolError> {
        let by_caller = Self::caller_key(caller);
        let ids: Vec<String> = self
            .store
            .query(
                redis::cmd("ZREVRANGE")
                    .arg(&by_caller)
                    .arg(0)
                    .arg(i64::try_from(self.cap).unwrap_or(i64::MAX) - 1),
            )
            .await?;
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= limit {
                break;
            }
            let raw: Option<String> = self
                .store
                .query(redis::cmd("GET").arg(Self::key(&id)))
                .await?;
            match raw {
                Some(raw) => {
                    let record = self.settle(Self::decode(&raw)?).await?;
                    if record.caller.as_deref() == caller {
                        out.push(record);
                    }
                }
                // Expired: its id goes too.
                None => {
                    let _: i64 = self
                        .store
                        .query(redis::cmd("ZREM").arg(&by_caller).arg(&id))
                        .await?;
                }
            }
        }
        Ok(out)
    }

    async fn expire(&self, _now: SystemTime) -> Result<usize, ToolError> {
        // Finished records carry their expiry in Redis.
        Ok(0)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn request_cancel(&self, id: &str) -> Result<bool, ToolError> {
        let _: Option<String> = self
            .store
            .query(
                redis::cmd("SET")
                    .arg(Self::cancel_key(id))
                    .arg(1)
                    .arg("PX")
                    .arg(ms(self.ttl)),
            )
            .await?;
        Ok(true)
    }

    async fn cancel_requested(&self, id: &str) -> Result<bool, ToolError> {
        self.store
            .query(redis::cmd("EXISTS").arg(Self::cancel_key(id)))
            .await
    }

    async fn renew(&self, id: &str) -> Result<bool, ToolError> {
        let renewed: i64 = self
            .store
            .script(
                RENEW_LEASE,
                &[&Self::lease_key(id)],
                &[&self.owner, &ms(self.lease).to_string()],
            )
            .await?;
        Ok(renewed == 1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_operation_ids_reach_the_store() {
        assert!(super::is_operation_id("0123456789abcdef0123456789abcdef"));
        for bad in [
            "0123456789abcdef0123456789abcdef:lease",
            "0123456789abcdef0123456789abcde",
            "0123456789ABCDEF0123456789ABCDEF",
            "../../x",
            "",
        ] {
            assert!(!super::is_operation_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_store_is_shown_without_credentials() {
        assert_eq!(
            super::display("redis://:hunter2@redis.example:6379/0"),
            "redis://redis.example:6379"
        );
        assert_eq!(
            super::display("rediss://user:p%40ss@10.0.0.1:6380?x=1"),
            "rediss://10.0.0.1:6380"
        );
        assert_eq!(super::display("redis://localhost"), "redis://localhost");
    }
}
