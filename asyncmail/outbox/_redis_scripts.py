"""``RedisStore``'s records, and the Lua scripts that change them, each change atomic.

Each write script takes the same first keys (``FIXED_KEYS``, all under the outbox's hash
tag) and the same first arguments (key prefix, consumer group, the caller's wall clock), and
keeps the counters (``counts``) and the per-state indexes (``idx:<state>``) exact through one
function, ``move``. A record found through a stream entry, ``delayed`` or an index (LEASE,
ENTRIES, PURGE) is named inside the script, not in KEYS; it shares the hash tag, so the
script still touches one slot on a Redis Cluster. The functions at the end turn the scripts'
replies (untyped, as redis-py hands them over) into the outbox's values.

Record fields, all strings: ``state key lane due attempts payload message_id recipients
pending accepted refused unknown error reply enqueued_at updated_at first_attempt_at`` and,
for the queue, ``entry`` (the id of its live stream entry, or empty), ``token worker``
(the lease), ``deadline renewed_ms`` (server milliseconds: when the lease runs out, and when
it was taken or last renewed). An empty ``error``, ``reply``, ``first_attempt_at`` or
``due`` means None. Lists are JSON arrays; ``refused`` is ``{rcpt: [code, text, retryable]}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ._model import FINAL_STATES, Lease, OutboxStatus, Refusal, State, lane_name, when

__all__ = [
    "ENQUEUE",
    "ENTRIES",
    "FINISH",
    "FINISH_SLIM",
    "FIXED_KEYS",
    "LEASE",
    "LIMIT",
    "MARK",
    "MARK_SLIM",
    "OPEN",
    "PURGE",
    "RELEASE",
    "RENEW",
    "RETRY",
    "STATS",
    "STATUS_FIELDS",
    "as_list",
    "as_text",
    "delivered",
    "lease_of",
    "optional_float",
    "recipients",
    "refusals",
    "status_of",
]

#: The fields of a record an OutboxStatus is made of, in this order.
STATUS_FIELDS = (
    "key", "state", "message_id", "lane", "attempts", "enqueued_at", "updated_at", "due",
    "accepted", "refused", "unknown", "pending", "error", "reply",
)  # fmt: skip

#: The outbox's own keys, after its prefix, in the order every script receives them.
FIXED_KEYS = (
    "meta",
    "counts",
    "delayed",
    "done",
    "lane:0",
    "lane:1",
    "lane:2",
    "idx:queued",
    "idx:leased",
    "idx:sending",
    "idx:delivered",
    "idx:failed",
    "idx:unknown",
)

_PRELUDE = """
local META, COUNTS, DELAYED, DONE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local LANES = {KEYS[5], KEYS[6], KEYS[7]}
local IDX = {queued = KEYS[8], leased = KEYS[9], sending = KEYS[10],
             delivered = KEYS[11], failed = KEYS[12], unknown = KEYS[13]}
local FINAL = {delivered = true, failed = true, unknown = true}
local PREFIX, GROUP, NOW = ARGV[1], ARGV[2], ARGV[3]

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n) return string.format('%d', n) end

-- A record changes state: the counters and the per-state indexes follow, in the same script.
local function move(h, key, from, to)
  if from then
    redis.call('HINCRBY', COUNTS, from, -1)
    redis.call('ZREM', IDX[from], key)
  end
  redis.call('HINCRBY', COUNTS, to, 1)
  redis.call('ZADD', IDX[to], NOW, key)
  redis.call('HSET', h, 'state', to, 'updated_at', NOW)
end

-- The record's stream entry is done with: out of the group's pending list and the stream.
local function drop(lane_key, id)
  if id and id ~= '' then
    redis.call('XACK', lane_key, GROUP, id)
    redis.call('XDEL', lane_key, id)
  end
end

-- A message reached a final state: one more in the last minute's rate.
local function finished(key, ms)
  redis.call('ZADD', DONE, ms, int(ms) .. ':' .. key)
  redis.call('ZREMRANGEBYSCORE', DONE, '-inf', '(' .. int(ms - 60000))
end

