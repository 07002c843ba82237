//! Budget holds shared by every server of the distributed pipeline: in Redis, with the
//! spend read from the store's usage ledger.
//!
//! Query servers and gateways (any number of each) reserve against one set of holds in
//! Redis; the stream, once a batch's commit has landed in the store, settles the holds
//! its events name. Each reserving server keeps a snapshot of the budgets' spend, read
//! from the ledger every [`SharedConfig::refresh`], and the Redis time at which it
//! started reading (`taken`).
//!
//! Why a decision never counts a call's spend zero times (while its hold lives):
//! - A hold counts in full until the stream settles it. The stream settles only after
//!   the event's commit landed, so the settlement's Redis time `settled_at` is after
//!   the spend became readable.
//! - A settled hold keeps counting for every snapshot taken at or before its
//!   `settled_at`, and stops counting for snapshots taken after: those were read after
//!   the commit landed, so they hold its real spend. The hold's amount is kept per slot
//!   in a sorted set by `settled_at` for [`KEEP_SETTLED`], longer than a snapshot may
//!   be old ([`SharedConfig::max_age`]; an older snapshot refuses to decide).
//! - Each decision runs as one Redis script: the holds of every slot are read, checked
//!   against the room the snapshot leaves (limit − spend), and the new hold added, in
//!   one step no other server's decision interleaves with. So concurrent reservations,
//!   on one server or many, can never together pass a limit.
//!
//! What errs: a call whose event lands in a snapshot while its settlement is not yet
//! seen counts twice (towards refusing); spend of calls made without a hold is seen
//! one refresh late, as on one node it is seen when its batch commits; a hold that
//! expires before its event lands leaves its spend unseen until the next snapshot.
//!
//! Redis keys, under a prefix per deployment (`ais:budgets:DATABASE:`): `h:SLOT` the
//! live holds' total of a slot (a budget, or one value of a budget of each value),
//! `s:SLOT` the settled holds, `r:ID` one hold, `e` the holds by expiry. Scripts
//! compute their keys, so the Redis must be one server (or one primary), not a cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ais_evaluate::budget::reserve::{CallScope, Decision, Plan, Reservations};
use ais_evaluate::budget::{BudgetConfig, Spend};
use ais_rollup::usage::Settlement;
use ais_store::QueryStore;
use redis::aio::ConnectionManager;
use redis::{Client, Script};

use super::{load_spend, BookError};

/// How long a settled hold is kept for snapshots read before it settled.
pub const KEEP_SETTLED: Duration = Duration::from_secs(300);
/// Expired holds released per decision (the rest by the next ones).
const EXPIRE_PER_CALL: u32 = 128;

/// A decision: expires due holds, reads each slot's holds (live, and settled at or
/// after the snapshot), and with a TTL adds the hold if every slot has room.
/// ARGV: prefix, snapshot ms, keep ms, ttl ms (0: a check), estimate micros, tokens,
/// most holds, id, tenant, most expired holds to release, then per slot: its key, room
/// in micros, room in tokens ("": no limit). Returns {status (0 refused, 1 granted, 2 full, 3 checked), expiry, then
/// per slot the held micros and tokens (the new hold included)}.
const DECIDE: &str = r#"
local p = ARGV[1]
local function int(n) return string.format('%d', n) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function release(id)
  local rk = p .. 'r:' .. id
  local h = redis.call('HMGET', rk, 'm', 't', 'n')
  redis.call('ZREM', p .. 'e', id)
  if not h[1] then return end
  local m, tk = tonumber(h[1]), tonumber(h[2])
  for j = 1, tonumber(h[3]) do
    local hk = p .. 'h:' .. redis.call('HGET', rk, 's' .. j)
    if m > 0 then redis.call('HINCRBY', hk, 'm', int(-m)) end
    if tk > 0 then redis.call('HINCRBY', hk, 't', int(-tk)) end
  end
  redis.call('DEL', rk)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'e', '-inf', int(now), 'LIMIT', 0, tonumber(ARGV[10]))) do
  release(id)
