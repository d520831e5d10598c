-- A queue's rate limit (orchestrator/worker/runtime.py): take tokens from
-- its bucket, shared by every worker on every host.
--
-- KEYS[1] orch:rate:<queue>; ARGV: tokens per second, burst, tokens wanted
-- The bucket holds at most `burst` tokens and gains `per second` of them a
-- second, by Redis' own clock (one clock for every host). Returns {granted,
-- wait_ms}: the tokens taken now, and when the next one will be there if
-- fewer than wanted were (the caller sleeps that long: no spinning).

local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
local wait = 0
if granted < want then
  wait = math.ceil((1 - tokens) * 1000 / rate)
  redis.call('HSET', KEYS[1], 'throttled_until', string.format('%.3f', (now + wait) / 1000))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 60000)
return {granted, wait}
