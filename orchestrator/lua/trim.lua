-- Trims streams so Redis memory stays bounded (see orchestrator/retention.py).
--
-- KEYS: the streams. ARGV[i]: how many entries KEYS[i] keeps (a queue's
-- retention, a dead-letter cap); ARGV[#KEYS + 1]: the most entries counted
-- to decide how to trim (the cost bound).
-- Returns how many entries were removed from each stream, in order.
--
-- A stream keeps its newest ARGV[i] entries and every entry a consumer group
-- still needs: pending on one of its consumers, or not delivered to it yet
-- (after its last-delivered-id). The floor is the oldest such entry over all
-- groups; everything older is acknowledged by every group. When the newest
-- ARGV[i] entries hold the floor and all after it: XTRIM MAXLEN ARGV[i];
-- otherwise XTRIM MINID floor (all that any group needs stays). A stream no
-- group reads keeps its newest ARGV[i] (the spawner creates a queue's group
-- on its first probe, before any trim, so entries added before a spawner
-- ran are kept for it).
--
-- Cost: XLEN alone while a stream is within its retention; then per group
-- its XINFO row, XPENDING's summary and one XRANGE COUNT 1; the groups'
-- pending + lag tell when more than ARGV[i] entries are needed, otherwise
-- they are counted from the floor, at most min(ARGV[i], cost bound) + 1 of
-- them (past the bound, MINID floor: all that is needed stays, acknowledged
-- entries older than the floor go); the trim is O(entries removed).

local function below(a, b)  -- decimal strings without leading zeros
  if #a ~= #b then return #a < #b end
  return a < b
end

local function older(a, b)  -- stream ids "ms-seq"
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return below(am, bm) end
  return below(as, bs)
end

-- The oldest entry the group needs (nil: none), and how many entries from
-- it on there are at least (its pending ones plus its lag, where known).
local function needs(key, flat)
  local g = {}
  for i = 1, #flat, 2 do g[flat[i]] = flat[i + 1] end
  local lag = tonumber(g['lag']) or 0  -- Redis 7.0+, when valid
  local pending = tonumber(g['pending'])
  if pending > 0 then
    return redis.call('XPENDING', key, g['name'])[2], pending + lag
  end
  local first = redis.call('XRANGE', key, '(' .. g['last-delivered-id'], '+', 'COUNT', 1)
  if #first == 0 then return nil, 0 end
  return first[1][1], math.max(lag, 1)
end

local function trim(key, keep, count_cap)
  if redis.call('XLEN', key) <= keep then return 0 end
  local floor, at_least = nil, 0
  for _, flat in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local id, n = needs(key, flat)
    if id and (floor == nil or older(id, floor)) then floor = id end
    at_least = math.max(at_least, n)
  end
  if floor == nil then return redis.call('XTRIM', key, 'MAXLEN', keep) end
  local limit = math.min(keep, count_cap)
  if at_least <= limit then  -- else more than keep are needed, or too many to count
    at_least = #redis.call('XRANGE', key, floor, '+', 'COUNT', limit + 1)
  end
  if at_least > limit then return redis.call('XTRIM', key, 'MINID', floor) end
  return redis.call('XTRIM', key, 'MAXLEN', keep)
end

local count_cap = tonumber(ARGV[#KEYS + 1])
local removed = {}
for i, key in ipairs(KEYS) do
  removed[i] = trim(key, tonumber(ARGV[i]), count_cap)
end
return removed
