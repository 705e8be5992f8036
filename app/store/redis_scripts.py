"""The Lua scripts of the Redis store, and the command language of its commit.

Commit (COMMIT): one script applies one operation's change set to one batch, atomically.
KEYS are the batch's keys in redis_keys.BATCH_KEYS order (so a cluster routes it to the
batch's slot; no key is built at run time). ARGV[1] is the commit time (Unix seconds, as
Python's repr); ARGV[2] the commands, a JSON array of arrays of strings `[NAME, ARG…]` (one
argument, not hundreds: redis-py packs each argument in Python, which cost more than the
script's work), or "" to go on with the commands an earlier commit left waiting; ARGV[3] how
many jobs the set-based commands may edit in this script (0: all), so that moving 100,000
jobs never holds Redis, and every other batch, for more than a moment; ARGV[4] the lock token
the rest waits under and ARGV[5] that lock's time to live (ms):

  checks (all come first; the first that fails ends the script, nothing written):
    NEW                         the batch must not exist yet
    FREE                        no other operation holds the batch's lock
    LOCKED token                this operation holds it
    VERSION v                   the batch's version is still v
    QUIET d_open d_in_flight d_processed
                                rules.quiet holds on the current counts (FAST commits)
    JOB position status attempt the job is still as the operation read it
  writes:
    CALL command key_index arg… one Redis command on KEYS[key_index]
    EVENT json                  append an event, its id from the batch's `seq`
    MOVE kind_from all_from kind_to all_to status now revive ended batch_id
                                move every job of one zset to a status (set-based), editing
                                state strings, outbox, leases and ended attempts on the way
    DISPATCH kind_waiting all_waiting kind_queued all_queued limit now
                                queue the `limit` waiting jobs with the lowest positions
    ZRANGE_ADD key_index first last
                                add the positions first..last to a zset (jobs made in bulk)
    OUT_ADD first last attempt queue now
                                their messages in the outbox
    TTL seconds                 expire every key of the batch (> 0) or persist them (-1)
    UNLOCK                      release the batch's lock
It returns {1, field, delta, …}: the queue counts ("queue\\x1fstatus") the set-based
commands moved, for the shared gauges; {2, field, delta, …} when commands wait in the batch's
`pend` field (run the script again with ARGV[2] ""); or {0, reason} when a check failed.
"""
from __future__ import annotations

# The job state string's fields, 1-based in Lua (see redis_codec.STATE).
STATE_FIELDS = "1 queue, 2 status, 3 attempts, 4 attempt_base, 5 available_at, 6 lease, 7 lease_expires_at, 8 started_at, 9 worker, 10 queued_at, 11 finished_at"

