-- A queue's global slots (orchestrator/slots.py): at most global_max_concurrent
-- workers of the queue across every spawner on the Redis.
--
-- KEYS[1] orch:slots:<queue> (consumer -> host), KEYS[2] orch:hosts (host ->
--   heartbeat expiry), KEYS[3] orch:demand:<queue> (host -> workers wanted)
-- ARGV: mode ("take" | "adopt" | "release"), host, global max, now (epoch s),
--   then the consumers
-- A slot is held while its host's heartbeat lives: a dead host's slots are
-- freed here, once its heartbeat has expired, never before. "take" grants a
-- slot per consumer while the queue is under its global max and this host
-- under its fair share (the max over the hosts that want slots), or no
-- other host wants one; "adopt" makes the given consumers this host's slots
-- whatever the count (workers that run already: adopted after a restart)
-- and frees its others (workers gone with a killed spawner of this host
-- name: no slot leaks); "release" frees them.
-- Returns the consumers granted (take, adopt) or freed (release).

local slots, hosts, demand = KEYS[1], KEYS[2], KEYS[3]
local mode, host, max, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])

if mode == 'release' then
  local freed = 0
  for i = 5, #ARGV do freed = freed + redis.call('HDEL', slots, ARGV[i]) end
  return freed
end

local function alive(h)
  local expiry = redis.call('ZSCORE', hosts, h)
  return expiry and tonumber(expiry) > now
end

local adopted = {}
if mode == 'adopt' then
  for i = 5, #ARGV do adopted[ARGV[i]] = true end
end

local held, mine, by_host = 0, 0, {}
local flat = redis.call('HGETALL', slots)
for i = 1, #flat, 2 do
  local owner = flat[i + 1]
  local gone = mode == 'adopt' and owner == host and not adopted[flat[i]]
  if not gone and (owner == host or alive(owner)) then
    held = held + 1
    by_host[owner] = (by_host[owner] or 0) + 1
    if owner == host then mine = mine + 1 end
  else
    redis.call('HDEL', slots, flat[i])  -- its host (or its worker) is dead: the slot is free
  end
end

local wanting, others_waiting = 1, false
local wants = redis.call('HGETALL', demand)
for i = 1, #wants, 2 do
  local h, n = wants[i], tonumber(wants[i + 1])
  if h ~= host and n > 0 and alive(h) then
    wanting = wanting + 1
    if n > (by_host[h] or 0) then others_waiting = true end
  end
end
local fair = math.ceil(max / wanting)

local granted = 0
for i = 5, #ARGV do
  local ok = mode == 'adopt' or (held < max and (mine < fair or not others_waiting))
  if not ok then break end
  redis.call('HSET', slots, ARGV[i], host)
  held, mine, granted = held + 1, mine + 1, granted + 1
end
return granted
