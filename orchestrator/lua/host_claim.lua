-- One host name, one spawner (orchestrator/hostclaim.py).
--
-- KEYS[1] orch:hosts (host -> heartbeat expiry), KEYS[2] orch:host:<host>
--   (the record of the spawner holding the name: JSON with its instance id)
-- ARGV[1] mode: "claim" or "release"; ARGV[2] host; ARGV[3] our record
-- claim:   ARGV[4] the instance we may replace ("" for none: a live
--          holder's record must be exactly that one), ARGV[5] now,
--          ARGV[6] our heartbeat expiry (epoch seconds)
--          Returns false when the name is ours now, else the live holder's
--          record: the name is taken.
-- release: drop the record and heartbeat if they are still ours.

local hosts, record_key = KEYS[1], KEYS[2]
local mode, host, ours = ARGV[1], ARGV[2], ARGV[3]
local holder = redis.call('GET', record_key)

if mode == 'release' then
  if holder == ours then
    redis.call('DEL', record_key)
    redis.call('ZREM', hosts, host)
  end
  return false
end

local replaceable, now, expiry = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local score = redis.call('ZSCORE', hosts, host)
if holder and holder ~= ours and score and tonumber(score) > now then
  local ok, h = pcall(cjson.decode, holder)
  if not ok or type(h) ~= 'table' or h.instance ~= replaceable then return holder end
end
redis.call('SET', record_key, ours)
redis.call('ZADD', hosts, expiry, host)
return false