COMMIT = r"""
local SEP = '\31'
local B, STATE, ERR, ATT, EV, LEASE, OUT = KEYS[1], KEYS[3], KEYS[4], KEYS[7], KEYS[8], KEYS[11], KEYS[12]
local now = ARGV[1]
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local moved = {}

local function split(s)
  local t, i, from = {}, 1, 1
  while true do
    local at = string.find(s, SEP, from, true)
    if not at then t[i] = string.sub(s, from); return t end
    t[i] = string.sub(s, from, at - 1)
    i, from = i + 1, at + 1
  end
end
local function join(t) return table.concat(t, SEP, 1, 11) end
local function count(queue, status, d)
  if status == 'queued' or status == 'running' then
    local k = queue .. SEP .. status
    moved[k] = (moved[k] or 0) + d
  end
end
local function null_or(s, quoted) if s == '' then return 'null' end if quoted then return cjson.encode(s) end return s end

local check = {}
function check.NEW() if redis.call('EXISTS', B) == 1 then return 'the batch exists' end end
function check.FREE()
  local lk = redis.call('HMGET', B, 'lk', 'lkx', 'pend')
  if lk[1] and lk[1] ~= '' and tonumber(lk[2]) > now_ms then return 'the batch is locked' end
  if lk[3] then return 'moves of an earlier operation are unfinished' end
end
function check.LOCKED(token) if redis.call('HGET', B, 'lk') ~= token then return 'the lock was lost' end end
function check.VERSION(v) if redis.call('HGET', B, 'v') ~= v then return 'the batch moved' end end
function check.QUIET(d_open, d_in_flight, d_processed)
  local c = redis.call('HMGET', B, 'st', 'er', 'jobs_waiting', 'jobs_queued', 'jobs_running',
                       'jobs_completed', 'jobs_failed', 'jobs_cancelled')
  if c[1] ~= 'running' or (c[2] and c[2] ~= '') then return 'not quiet' end
  local w, q, r = tonumber(c[3]), tonumber(c[4]), tonumber(c[5])
  local p = tonumber(c[6]) + tonumber(c[7]) + tonumber(c[8])
  local total = w + q + r + p
  if tonumber(d_in_flight) < 0 and w > 0 then return 'not quiet' end
  if w + q + r + tonumber(d_open) <= 0 then return 'not quiet' end
  if math.floor(10 * p / total) ~= math.floor(10 * (p + tonumber(d_processed)) / total) then return 'not quiet' end
end
function check.JOB(position, status, attempt)
  local s = redis.call('HGET', STATE, position)
  if not s then return 'a job is gone' end
  local f = split(s)
  if f[2] ~= status or f[3] ~= attempt then return 'a job moved' end
end

local write = {}
function write.CALL(args)
  redis.call(args[1], KEYS[tonumber(args[2])], unpack(args, 3))
end
function write.EVENT(args)
  local id = redis.call('HINCRBY', B, 'seq', 1)
  redis.call('ZADD', EV, id, id .. '\n' .. args[1])
end
-- MOVE and DISPATCH edit jobs CHUNK at a time: one HMGET, HSET, ZADD and ZREM per chunk
-- rather than per job, so that 100,000 jobs move in a fraction of a second and the script
-- never gets near Redis's busy threshold (other clients would get BUSY errors meanwhile).
local CHUNK = 1000
-- The jobs this script may still edit (ARGV[3]; 0: no limit). A set-based command that runs
-- out hands back the arguments that finish it; it and every command after it then wait in
-- the batch's `pend` field for the next script (see the loop at the end).
local budget = tonumber(ARGV[3] or '0')
local left = budget
local function take(n)  -- how many of n jobs to edit now
  if budget <= 0 then return n end
  return math.max(0, math.min(n, left))
end
local function spent(n) left = left - n end
local function call_if(cmd, key, args) if #args > 0 then redis.call(cmd, key, unpack(args)) end end
local function scores(ps)
  local t = {}
  for j, p in ipairs(ps) do t[2 * j - 1] = p; t[2 * j] = p end
  return t
end

function write.MOVE(a)
  local kind_from, all_from, kind_to, all_to = KEYS[tonumber(a[1])], KEYS[tonumber(a[2])], KEYS[tonumber(a[3])], KEYS[tonumber(a[4])]
  local to, at, revive, ended, batch_id = a[5], a[6], a[7] == '1', a[8], a[9]
  local finished = to == 'completed' or to == 'failed' or to == 'cancelled'
  local n = take(redis.call('ZCARD', kind_from))
  if n == 0 then
    if redis.call('ZCARD', kind_from) > 0 then return a end
    return nil
  end
  local all = redis.call('ZRANGE', kind_from, 0, n - 1)
  spent(#all)
  local batch_json = cjson.encode(batch_id)
  for first = 1, #all, CHUNK do
    local ps = {unpack(all, first, math.min(first + CHUNK - 1, #all))}
    local states = redis.call('HMGET', STATE, unpack(ps))
    local new_states, attempts, leases, outbox = {}, {}, {}, {}
    for j, p in ipairs(ps) do
      local f = split(states[j])
      local old = f[2]
      if old == 'running' then
        if ended ~= '' then
          attempts[#attempts + 1] = p .. '.' .. f[3]
          attempts[#attempts + 1] = '{"batch_id":' .. batch_json .. ',"position":' .. p ..
            ',"attempt":' .. f[3] .. ',"status":"' .. ended .. '","worker":' .. null_or(f[9], true) ..
            ',"error":null,"queued_at":' .. null_or(f[10]) .. ',"started_at":' .. null_or(f[8]) .. ',"finished_at":' .. at .. '}'
        end
        leases[#leases + 1] = p
      elseif old == 'queued' then
        outbox[#outbox + 1] = p .. SEP .. f[3] .. SEP .. f[1]
      end
      count(f[1], old, -1)
      count(f[1], to, 1)
      f[2], f[5], f[6], f[7], f[8], f[9] = to, '', '', '', '', ''
      if revive then
        f[4], f[11] = f[3], ''
      elseif finished then
        f[11] = at
      end
      new_states[2 * j - 1] = p
      new_states[2 * j] = join(f)
    end
    redis.call('HSET', STATE, unpack(new_states))
    call_if('HSET', ATT, attempts)
    call_if('ZREM', LEASE, leases)
    call_if('ZREM', OUT, outbox)
    if revive then redis.call('HDEL', ERR, unpack(ps)) end
    redis.call('ZREM', kind_from, unpack(ps))
    redis.call('ZREM', all_from, unpack(ps))
    local members = scores(ps)
    redis.call('ZADD', kind_to, unpack(members))
    redis.call('ZADD', all_to, unpack(members))
  end
  if redis.call('ZCARD', kind_from) > 0 then return a end
end
function write.DISPATCH(a)
  local kind_w, all_w, kind_q, all_q = KEYS[tonumber(a[1])], KEYS[tonumber(a[2])], KEYS[tonumber(a[3])], KEYS[tonumber(a[4])]
  local limit, at = tonumber(a[5]), a[6]
  if limit <= 0 then return nil end
  local n = take(limit)
  if n == 0 then return a end
  local all = redis.call('ZRANGE', kind_w, 0, n - 1)
  spent(#all)
  for first = 1, #all, CHUNK do
    local ps = {unpack(all, first, math.min(first + CHUNK - 1, #all))}
    local states = redis.call('HMGET', STATE, unpack(ps))
    local new_states, outbox = {}, {}
    for j, p in ipairs(ps) do
      local f = split(states[j])
      f[2], f[3], f[5], f[10] = 'queued', tostring(tonumber(f[3]) + 1), at, at
      f[6], f[7], f[8], f[9] = '', '', '', ''
      new_states[2 * j - 1] = p
      new_states[2 * j] = join(f)
      outbox[2 * j - 1] = at
      outbox[2 * j] = p .. SEP .. f[3] .. SEP .. f[1]
      count(f[1], 'queued', 1)
    end
    redis.call('HSET', STATE, unpack(new_states))
    redis.call('ZADD', OUT, unpack(outbox))
    redis.call('ZREM', kind_w, unpack(ps))
    redis.call('ZREM', all_w, unpack(ps))
    local members = scores(ps)
    redis.call('ZADD', kind_q, unpack(members))
    redis.call('ZADD', all_q, unpack(members))
  end
  if #all == n and n < limit then return {a[1], a[2], a[3], a[4], tostring(limit - n), at} end
end
function write.ZRANGE_ADD(a)
  local key, first, last = KEYS[tonumber(a[1])], tonumber(a[2]), tonumber(a[3])
  if last < first then return nil end
  local n = take(last - first + 1)
  if n == 0 then return a end
  spent(n)
  local rest = first + n <= last and {a[1], tostring(first + n), a[3]} or nil
  last = first + n - 1
  for from = first, last, 500 do
    local pairs_ = {}
    for p = from, math.min(from + 499, last) do
      pairs_[#pairs_ + 1] = p
      pairs_[#pairs_ + 1] = p
    end
    redis.call('ZADD', key, unpack(pairs_))
  end
  return rest
end
function write.OUT_ADD(a)
  local first, last, attempt, queue, at = tonumber(a[1]), tonumber(a[2]), a[3], a[4], a[5]
  if last < first then return nil end
  local n = take(last - first + 1)
  if n == 0 then return a end
  spent(n)
  local rest = first + n <= last and {tostring(first + n), a[2], attempt, queue, at} or nil
  last = first + n - 1
  for from = first, last, 500 do
    local pairs_ = {}
    for p = from, math.min(from + 499, last) do
      pairs_[#pairs_ + 1] = at
      pairs_[#pairs_ + 1] = p .. SEP .. attempt .. SEP .. queue
    end
    redis.call('ZADD', OUT, unpack(pairs_))
  end
  return rest
end
function write.TTL(args)
  local ttl = tonumber(args[1])
  for _, key in ipairs(KEYS) do
    if ttl > 0 then redis.call('EXPIRE', key, ttl) else redis.call('PERSIST', key) end
  end
end
function write.UNLOCK() redis.call('HDEL', B, 'lk', 'lkx') end

local commands
if ARGV[2] == '' then
  -- Go on with what an earlier commit left waiting (ARGV[4]: the caller's lock token).
  local pend = redis.call('HGET', B, 'pend')
  if not pend then return {1} end
  local lk = redis.call('HMGET', B, 'lk', 'lkx')
  if lk[1] and lk[1] ~= '' and lk[1] ~= ARGV[4] and tonumber(lk[2]) > now_ms then return {0, 'the batch is locked'} end
  commands = cjson.decode(pend)
else
  commands = cjson.decode(ARGV[2])
end
local waiting = nil
for _, command in ipairs(commands) do
  local name = command[1]
  if waiting then
    waiting[#waiting + 1] = command
  elseif check[name] then
    local failed = check[name](unpack(command, 2))
    if failed then return {0, failed} end
  else
    local rest = write[name]({unpack(command, 2)})
    if rest then waiting = {{name, unpack(rest)}} end
  end
end
local out = {1}
if waiting then
  -- The rest waits for the next script, under the caller's lock (taken over by whoever
  -- locks the batch after it expired: they finish it before anything else).
  out[1] = 2
  redis.call('HSET', B, 'pend', cjson.encode(waiting), 'lk', ARGV[4], 'lkx', now_ms + tonumber(ARGV[5]))
elseif ARGV[2] == '' then
  redis.call('HDEL', B, 'pend')
  if redis.call('HGET', B, 'lk') == ARGV[4] then redis.call('HDEL', B, 'lk', 'lkx') end
end
for k, d in pairs(moved) do
  if d ~= 0 then out[#out + 1] = k; out[#out + 1] = tostring(d) end
end
return out
"""

