"""The Lua scripts of the event queues in Redis (chat/broker/redis_queues.py), each atomic.

Redis holds each queue (see ../../docs/protocol.md, "Several processes"):

- ``chat:q:<id>`` a hash: user, session, epoch, last (the last event id), acked, att (how many
  times a transport attached), closed (after session.ended); its TTL is the grace, refreshed
  while a transport is attached;
- ``chat:q:<id>:e`` a stream of the unacknowledged events, entry id ``<event id>-0``, so the
  ids clients acknowledge are the stream's own; acks trim it (XTRIM MINID);
- ``chat:uq:<user>`` and ``chat:sq:<session>`` sets of queue ids (fan-out, logout);
- ``chat:q-epoch`` the epoch of every queue: made anew when missing (Redis flushed);
- ``chat:cs:<conversation>`` the last seq whose message.new is in the queues,
  ``chat:ch:<conversation>`` the message.new events held until the seq before them is
  published (a sorted set by seq), ``chat:ch-due`` when each conversation's held ones go out
  whatever comes (a sorted set by time).
"""

from __future__ import annotations

from chat.broker.redis_seqs import KEEP_MS, PUBLISHED_PREFIX

HOLD_MS = 2000  # a message.new waits at most this for the seq before it (then: a gap)

_LIB = """
local P = 'chat:q:'
local function lose(q, set)
  local m = P .. q
  local us = redis.call('HMGET', m, 'user', 'session')
  redis.call('DEL', m, m .. ':e')
  if us[1] then redis.call('SREM', 'chat:uq:' .. us[1], q) end
  if us[2] then redis.call('SREM', 'chat:sq:' .. us[2], q) end
  if set then redis.call('SREM', set, q) end  -- the set it was found in (expired: no fields)
end
local function targets(mode, ids)
  local out, from = {}, {}
  for _, id in ipairs(ids) do
    local list, set = {id}, nil
    if mode == 'u' then set = 'chat:uq:' .. id
    elseif mode == 's' then set = 'chat:sq:' .. id end
    if set then list = redis.call('SMEMBERS', set) end
    for _, q in ipairs(list) do
      if not from[q] then from[q] = set or true; out[#out + 1] = q end
    end
  end
  return out, from
end
"""

# Each open is OPEN_ARGS (10, as the loop below reads them) arguments: user, session, queue_id,
# epoch, cursor, max_live, ttl_ms, new_id, new_epoch, origin. Opens made while one is in flight
# go together (chat/batching.py's GroupCommit), in order: two of one user in a call count one
# after the other. One reply each: {1 (resumed), epoch, last, attachments, events} | {0 (new),
# epoch, 0, 1, {}} | {2 (too many), epoch}.
OPEN_ARGS = 10
OPEN = (
    _LIB
    + """
local function open(A)
  local user, session, qid, want = A[1], A[2], A[3], A[4]
  local cursor, ttl = tonumber(A[5]), tonumber(A[7])
  local ep = redis.call('GET', 'chat:q-epoch')
  if not ep then ep = A[9]; redis.call('SET', 'chat:q-epoch', ep) end
  if qid ~= '' then
    local m = P .. qid
    local f = redis.call('HMGET', m, 'user', 'session', 'epoch', 'last', 'acked', 'closed')
    if f[1] == user and f[2] == session and f[3] == ep and (want == '' or want == ep)
        and not f[6] then
      local last, acked = tonumber(f[4]), tonumber(f[5])
      if acked <= cursor and cursor <= last then
        if cursor > acked then
          redis.call('HSET', m, 'acked', cursor)
          redis.call('XTRIM', m .. ':e', 'MINID', cursor + 1)
        end
        local att = redis.call('HINCRBY', m, 'att', 1)
        redis.call('PEXPIRE', m, ttl)
        redis.call('PEXPIRE', m .. ':e', ttl)
        redis.call('PUBLISH', 'chat:queues', 'a\\n' .. A[10] .. '\\n' .. qid .. '\\n' .. att)
        return {1, ep, last, att, redis.call('XRANGE', m .. ':e', cursor + 1, '+')}
      end
    end
  end
  local live = 0
  for _, q in ipairs(redis.call('SMEMBERS', 'chat:uq:' .. user)) do
    local g = redis.call('HMGET', P .. q, 'epoch', 'closed')
    if g[1] ~= ep then lose(q, 'chat:uq:' .. user)
    elseif not g[2] then live = live + 1 end  -- a logged-out queue only drains
  end
  if live >= tonumber(A[6]) then return {2, ep} end
  local m = P .. A[8]
  redis.call('HSET', m, 'user', user, 'session', session, 'epoch', ep, 'last', 0, 'acked', 0,
    'att', 1)
  redis.call('PEXPIRE', m, ttl)
  for _, set in ipairs({'chat:uq:' .. user, 'chat:sq:' .. session}) do
    redis.call('SADD', set, A[8])
    redis.call('PEXPIRE', set, ttl)
  end
  return {0, ep, 0, 1, {}}
end
local out = {}
for i = 0, #ARGV / 10 - 1 do
  local a = {}
  for j = 1, 10 do a[j] = ARGV[i * 10 + j] end
  out[#out + 1] = open(a)
end
return out
"""
)