-- The consumer group's XINFO fields on a lane's stream, or nil.
local function group_info(lane_key)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', lane_key)) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == GROUP then return f end
  end
  return nil
end

local function json_list(list)
  if #list == 0 then return '[]' end
  return cjson.encode(list)
end
"""

# KEYS: FIXED, record. ARGV: prefix, group, now, key, lane, due, payload, message_id,
# recipients (JSON), enqueued_at, refused (JSON), error, then the status fields to return.
# With no recipients (all suppressed) the record is stored FAILED, and never queued.
ENQUEUE = (
    _PRELUDE
    + """
local h, key, lane, due = KEYS[14], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', h) == 1 then
  return {0, redis.call('HMGET', h, unpack(ARGV, 13))}
end
redis.call('HSET', h, 'key', key, 'lane', lane, 'due', due, 'attempts', 0,
  'payload', ARGV[7], 'message_id', ARGV[8], 'recipients', ARGV[9], 'pending', ARGV[9],
  'accepted', '[]', 'refused', ARGV[11], 'unknown', '[]', 'enqueued_at', ARGV[10], 'token', '',
  'error', ARGV[12])
if ARGV[9] == '[]' then
  move(h, key, nil, 'failed')
  redis.call('HSET', h, 'due', '', 'entry', '')
  finished(key, server_ms())
elseif tonumber(due) <= tonumber(NOW) then
  move(h, key, nil, 'queued')
  redis.call('HSET', h, 'entry', redis.call('XADD', LANES[tonumber(lane) + 1], '*', 'k', key))
else
  move(h, key, nil, 'queued')
  redis.call('ZADD', DELAYED, due, key)
  redis.call('HSET', h, 'entry', '')
end
return {1, redis.call('HMGET', h, unpack(ARGV, 13))}
"""
)

# KEYS: FIXED. ARGV: prefix, group, now, worker, count, lease ms, resend ('1'/'0'), died
# (the error text), number of entries to adopt, then (lane, id) of each entry to adopt, then
# one fresh token per lease. Returns {leases, next delayed due or false}; a lease is
# {key, token, payload, message_id, pending, accepted, refused, attempts, first_attempt_at,
# lane}.
LEASE = (
    _PRELUDE
    + """
local WORKER, WANT, LEASE_MS = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local RESEND, DIED, ADOPT = ARGV[7] == '1', ARGV[8], tonumber(ARGV[9])
local TOKENS = 9 + 2 * ADOPT  -- the tokens follow the adopted entries
local now_ms = server_ms()
local out = {}

-- Due delayed messages join their lane's stream.
for _, key in ipairs(redis.call('ZRANGEBYSCORE', DELAYED, '-inf', NOW, 'LIMIT', 0, 1000)) do
  local h = PREFIX .. 'msg:' .. key
  local rec = redis.call('HMGET', h, 'state', 'lane')
  if rec[1] == 'queued' then
    redis.call('HSET', h, 'entry', redis.call('XADD', LANES[tonumber(rec[2]) + 1], '*', 'k', key))
  end
  redis.call('ZREM', DELAYED, key)
end

-- Back to the pending list's head, for any worker to claim at once.
local function give_back(lane_key, consumer, id, idle)
  redis.call('XCLAIM', lane_key, GROUP, consumer, 0, id, 'IDLE', idle, 'JUSTID')
end