end
local snap, keep, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local em, et = tonumber(ARGV[5]), tonumber(ARGV[6])
local n = (#ARGV - 10) / 3
local held = {}
local fits = true
for i = 0, n - 1 do
  local slot = ARGV[11 + 3 * i]
  local hm = redis.call('HMGET', p .. 'h:' .. slot, 'm', 't')
  local m, tk = tonumber(hm[1] or '0'), tonumber(hm[2] or '0')
  local sk = p .. 's:' .. slot
  redis.call('ZREMRANGEBYSCORE', sk, '-inf', '(' .. int(now - keep))
  for _, entry in ipairs(redis.call('ZRANGEBYSCORE', sk, int(snap), '+inf')) do
    local a, b = string.match(entry, '^(%d+):(%d+):')
    m = m + tonumber(a)
    tk = tk + tonumber(b)
  end
  held[#held + 1] = m
  held[#held + 1] = tk
  local rm, rt = ARGV[12 + 3 * i], ARGV[13 + 3 * i]
  if rm ~= '' and m + em > tonumber(rm) then fits = false end
  if rt ~= '' and tk + et > tonumber(rt) then fits = false end
end
local function answer(status, expires)
  local out = {status, expires}
  for _, v in ipairs(held) do out[#out + 1] = v end
  return out
end
if ttl == 0 then return answer(3, 0) end
if not fits then return answer(0, 0) end
if redis.call('ZCARD', p .. 'e') >= tonumber(ARGV[7]) then return answer(2, 0) end
local id = ARGV[8]
local rk = p .. 'r:' .. id
local expires = now + ttl
redis.call('HSET', rk, 'm', int(em), 't', int(et), 'tenant', ARGV[9], 'n', int(n))
for i = 0, n - 1 do
  local slot = ARGV[11 + 3 * i]
  redis.call('HSET', rk, 's' .. (i + 1), slot)
  local hk = p .. 'h:' .. slot
  if em > 0 then redis.call('HINCRBY', hk, 'm', int(em)) end
  if et > 0 then redis.call('HINCRBY', hk, 't', int(et)) end
  held[2 * i + 1] = held[2 * i + 1] + em
  held[2 * i + 2] = held[2 * i + 2] + et
end
redis.call('ZADD', p .. 'e', int(expires), id)
return answer(1, expires)
"#;

/// Settles holds whose events' commit has landed. ARGV: prefix, keep ms, then pairs of
/// (id, tenant). Returns {settled, unknown}.
const SETTLE: &str = r#"
local p = ARGV[1]
local function int(n) return string.format('%d', n) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = tonumber(ARGV[2])
local settled, unknown = 0, 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local rk = p .. 'r:' .. id
  local h = redis.call('HMGET', rk, 'm', 't', 'tenant', 'n')
  if h[1] and h[3] == ARGV[i + 1] then
    local m, tk = tonumber(h[1]), tonumber(h[2])
    for j = 1, tonumber(h[4]) do
      local slot = redis.call('HGET', rk, 's' .. j)
      local hk = p .. 'h:' .. slot
      if m > 0 then redis.call('HINCRBY', hk, 'm', int(-m)) end
      if tk > 0 then redis.call('HINCRBY', hk, 't', int(-tk)) end
      local sk = p .. 's:' .. slot
      redis.call('ZADD', sk, int(now), h[1] .. ':' .. h[2] .. ':' .. id)
      redis.call('PEXPIRE', sk, int(keep))
    end
    redis.call('DEL', rk)
    redis.call('ZREM', p .. 'e', id)
    settled = settled + 1
  else
    unknown = unknown + 1
  end
end
return {settled, unknown}
"#;

/// A call is over: its hold keeps its real spend, with a new expiry. ARGV: prefix, id,
/// micros, tokens, ttl ms. Returns 1, or 0 when there is no such hold.
const HOLD_ACTUAL: &str = r#"
local p = ARGV[1]
local function int(n) return string.format('%d', n) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[2]
local rk = p .. 'r:' .. id
local h = redis.call('HMGET', rk, 'm', 't', 'n')
if not h[1] then return 0 end
local dm = tonumber(ARGV[3]) - tonumber(h[1])
local dt = tonumber(ARGV[4]) - tonumber(h[2])
for j = 1, tonumber(h[3]) do
  local hk = p .. 'h:' .. redis.call('HGET', rk, 's' .. j)
  if dm ~= 0 then redis.call('HINCRBY', hk, 'm', int(dm)) end
  if dt ~= 0 then redis.call('HINCRBY', hk, 't', int(dt)) end
end
local expires = now + tonumber(ARGV[5])
redis.call('HSET', rk, 'm', ARGV[3], 't', ARGV[4])
redis.call('ZADD', p .. 'e', int(expires), id)
return 1
"#;

/// Where the shared holds are and how they are kept.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`.
    pub url: String,
    /// Key prefix: one per deployment (the store's database name is a good one).
    pub prefix: String,
    /// Longest wait for Redis per call.
    pub timeout: Duration,
    /// How often the spend is read from the store.
    pub refresh: Duration,
    /// Oldest snapshot a decision is made from; past it, decisions answer
    /// unavailable (refusing nothing silently, holding nothing). Below [`KEEP_SETTLED`].
    pub max_age: Duration,
    /// Most holds at once.
    pub max_holds: usize,
    /// Most values (users, keys, …) whose spend a snapshot keeps for budgets of each
    /// value; a call of a value past it is refused, as on one node.
    pub max_values: usize,
}

impl SharedConfig {
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);

    /// The prefix of a deployment whose store is the database `database`.
    pub fn prefix_for(database: &str) -> String {
        format!("ais:budgets:{database}:")
    }
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> BookError {
    BookError::Unavailable(format!("budget holds in Redis: {what}: {error}"))
}

/// The holds in Redis: what the stream needs to settle them, and the reserving
/// servers to decide.
#[derive(Clone)]
pub struct SharedHolds {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    decide: Arc<Script>,
    settle: Arc<Script>,
    hold_actual: Arc<Script>,
}

impl SharedHolds {
    /// Prepares the connection; it is made on first use and remade after failures.
    pub fn connect(url: &str, prefix: String, timeout: Duration) -> Result<Self, BookError> {
        let client = Client::open(url).map_err(|error| unavailable("invalid URL", error))?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|error| unavailable("client", error))?;
        Ok(Self {
            connection,
            prefix,
            timeout,
            decide: Arc::new(Script::new(DECIDE)),
            settle: Arc::new(Script::new(SETTLE)),
            hold_actual: Arc::new(Script::new(HOLD_ACTUAL)),
        })
    }

    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BookError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(unavailable(what, error)),
            Err(_) => Err(unavailable(
                what,
                format!("no answer in {:?}", self.timeout),
            )),
        }
    }

    /// Redis's clock, in unix ms: the one clock settlements and snapshots are compared
    /// by.
    pub async fn now_ms(&self) -> Result<i64, BookError> {
        let mut connection = self.connection.clone();
        let (secs, micros): (i64, i64) = self
            .call("TIME", redis::cmd("TIME").query_async(&mut connection))
            .await?;
        Ok(secs * 1_000 + micros / 1_000)
    }

    /// Settles the holds a landed batch's events name. Returns (settled, unknown).
    pub async fn settle(&self, settled: &[Settlement]) -> Result<(u64, u64), BookError> {
        if settled.is_empty() {
            return Ok((0, 0));
        }
        let mut invocation = self.settle.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(KEEP_SETTLED.as_millis() as u64);
        for settlement in settled {
            invocation
                .arg(&settlement.reservation_id)
                .arg(&*settlement.tenant);
        }
        let mut connection = self.connection.clone();
        self.call("settle", invocation.invoke_async(&mut connection))
            .await
    }

    /// A call is over: its hold keeps `actual` for `ttl_ms` more.
    pub async fn hold_actual(
        &self,
        id: &str,
        actual: Spend,
        ttl_ms: i64,
    ) -> Result<bool, BookError> {
        let mut invocation = self.hold_actual.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(id)
            .arg(actual.micros)
            .arg(actual.tokens)
            .arg(ttl_ms.max(1));
        let mut connection = self.connection.clone();
        let found: i64 = self
            .call("hold", invocation.invoke_async(&mut connection))
            .await?;
        Ok(found == 1)
    }
}

