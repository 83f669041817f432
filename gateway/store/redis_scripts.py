"""The Lua scripts of the Redis store, one per multi-step change.

Guarantees: each script is one atomic step on the server (one round trip), and every key it
touches arrives in ``KEYS``, so a Redis Cluster can route it (:mod:`gateway.store.keys` gives
the keys of one partition a shared hash tag). Times that several processes must agree on
come from the server's ``TIME``, never from client clocks. The store registers them in
:class:`gateway.store.redis_pipeline.RedisPipeline`; a script the server has forgotten
(``NOSCRIPT``) is reloaded there and resent once.
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE_LUA",
    "ADMIT_LUA",
    "APPEND_LOG_LUA",
    "CLAIM_LUA",
    "COMMIT_LUA",
    "COUNT_AFTER_LUA",
    "HEARTBEAT_LUA",
    "INCR_TTL_LUA",
    "LEASE_HOLDER_LUA",
    "MEMBERS_LUA",
    "READ_LOG_LUA",
    "RELEASE_LUA",
    "RENEW_LUA",
    "TOKENS_LUA",
]

# Two values carry a number in front of their bytes, as "<n>:<bytes>": a state (n is its
# version) and a log entry (n is its id). A state is a plain string, not a hash of value and
# version: a hash with a value over 64 bytes leaves the compact encoding and costs ~160 B more.
# A log is a list of such entries, ids counting up from the newest one's; LTRIM keeps the
# newest ``cap``. A one-entry list costs ~100 B beyond its entry, where a one-entry stream
# costs a whole 4 KiB listpack node. Prefixed to every script that needs them.
_NUMBERED_LUA = """
local function number_of(value)
  if not value then return 0 end
  return tonumber(string.sub(value, 1, string.find(value, ':', 1, true) - 1))
end
local function log_append(key, payload, cap)
  local id = number_of(redis.call('LINDEX', key, -1)) + 1
  redis.call('RPUSH', key, id .. ':' .. payload)
  redis.call('LTRIM', key, -tonumber(cap), -1)
  return tostring(id)
end
"""

APPEND_LOG_LUA = _NUMBERED_LUA + "return log_append(KEYS[1], ARGV[1], ARGV[2])"

# Ids in a log are consecutive (appends count up by one, trimming drops the oldest), so the
# entry after id ``after`` sits at a computable index: read just the page, not the whole list.
# KEYS: log   ARGV: after (0 = from the oldest kept), count
READ_LOG_LUA = (
    _NUMBERED_LUA
    + """
local first = number_of(redis.call('LINDEX', KEYS[1], 0))
if first == 0 then return {} end
local start = math.max(0, tonumber(ARGV[1]) - first + 1)
return redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
"""
)

# Claim each dedupe key and append its payload only if the claim is new, in one atomic step:
# a crash can never leave a claimed key without its entry, nor an entry without its claim.
# KEYS: dedupe1, target1, dedupe2, target2, ...
# ARGV: ttl_ms1, payload1, cap1 (0: the target is a stream, else a log), ttl_ms2, ...
# Returns per item the new entry id, or 0 for a duplicate.
ADMIT_LUA = (
    _NUMBERED_LUA
    + """