# What appends an event to queues: mode (u: users, q: queues, s: sessions, whose queues close
# after it), max, event, ids (a table).
_PUSH_LIB = (
    _LIB
    + """
local function push(mode, max, ev, ids)
  local ep = redis.call('GET', 'chat:q-epoch')
  local done, closed = {}, {}
  local list, from = targets(mode, ids)
  for _, q in ipairs(list) do
    local m = P .. q
    local f = redis.call('HMGET', m, 'epoch', 'closed')
    if f[1] ~= ep then
      -- expired, or of an epoch past: nobody can resume it any more
      lose(q, from[q] ~= true and from[q] or nil)
    elseif not f[2] then
      local s = m .. ':e'
      if redis.call('XLEN', s) >= max then
        lose(q)
        closed[#closed + 1] = q
      else
        local n = redis.call('HINCRBY', m, 'last', 1)
        redis.call('XADD', s, n .. '-0', 'e', ev)
        redis.call('PEXPIRE', s, redis.call('PTTL', m))
        done[#done + 1] = q .. '=' .. n
        if mode == 's' then
          redis.call('HSET', m, 'closed', 1)
          closed[#closed + 1] = q
        end
      end
    end
  end
  if #done > 0 or #closed > 0 then
    redis.call('PUBLISH', 'chat:queues',
      'e\\n' .. table.concat(done, ',') .. '\\n' .. table.concat(closed, ',') .. '\\n' .. ev)
  end
  return #done
end
local function push_all(max, groups)
  local n = 0
  for _, g in ipairs(groups) do n = n + push(g[1], max, g[2], g[3]) end
  return n
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A conversation's held messages from the lowest on: those that follow `last` (all of them
-- when forced, over the gap); returns the deliveries made and the new last.
local function drain(conv, max, last, forced)
  local held, n = 'chat:ch:' .. conv, 0
  while true do
    local low = redis.call('ZRANGE', held, 0, 0, 'WITHSCORES')
    if #low == 0 then break end
    local seq = tonumber(low[2])
    if seq > last + 1 and not forced then break end
    for _, item in ipairs(redis.call('ZRANGEBYSCORE', held, seq, seq)) do
      n = n + push_all(max, cjson.decode(string.sub(item, 14)))
    end
    redis.call('ZREMRANGEBYSCORE', held, seq, seq)
    if seq > last then last = seq end
  end
  if redis.call('EXISTS', held) == 0 then redis.call('ZREM', 'chat:ch-due', conv) end
  return n, last
end
"""
)

# ARGV: max, conversation id ('' for an event of no seq), seq, then groups of mode, event, the
# number of ids, ids...: the deliveries of one event (a message's may be one per member).
# A message.new whose seq does not follow the last published for its conversation (another
# process stored the one before it and has not published it yet) is held, up to HOLD_MS,
# and goes out right after it. Returns the deliveries made, or -1: held.
PUSH = (
    _PUSH_LIB
    + """
local max, conv, seq = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local groups, i = {}, 4
while i <= #ARGV do
  local ids = {}
  for j = 1, tonumber(ARGV[i + 2]) do ids[j] = ARGV[i + 2 + j] end
  groups[#groups + 1] = {ARGV[i], ARGV[i + 1], ids}
  i = i + 3 + #ids
end
if conv == '' then return push_all(max, groups) end
local key = PUBLISHED .. conv
local last = redis.call('GET', key)  -- none: nothing known to wait for
if last and seq > tonumber(last) + 1 then
  local held = 'chat:ch:' .. conv
  local id = string.format('%012d ', redis.call('INCR', 'chat:ch-n'))
  redis.call('ZADD', held, seq, id .. cjson.encode(groups))
  redis.call('PEXPIRE', held, KEEP_MS)
  redis.call('ZADD', 'chat:ch-due', 'NX', now_ms() + HOLD_MS, conv)
  return -1
end
local n = push_all(max, groups)
last = math.max(tonumber(last or '0'), seq)
local more
more, last = drain(conv, max, last, false)
redis.call('SET', key, last, 'PX', KEEP_MS)
return n + more
"""
)