/// The spend of the budgets as the store's ledger held it, and when it was read.
struct Snapshot {
    book: Reservations,
    /// Redis time before the read began.
    taken_ms: i64,
}

/// A reserving server's view: the shared holds and a snapshot of the spend.
pub struct SharedBook {
    holds: SharedHolds,
    config: SharedConfig,
    budgets: Vec<BudgetConfig>,
    store: Arc<dyn QueryStore>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Ids are a random prefix and a counter: unique across servers, not guessable.
    id_prefix: u64,
    next_id: AtomicU64,
}

impl SharedBook {
    /// Connects and reads the spend once; fails when either cannot be done.
    pub async fn start(
        config: SharedConfig,
        budgets: Vec<BudgetConfig>,
        store: Arc<dyn QueryStore>,
    ) -> Result<Arc<Self>, BookError> {
        let holds = SharedHolds::connect(&config.url, config.prefix.clone(), config.timeout)?;
        let first = read_snapshot(&holds, &config, &budgets, store.as_ref()).await?;
        Ok(Arc::new(Self {
            holds,
            config,
            budgets,
            store,
            snapshot: RwLock::new(Arc::new(first)),
            id_prefix: rand::random(),
            next_id: AtomicU64::new(0),
        }))
    }

    pub fn holds(&self) -> &SharedHolds {
        &self.holds
    }