local out, a = {}, 1
for i = 1, #KEYS, 2 do
  if not redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[a]) then
    out[#out + 1] = 0
  elseif ARGV[a + 2] == '0' then
    out[#out + 1] = redis.call('XADD', KEYS[i + 1], '*', 'p', ARGV[a + 1])
  else
    out[#out + 1] = log_append(KEYS[i + 1], ARGV[a + 1], ARGV[a + 2])
  end
  a = a + 3
end
return out
"""
)

# All-or-nothing commit. The version check runs before any write, so a conflict changes
# nothing. (Lua cannot roll back, so a WRONGTYPE error after the check would leave a partial
# commit; keys.py keeps every key to one type, which rules that out.)
# KEYS: [state], append streams..., record keys..., ack streams..., delete keys..., logs...,
#       counters...
# ARGV: has_state, expected, value, ttl_ms (0 = none), n_appends, n_records, n_acks,
#       n_deletes, n_logs, n_counters, then payload per append, (value, ttl_ms) per record,
#       (group, id) per ack, (payload, cap) per log, (amount, ttl_ms) per counter (a new
#       counter's ttl, as INCR_TTL_LUA sets it).
# Returns the new version, 0 without a state write, or -1 on a version conflict.
COMMIT_LUA = (
    _NUMBERED_LUA
    + """
local k, a, version = 1, 11, 0
if ARGV[1] == '1' then
  local have = number_of(redis.call('GET', KEYS[1]))
  if have ~= tonumber(ARGV[2]) then return -1 end
  version = have + 1
  if ARGV[4] ~= '0' then redis.call('SET', KEYS[1], version .. ':' .. ARGV[3], 'PX', ARGV[4])
  else redis.call('SET', KEYS[1], version .. ':' .. ARGV[3]) end
  k = 2
end
for _ = 1, tonumber(ARGV[5]) do
  redis.call('XADD', KEYS[k], '*', 'p', ARGV[a]); k = k + 1; a = a + 1
end
for _ = 1, tonumber(ARGV[6]) do
  if ARGV[a + 1] ~= '0' then redis.call('SET', KEYS[k], ARGV[a], 'PX', ARGV[a + 1])
  else redis.call('SET', KEYS[k], ARGV[a]) end
  k = k + 1; a = a + 2
end
for _ = 1, tonumber(ARGV[7]) do
  redis.call('XACK', KEYS[k], ARGV[a], ARGV[a + 1]); k = k + 1; a = a + 2
end
for _ = 1, tonumber(ARGV[8]) do
  redis.call('DEL', KEYS[k]); k = k + 1
end
for _ = 1, tonumber(ARGV[9]) do
  log_append(KEYS[k], ARGV[a], ARGV[a + 1]); k = k + 1; a = a + 2
end
for _ = 1, tonumber(ARGV[10]) do
  if ARGV[a + 1] ~= '0' then redis.call('SET', KEYS[k], 0, 'NX', 'PX', ARGV[a + 1]) end
  redis.call('INCRBY', KEYS[k], ARGV[a]); k = k + 1; a = a + 2
end
return version
"""
)

# XAUTOCLAIM does not report delivery counts; read them from the pending list in the same
# atomic step, so a caller can tell a retry from a first delivery (poison messages).
# KEYS: stream   ARGV: group, consumer, min_idle_ms, start, count
# Returns {next_cursor, {id, payload, deliveries}...}.
CLAIM_LUA = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {r[1]}
for _, e in ipairs(r[2]) do
  if e[2] then  -- Redis 6.2 lists entries deleted while pending with nil fields
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    out[#out + 1] = {e[1], e[2][2], p[1][4]}
  end
end
return out
"""

# XINFO reports no lag once entries past the group's cursor were deleted; count what lies
# past the cursor here, server-side, rather than shipping the entries to the client.
# KEYS: stream   ARGV: last delivered id
COUNT_AFTER_LUA = """
return #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
"""

# Token bucket on the server clock, so processes with skewed clocks share one bucket fairly.
# KEYS: bucket   ARGV: rate/s, burst, cost   Returns {allowed (0/1), tokens left as string}.
TOKENS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(b[1]) or burst
local stamp = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
if tokens >= cost then tokens = tokens - cost; allowed = 1 end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 's', string.format('%.17g', now))
-- a bucket idle for burst/rate seconds is full again, the same as absent: let it expire
if rate > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000) end
return {allowed, string.format('%.17g', tokens)}
"""

# A counter that gets its expiry only when created (never extended), in one atomic step
# that rides in the shared pipeline like any other command.
# KEYS: counter   ARGV: amount, ttl_ms
INCR_TTL_LUA = """
redis.call('SET', KEYS[1], 0, 'NX', 'PX', ARGV[2])
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""

# Take the lease if free (an expired lease is gone) or renew it if we already hold it; a
# plain SET NX could not renew, and GET-then-SET from the client would race.
# KEYS: lease   ARGV: owner, ttl_ms
ACQUIRE_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Extend the lease only while we hold it: an expired lease is gone, and winning it back here
# would hide that another process may have held it meanwhile. KEYS: lease   ARGV: owner, ttl_ms
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Release only our own lease: after it expired someone else may hold it.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# Members are scored by their expiry on the server clock; expired ones are dropped on every
# beat, and the set itself expires with its longest-lived member.
# KEYS: set   ARGV: member, ttl_ms   Returns the live members (unordered).
HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# Read-only views of the two above. A member is alive while its score is above the server's
# now; the expired ones are left for the next beat to drop. KEYS: set   Returns: now_ms and
# the live members with their scores.
MEMBERS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')}
"""

# One lease's holder and its time left, read together (a GET then a separate PTTL could pair
# one holder with the next one's expiry). KEYS: lease   Returns: nil or {owner, pttl_ms}.
LEASE_HOLDER_LUA = """
local owner = redis.call('GET', KEYS[1])
if not owner then return false end
return {owner, redis.call('PTTL', KEYS[1])}
"""