# ARGV: max. The conversations whose held messages waited HOLD_MS: their gap is a seq that
# will not come (its process died, or its insert failed), so they go out in seq order.
RELEASE = (
    _PUSH_LIB
    + """
local max, n = tonumber(ARGV[1]), 0
local due = redis.call('ZRANGEBYSCORE', 'chat:ch-due', '-inf', now_ms(), 'LIMIT', 0, 100)
for _, conv in ipairs(due) do
  local key = PUBLISHED .. conv
  local more, last = drain(conv, max, tonumber(redis.call('GET', key) or '0'), true)
  redis.call('ZREM', 'chat:ch-due', conv)
  redis.call('SET', key, last, 'PX', KEEP_MS)
  n = n + more
end
return n
"""
)

PUSH = PUSH.replace("KEEP_MS", str(KEEP_MS)).replace("HOLD_MS", str(HOLD_MS))
RELEASE = RELEASE.replace("KEEP_MS", str(KEEP_MS))
PUSH, RELEASE = (text.replace("PUBLISHED", repr(PUBLISHED_PREFIX)) for text in (PUSH, RELEASE))

# ARGV: mode (u, q, s as for PUSH, or * for every queue), ids...: drop those queues.
LOSE = (
    _LIB
    + """
if ARGV[1] == '*' then
  redis.call('DEL', 'chat:q-epoch')
  redis.call('PUBLISH', 'chat:queues', 'x')
  return 0
end
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
local lost = targets(ARGV[1], ids)
for _, q in ipairs(lost) do lose(q) end
if #lost > 0 then
  redis.call('PUBLISH', 'chat:queues', 'e\\n\\n' .. table.concat(lost, ',') .. '\\n{}')
end
return #lost
"""
)

# ARGV: pairs of queue id and acked id.
ACK = """
for i = 1, #ARGV, 2 do
  local m, n = 'chat:q:' .. ARGV[i], tonumber(ARGV[i + 1])
  local f = redis.call('HMGET', m, 'last', 'acked')
  if f[1] and n > tonumber(f[2]) and n <= tonumber(f[1]) then
    redis.call('HSET', m, 'acked', n)
    redis.call('XTRIM', m .. ':e', 'MINID', n + 1)
  end
end
return 0
"""

# ARGV: ttl_ms, queue ids: renew the TTL of those queues and of their sets; the ids of those
# that are gone (Redis flushed, or restarted empty).
REFRESH = """
local ttl = tonumber(ARGV[1])
local gone = {}
for i = 2, #ARGV do
  local m = 'chat:q:' .. ARGV[i]
  local us = redis.call('HMGET', m, 'user', 'session')
  if not us[1] then gone[#gone + 1] = ARGV[i] end
  if us[1] then
    redis.call('PEXPIRE', m, ttl)
    redis.call('PEXPIRE', m .. ':e', ttl)
    redis.call('PEXPIRE', 'chat:uq:' .. us[1], ttl)
    redis.call('PEXPIRE', 'chat:sq:' .. us[2], ttl)
  end
end
return gone
"""

# ARGV: queue id, epoch, after: {exists, closed, entries after `after`}.
READ = """
local m = 'chat:q:' .. ARGV[1]
local f = redis.call('HMGET', m, 'epoch', 'closed')
if f[1] ~= ARGV[2] then return {0, 0, {}} end
return {1, f[2] and 1 or 0, redis.call('XRANGE', m .. ':e', tonumber(ARGV[3]) + 1, '+')}
"""