# Take a batch's lock and read it. KEYS[1] batch hash; ARGV token, ttl_ms.
# {1, HGETALL…} taken; {0, ms left} held by another operation; {-1} no such batch.
LOCK = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lk = redis.call('HMGET', KEYS[1], 'lk', 'lkx')
if lk[1] and lk[1] ~= '' and tonumber(lk[2]) > now then return {0, tonumber(lk[2]) - now} end
redis.call('HSET', KEYS[1], 'lk', ARGV[1], 'lkx', now + tonumber(ARGV[2]))
return {1, redis.call('HGETALL', KEYS[1])}
"""

# Release a lock this operation still holds. KEYS[1] batch hash; ARGV token.
UNLOCK = r"""
if redis.call('HGET', KEYS[1], 'lk') == ARGV[1] then redis.call('HDEL', KEYS[1], 'lk', 'lkx') return 1 end
return 0
"""

# A shared index's entry moves only if nobody moved it since it was read: another process
# may have just announced new work for that batch. KEYS[1] zset; ARGV member, score read,
# new score or "" (remove).
SETTLE_INDEX = r"""
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1]) else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
return 1
"""

# Take due webhooks and hide them from other senders for a while. KEYS[1] the index;
# ARGV now, limit, hidden until.
CLAIM_HOOKS = r"""
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], m) end
return due
"""

# Set many fields of one hash from one JSON object: KEYS[1] hash; ARGV[1] {"field": "value", …};
# ARGV[2], if given, a TTL for the hash in seconds. (One argument for thousands of fields:
# redis-py packs each argument in Python.)
HSET_JSON = r"""
local fields = {}
for k, v in pairs(cjson.decode(ARGV[1])) do
  fields[#fields + 1] = k
  fields[#fields + 1] = v
  if #fields >= 1000 then redis.call('HSET', KEYS[1], unpack(fields)); fields = {} end
end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
if ARGV[2] then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