    /// Reads the spend again every [`SharedConfig::refresh`], for as long as the
    /// runtime runs; a failed read keeps the last snapshot (decisions refuse to be made
    /// from one older than [`SharedConfig::max_age`]).
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let book = Arc::downgrade(self);
        let every = self.config.refresh;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(book) = book.upgrade() else {
                    return;
                };
                match read_snapshot(
                    &book.holds,
                    &book.config,
                    &book.budgets,
                    book.store.as_ref(),
                )
                .await
                {
                    Ok(fresh) => {
                        *book
                            .snapshot
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
                    }
                    Err(error) => {
                        metrics::counter!("ais_budget_spend_read_failures_total").increment(1);
                        tracing::warn!(%error, "cannot read the budgets' spend; keeping the last");
                    }
                }
            }
        })
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A check (`estimate` `None`) or a reservation, decided in one Redis step.
    pub async fn decide(
        &self,
        call: &CallScope<'_>,
        estimate: Option<Spend>,
        ttl_ms: i64,
    ) -> Result<Decision, BookError> {
        let snapshot = self.current();
        let now_ms = ais_model::time::unix_now_ms();
        let age_ms = now_ms.saturating_sub(snapshot.taken_ms);
        if age_ms > self.config.max_age.as_millis() as i64 {
            return Err(BookError::Unavailable(format!(
                "the budgets' spend was last read from the store {} s ago; nothing is decided from spend that old",
                age_ms / 1_000
            )));
        }
        let book = &snapshot.book;
        let plan = book.plan(call, now_ms);
        if plan.rooms.is_empty() || book.untracked_reason(&plan).is_some() {
            return Ok(book.decide_held(
                call,
                &plan,
                &[],
                estimate.or(Some(Spend::default())),
                None,
                now_ms,
            ));
        }
        let reserving = estimate.filter(|_| ttl_ms > 0);
        let id = format!(
            "res-{:016x}{:08x}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed) + 1
        );
        let answer = self
            .run_decide(
                &plan,
                snapshot.taken_ms,
                reserving,
                ttl_ms,
                &id,
                call.tenant,
            )
            .await?;
        let held: Vec<Spend> = answer
            .held
            .chunks(2)
            .map(|pair| Spend {
                micros: pair.first().copied().unwrap_or(0).max(0) as u64,
                tokens: pair.get(1).copied().unwrap_or(0).max(0) as u64,
            })
            .collect();
        match answer.status {
            1 => Ok(book.decide_held(
                call,
                &plan,
                &held,
                estimate,
                Some((id, answer.expires_ms)),
                now_ms,
            )),
            2 => Err(BookError::Full(format!(
                "{} reservations are held, the most this deployment keeps; retry when some expire",
                self.config.max_holds
            ))),
            _ => Ok(book.decide_held(call, &plan, &held, reserving, None, now_ms)),
        }
    }

    async fn run_decide(
        &self,
        plan: &Plan,
        snapshot_ms: i64,
        estimate: Option<Spend>,
        ttl_ms: i64,
        id: &str,
        tenant: &str,
    ) -> Result<Decided, BookError> {
        let estimate_or_zero = estimate.unwrap_or_default();
        let mut invocation = self.holds.decide.prepare_invoke();
        invocation
            .arg(&self.holds.prefix)
            .arg(snapshot_ms)
            .arg(KEEP_SETTLED.as_millis() as u64)
            .arg(if estimate.is_some() { ttl_ms.max(1) } else { 0 })
            .arg(estimate_or_zero.micros)
            .arg(estimate_or_zero.tokens)
            .arg(self.config.max_holds)
            .arg(id)
            .arg(tenant)
            .arg(EXPIRE_PER_CALL);
        let room = |room: Option<i64>| room.map(|room| room.to_string()).unwrap_or_default();
        for slot in &plan.rooms {
            invocation
                .arg(&slot.key)
                .arg(room(slot.micros))
                .arg(room(slot.tokens));
        }
        let mut connection = self.holds.connection.clone();
        let flat: Vec<i64> = self
            .holds
            .call("decide", invocation.invoke_async(&mut connection))
            .await?;
        let [status, expires_ms, held @ ..] = flat.as_slice() else {
            return Err(unavailable("decide", "a short answer"));
        };
        Ok(Decided {
            status: *status,
            expires_ms: *expires_ms,
            held: held.to_vec(),
        })
    }
}

struct Decided {
    status: i64,
    expires_ms: i64,
    held: Vec<i64>,
}

async fn read_snapshot(
    holds: &SharedHolds,
    config: &SharedConfig,
    budgets: &[BudgetConfig],
    store: &dyn QueryStore,
) -> Result<Snapshot, BookError> {
    // The time is taken before the read: every settlement before it is in the read.
    let taken_ms = holds.now_ms().await?;
    let mut book = Reservations::new(budgets.to_vec(), 0, config.max_values);
    load_spend(store, budgets, |entries| book.observe(entries))
        .await
        .map_err(|error| BookError::Unavailable(format!("reading the budgets' spend: {error}")))?;
    Ok(Snapshot { book, taken_ms })
}