-- A stream entry this worker now holds: lease its message, end it UNKNOWN, or drop it.
local function take(lane_key, id, fields)
  local key = fields and fields[2]
  local h = key and (PREFIX .. 'msg:' .. key)
  local rec = h and redis.call('HMGET', h, 'state', 'entry', 'deadline', 'worker', 'renewed_ms')
  if not rec or not rec[1] or rec[2] ~= id or FINAL[rec[1]] then
    drop(lane_key, id)  -- stale: its message is final, gone, or queued under a newer entry
    return
  end
  local state = rec[1]
  if state ~= 'queued' and (tonumber(rec[3]) or 0) > now_ms then
    -- a live lease of a longer term than ours: back to its holder, idle as it was
    give_back(lane_key, rec[4], id, now_ms - (tonumber(rec[5]) or now_ms))
    return
  end
  if #out >= WANT then
    give_back(lane_key, WORKER, id, now_ms - 1000)
    return
  end
  if state == 'sending' and not RESEND then
    redis.call('HSET', h, 'unknown', redis.call('HGET', h, 'pending'), 'pending', '[]',
      'error', DIED, 'due', '', 'token', '', 'worker', '', 'entry', '', 'deadline', '')
    move(h, key, state, 'unknown')
    drop(lane_key, id)
    finished(key, now_ms)
    return
  end
  local token = ARGV[TOKENS + #out + 1]
  redis.call('HSET', h, 'token', token, 'worker', WORKER, 'deadline', int(now_ms + LEASE_MS),
    'renewed_ms', int(now_ms))
  move(h, key, state, 'leased')
  local f = redis.call('HMGET', h, 'payload', 'message_id', 'pending', 'accepted', 'refused',
    'attempts', 'first_attempt_at', 'lane')
  out[#out + 1] = {key, token, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]}
end

local function take_all(lane_key, entries)
  for _, e in ipairs(entries) do
    if e then take(lane_key, e[1], e[2]) end
  end
end

-- Entries a blocking read delivered to this worker before the script ran.
for i = 1, ADOPT do
  local lane_key, id = LANES[tonumber(ARGV[8 + 2 * i]) + 1], ARGV[9 + 2 * i]
  local r = redis.call('XRANGE', lane_key, id, id)
  take(lane_key, id, r[1] and r[1][2])
end

for lane = 1, 3 do
  local cursor, rounds = '0-0', 0
  while #out < WANT and rounds < 100 do
    local r = redis.call('XAUTOCLAIM', LANES[lane], GROUP, WORKER, LEASE_MS, cursor,
      'COUNT', WANT - #out)
    take_all(LANES[lane], r[2])
    cursor, rounds = r[1], rounds + 1
    if cursor == '0-0' then break end
  end
  rounds = 0
  while #out < WANT and rounds < 100 do
    local r = redis.call('XREADGROUP', 'GROUP', GROUP, WORKER, 'COUNT', WANT - #out,
      'STREAMS', LANES[lane], '>')
    if not r then break end
    take_all(LANES[lane], r[1][2])
    rounds = rounds + 1
  end
end

local next_due = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')[2] or false
return {out, next_due}
"""
)

# KEYS: FIXED, then each record. ARGV: prefix, group, now, lease ms, then each token.
# Returns the positions (1-based) of the leases that were lost.
RENEW = (
    _PRELUDE
    + """
local now_ms = server_ms()
local deadline = int(now_ms + tonumber(ARGV[4]))
local lost = {}
for i = 14, #KEYS do
  local h, token = KEYS[i], ARGV[i - 9]
  local rec = redis.call('HMGET', h, 'token', 'state', 'lane', 'entry', 'worker')
  if token == '' or rec[1] ~= token or (rec[2] ~= 'leased' and rec[2] ~= 'sending') then
    lost[#lost + 1] = i - 13
  else
    redis.call('HSET', h, 'deadline', deadline, 'renewed_ms', int(now_ms))
    -- idle time back to zero: no XAUTOCLAIM takes a lease that is being renewed
    redis.call('XCLAIM', LANES[tonumber(rec[3]) + 1], GROUP, rec[5], 0, rec[4], 'JUSTID')
  end
end
return lost
"""
)

# KEYS: FIXED, record. ARGV: prefix, group, now, token, key. Returns 1, or 0 (lease lost).
MARK = (
    _PRELUDE
    + """
local h, token = KEYS[14], ARGV[4]
local rec = redis.call('HMGET', h, 'token', 'state')
if token == '' or rec[1] ~= token then return 0 end
if rec[2] == 'sending' then return 1 end
if rec[2] ~= 'leased' then return 0 end
move(h, ARGV[5], 'leased', 'sending')
return 1
"""
)

# KEYS: FIXED, record. ARGV: prefix, group, now, token, key, state, pending, accepted,
# refused, unknown, attempts, first_attempt_at, due, error, reply. Returns 1, or 0.
FINISH = (
    _PRELUDE
    + """
local h, token, key, to = KEYS[14], ARGV[4], ARGV[5], ARGV[6]
local rec = redis.call('HMGET', h, 'token', 'state', 'lane', 'entry')
if token == '' or rec[1] ~= token or (rec[2] ~= 'leased' and rec[2] ~= 'sending') then
  return 0
end
redis.call('HSET', h, 'pending', ARGV[7], 'accepted', ARGV[8], 'refused', ARGV[9],
  'unknown', ARGV[10], 'attempts', ARGV[11], 'first_attempt_at', ARGV[12], 'error', ARGV[14],
  'reply', ARGV[15], 'token', '', 'worker', '', 'entry', '', 'deadline', '')
drop(LANES[tonumber(rec[3]) + 1], rec[4])
move(h, key, rec[2], to)
if to == 'queued' then
  redis.call('HSET', h, 'due', ARGV[13])
  redis.call('ZADD', DELAYED, ARGV[13], key)
else
  redis.call('HSET', h, 'due', '')
  finished(key, server_ms())
end
return 1
"""
)

# KEYS: FIXED, record. ARGV: prefix, group, now, token, key. Returns 1, or 0.
# The entry stays where it is in the stream and the pending list, with an idle time of
# decades: the next XAUTOCLAIM of any worker takes it, ahead of newer messages of its lane.
RELEASE = (
    _PRELUDE
    + """
local h, token = KEYS[14], ARGV[4]
local rec = redis.call('HMGET', h, 'token', 'state', 'lane', 'entry', 'worker')
if token == '' or rec[1] ~= token or rec[2] ~= 'leased' then return 0 end
redis.call('XCLAIM', LANES[tonumber(rec[3]) + 1], GROUP, rec[5], 0, rec[4],
  'IDLE', server_ms() - 1000, 'JUSTID')
redis.call('HSET', h, 'token', '', 'worker', '', 'deadline', '')
move(h, ARGV[5], 'leased', 'queued')
return 1
"""
)

# KEYS: FIXED, then each record. ARGV: prefix, group, now, then each key. Returns how many
# FAILED or UNKNOWN messages were queued again.
RETRY = (
    _PRELUDE
    + """
local n = 0
for i = 14, #KEYS do
  local h, key = KEYS[i], ARGV[i - 10]
  local rec = redis.call('HMGET', h, 'state', 'recipients', 'accepted', 'lane')
  if rec[1] == 'failed' or rec[1] == 'unknown' then
    local accepted, pending = {}, {}
    for _, r in ipairs(cjson.decode(rec[3])) do accepted[r] = true end
    for _, r in ipairs(cjson.decode(rec[2])) do
      if not accepted[r] then pending[#pending + 1] = r end
    end
    if #pending > 0 then
      redis.call('HSET', h, 'pending', json_list(pending), 'refused', '{}', 'unknown', '[]',
        'attempts', 0, 'first_attempt_at', '', 'error', '', 'reply', '', 'due', NOW)
      move(h, key, rec[1], 'queued')
      redis.call('HSET', h, 'entry',
        redis.call('XADD', LANES[tonumber(rec[4]) + 1], '*', 'k', key))
      n = n + 1
    end
  end
end
return n
"""
)

# KEYS: FIXED. ARGV: prefix, group, now, state, cutoff, limit. Returns how many were deleted.
PURGE = (
    _PRELUDE
    + """
local state = ARGV[4]
local keys = redis.call('ZRANGEBYSCORE', IDX[state], '-inf', ARGV[5], 'LIMIT', 0, ARGV[6])
for _, key in ipairs(keys) do
  redis.call('DEL', PREFIX .. 'msg:' .. key)
  redis.call('ZREM', IDX[state], key)
end
if #keys > 0 then redis.call('HINCRBY', COUNTS, state, -#keys) end
return #keys
"""
)

# KEYS: FIXED. ARGV: prefix, group, now, marker, schema. Creates the outbox on an empty
# namespace; otherwise returns what is wrong: {'ok'|'created'} or {'foreign', key},
# {'type', key, type}, {'schema', version}.
OPEN = (
    _PRELUDE
    + """
local MARKER, SCHEMA = ARGV[4], ARGV[5]
local TYPES = {'hash', 'hash', 'zset', 'zset', 'stream', 'stream', 'stream',
               'zset', 'zset', 'zset', 'zset', 'zset', 'zset'}
local function ensure_groups()
  for _, lane_key in ipairs(LANES) do
    if redis.call('EXISTS', lane_key) == 0 or not group_info(lane_key) then
      redis.call('XGROUP', 'CREATE', lane_key, GROUP, '0', 'MKSTREAM')
    end
  end
end
local meta_type = redis.call('TYPE', META).ok
if meta_type == 'none' then
  for i = 2, #TYPES do
    if redis.call('TYPE', KEYS[i]).ok ~= 'none' then return {'foreign', KEYS[i]} end
  end
  redis.call('HSET', META, 'kind', MARKER, 'schema', SCHEMA)
  ensure_groups()
  return {'created'}
end
if meta_type ~= 'hash' then return {'type', META, meta_type} end
local meta = redis.call('HMGET', META, 'kind', 'schema')
if meta[1] ~= MARKER then return {'foreign', META} end
if meta[2] ~= SCHEMA then return {'schema', meta[2] or '?'} end
for i = 2, #TYPES do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'none' and t ~= TYPES[i] then return {'type', KEYS[i], t} end
end
ensure_groups()
return {'ok'}
"""
)

# KEYS: FIXED. ARGV: prefix, group, now. Returns {counts (flat), finished in the last
# minute, the server's time (ms), the oldest due stream entry's time (ms) or false, the
# earliest due time still in ``delayed`` or false}.
STATS = (
    _PRELUDE
    + """
local now_ms = server_ms()
local oldest = false
local function consider(id)
  local ms = tonumber((string.gsub(id, '-.*', '')))
  if not oldest or ms < oldest then oldest = ms end
end
for _, lane_key in ipairs(LANES) do
  local group = group_info(lane_key)
  if group then  -- the first entry not yet delivered to any worker
    local r = redis.call('XRANGE', lane_key, '(' .. group['last-delivered-id'], '+', 'COUNT', 1)
    if r[1] then consider(r[1][1]) end
  end
  -- the first released entry (idle for decades) in the pending list
  local p = redis.call('XPENDING', lane_key, GROUP, 'IDLE', now_ms - 86400000, '-', '+', 1)
  if p[1] then consider(p[1][1]) end
end
local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, 1)
return {redis.call('HGETALL', COUNTS), redis.call('ZCOUNT', DONE, now_ms - 60000, '+inf'),
        int(now_ms), oldest and int(oldest), due[2] or false}
"""
)

# KEYS: FIXED. ARGV: prefix, group, now, state ('' for any), limit (> 0), then the fields to
# return. Returns each record's fields, newest change first.
ENTRIES = (
    _PRELUDE
    + """
local limit, found, out = tonumber(ARGV[5]), {}, {}
for state, idx in pairs(IDX) do
  if ARGV[4] == '' or ARGV[4] == state then
    local r = redis.call('ZREVRANGE', idx, 0, limit - 1, 'WITHSCORES')
    for i = 1, #r, 2 do found[#found + 1] = {r[i], tonumber(r[i + 1])} end
  end
end
table.sort(found, function(a, b) return a[2] > b[2] end)
for i = 1, math.min(limit, #found) do
  out[i] = redis.call('HMGET', PREFIX .. 'msg:' .. found[i][1], unpack(ARGV, 6))
end
return out
"""
)

# KEYS: the limiter's key. ARGV: interval (µs), burst. A GCRA on the server's clock: takes
# the next slot and returns how long (µs) the caller waits for it.
LIMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end
local wait = tat - (burst - 1) * interval - now
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat),
  'PX', string.format('%d', math.floor((next_tat - now) / 1000) + 1000))
if wait < 0 then wait = 0 end
return string.format('%d', wait)
"""


# What the scripts return, as the outbox's values (redis-py hands over untyped replies).


def as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


def as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def optional_float(value: object) -> float | None:
    text = as_text(value)
    return float(text) if text else None


def refusals(value: object) -> dict[str, Refusal]:
    raw = json.loads(as_text(value) or "{}")
    return {rcpt: Refusal(code, text, retryable) for rcpt, (code, text, retryable) in raw.items()}


def recipients(value: object) -> tuple[str, ...]:
    return tuple(json.loads(as_text(value) or "[]"))


def status_of(values: Sequence[object]) -> OutboxStatus:
    f = dict(zip(STATUS_FIELDS, values, strict=True))
    state = State(as_text(f["state"]))
    due = optional_float(f["due"])
    return OutboxStatus(
        key=as_text(f["key"]),
        state=state,
        message_id=as_text(f["message_id"]),
        priority=lane_name(int(as_text(f["lane"]))),
        attempts=int(as_text(f["attempts"])),
        enqueued_at=when(float(as_text(f["enqueued_at"]))),
        updated_at=when(float(as_text(f["updated_at"]))),
        next_attempt_at=None if state in FINAL_STATES or due is None else when(due),
        accepted=recipients(f["accepted"]),
        refused=refusals(f["refused"]),
        unknown=recipients(f["unknown"]),
        pending=recipients(f["pending"]),
        error=as_text(f["error"]) or None,
        reply=as_text(f["reply"]) or None,
    )


def lease_of(row: Sequence[object]) -> Lease:
    key, token, payload, message_id, pending, accepted, refused, attempts, first, lane = row
    return Lease(
        key=as_text(key),
        token=as_text(token),
        payload=payload if isinstance(payload, bytes) else as_text(payload).encode(),
        message_id=as_text(message_id),
        pending=recipients(pending),
        accepted=recipients(accepted),
        refused=refusals(refused),
        attempts=int(as_text(attempts)),
        first_attempt_at=optional_float(first),
        lane=int(as_text(lane)),
    )


def delivered(reply: object) -> list[tuple[int, str]]:
    """(lane, entry id) of each entry an XREADGROUP reply holds (RESP2 list or RESP3 map)."""
    streams = list(reply.items()) if isinstance(reply, dict) else as_list(reply)
    found: list[tuple[int, str]] = []
    for stream in streams:
        name, entries = as_list(stream)
        lane = int(as_text(name).rpartition(":")[2])
        found += [(lane, as_text(as_list(entry)[0])) for entry in as_list(entries)]
    return found


# The two scripts every message runs (MARK before its content, FINISH after it) take only
# its record as a key and name the fixed keys from the prefix, like the records found inside
# LEASE (one hash tag, one slot): that spares each call thirteen keys to send and parse.
_HEADER = """
local META, COUNTS, DELAYED, DONE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local LANES = {KEYS[5], KEYS[6], KEYS[7]}
local IDX = {queued = KEYS[8], leased = KEYS[9], sending = KEYS[10],
             delivered = KEYS[11], failed = KEYS[12], unknown = KEYS[13]}
"""
_SLIM_HEADER = """
local P = ARGV[1]
local META, COUNTS, DELAYED, DONE = P .. 'meta', P .. 'counts', P .. 'delayed', P .. 'done'
local LANES = {P .. 'lane:0', P .. 'lane:1', P .. 'lane:2'}
local IDX = {queued = P .. 'idx:queued', leased = P .. 'idx:leased',
             sending = P .. 'idx:sending', delivered = P .. 'idx:delivered',
             failed = P .. 'idx:failed', unknown = P .. 'idx:unknown'}
"""
assert _PRELUDE.startswith(_HEADER)


def _slim(script: str) -> str:
    body = script[len(_PRELUDE) :]
    assert body.count("KEYS[14]") == 1 and "KEYS[" not in body.replace("KEYS[14]", "")
    return _SLIM_HEADER + _PRELUDE[len(_HEADER) :] + body.replace("KEYS[14]", "KEYS[1]")


#: MARK and FINISH with the record as their only key (ARGV as in MARK and FINISH).
MARK_SLIM = _slim(MARK)
FINISH_SLIM = _slim(FINISH)
