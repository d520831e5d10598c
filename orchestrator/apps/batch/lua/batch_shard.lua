-- One shard's progress, or its end (orchestrator/apps/batch/batch_record.py).
--
-- KEYS[1] orch:batch:<id>
-- ARGV[1] shard index, ARGV[2] its record (JSON: state, completed, total,
--   errors, rate, worker, started_at, updated_at), ARGV[3] now (epoch
--   seconds), ARGV[4] keep (seconds), ARGV[5] (when the shard is done) its
--   part: the shard's results, kept here until the merge
--
-- Stores the record, then the batch's figures from all the records:
-- completed and errors are sums; rate is the sum over shards running and
-- heard from in the last STALE_S seconds; started_at the earliest start. A batch that is done is left
-- alone (a shard run again after the merge changes nothing); a failed one
-- runs again when one of its shards does (its dead letter retried).
--
-- Returns the batch's state after the call: "merging" when every shard is
-- done (the caller merges: exactly one call sees the last shard arrive, and
-- a retry of a shard whose merger died finds the merge still owed),
-- "running", "done", or "unknown" when the hash is gone.

local STALE_S = 10
local key, shard, now = KEYS[1], ARGV[1], tonumber(ARGV[3])
local state = redis.call('HGET', key, 'state')
if not state then return 'unknown' end
if state == 'done' then return state end

redis.call('HSET', key, 'shard:' .. shard, ARGV[2])
if ARGV[5] then redis.call('HSET', key, 'part:' .. shard, ARGV[5]) end

local shards = tonumber(redis.call('HGET', key, 'shards'))
local names = {}
for i = 0, shards - 1 do names[#names + 1] = 'shard:' .. i end
local completed, errors, rate, done = 0, 0, 0, 0
for _, raw in ipairs(redis.call('HMGET', key, unpack(names))) do
  if raw then
    local s = cjson.decode(raw)
    completed = completed + s.completed
    errors = errors + s.errors
    if s.state == 'done' then
      done = done + 1
    elseif s.state == 'running' and now - s.updated_at < STALE_S then
      rate = rate + s.rate
    end
  end
end

if done == shards then state = 'merging' else state = 'running' end
redis.call('HSET', key, 'state', state, 'completed', completed, 'errors', errors,
           'rate', string.format('%.3f', rate), 'shards_done', done, 'updated_at', ARGV[3])
local began = cjson.decode(ARGV[2]).started_at
local first = tonumber(redis.call('HGET', key, 'started_at'))
if not first or began < first then
  redis.call('HSET', key, 'started_at', string.format('%.3f', began))
end
redis.call('HINCRBY', key, 'updates', 1)
redis.call('EXPIRE', key, ARGV[4])
return state
