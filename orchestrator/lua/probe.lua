-- One round trip for the depth of every queue (see orchestrator/queues.py).
--
-- ARGV[1]: JSON list of probes, each {"kind": "stream"|"rq", "cap": N,
--   "control": c, "rate": r, "slots": s, "hosts": h} plus
--   stream: {"key": i, "dead": j, "group": name}   (i, j, c, r, s index KEYS)
--   rq:     {"key": i, "wip": j, "failed": k}
-- Returns a JSON list of results in the same order.
--
-- A missing stream or group is created (MKSTREAM, from id 0 so entries
-- added before the group existed are not skipped). The lag of a group is
-- Redis' own "lag" field where it exists (7.0+) and is valid; otherwise
-- (6.2, or after deletions) the entries after last-delivered-id are
-- counted, up to "cap", and "exact" says whether the cap was hit.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function id_ms(id)
  return tonumber(string.match(id, '^(%d+)'))
end

local function find_group(key, group)
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  if type(groups) == 'table' and groups.err == nil then
    for _, g in ipairs(groups) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == group then return info end
    end
  end
  return nil
end

local function probe_stream(p, now)
  local key, group, cap = KEYS[p.key], p.group, p.cap
  local info = find_group(key, group)
  local created = false
  if info == nil then
    redis.pcall('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
    info = find_group(key, group)
    created = true
  end
  local last = info['last-delivered-id']
  local lag, exact = info['lag'], true
  local first_new = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 1)
  if not lag then
    if #first_new == 0 then
      lag = 0
    else
      lag = #redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', cap)
      exact = lag < cap
    end
  end
  local oldest = nil
  if #first_new > 0 then oldest = id_ms(first_new[1][1]) end
  local pend = redis.call('XPENDING', key, group)
  local consumers = {}
  if pend[4] then
    for _, c in ipairs(pend[4]) do consumers[c[1]] = tonumber(c[2]) end
    local oldest_pending = id_ms(pend[2])
    if oldest == nil or oldest_pending < oldest then oldest = oldest_pending end
  end
  local tail = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  return {
    kind = 'stream', lag = lag, exact = exact, pending = tonumber(pend[1]),
    consumers = consumers, dead = redis.call('XLEN', KEYS[p.dead]),
    oldest_age_ms = oldest and math.max(0, now - oldest) or -1,
    last_id = tail[1] and tail[1][1] or '0-0', created = created,
  }
end

local function probe_rq(p)
  return {
    kind = 'rq', lag = redis.call('LLEN', KEYS[p.key]), exact = true,
    pending = redis.call('ZCARD', KEYS[p.wip]), consumers = {},
    dead = redis.call('ZCARD', KEYS[p.failed]), oldest_age_ms = -1,
    last_id = '0-0', created = false,
  }
end

-- What operators and the other hosts say about the queue: its control hash
-- (paused, draining, scale), whether its rate limit holds it back, and how
-- many of its global slots are taken.
local function shared_state(p, result, now)
  local control = {}
  local flat = redis.call('HGETALL', KEYS[p.control])
  for i = 1, #flat, 2 do control[flat[i]] = flat[i + 1] end
  result.control = control
  local until_s = tonumber(redis.call('HGET', KEYS[p.rate], 'throttled_until') or '0')
  result.throttled = until_s * 1000 > now
  local taken, flat_slots = 0, redis.call('HGETALL', KEYS[p.slots])
  for i = 2, #flat_slots, 2 do  -- a slot is held while its host's heartbeat lives
    local expiry = redis.call('ZSCORE', KEYS[p.hosts], flat_slots[i])
    if expiry and tonumber(expiry) * 1000 > now then taken = taken + 1 end
  end
  result.slots = taken
  return result
end

local probes = cjson.decode(ARGV[1])
local now = now_ms()
local out = {}
for i, p in ipairs(probes) do
  local result
  if p.kind == 'stream' then result = probe_stream(p, now) else result = probe_rq(p) end
  out[i] = shared_state(p, result, now)
end
return cjson.encode(out)
