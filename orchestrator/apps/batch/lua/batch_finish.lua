-- The merged results are written: the batch is done (orchestrator/apps/batch/batch_record.py).
--
-- KEYS[1] orch:batch:<id>
-- ARGV[1] the summary (a JSON object of strings: results, results_host,
--   ok, errors, matched, matches...), ARGV[2] now (epoch seconds), ARGV[3] keep
--
-- Marks the batch done once: returns 1 for the call that did, 0 when it was
-- done already (a second merger, after a shard ran twice) or is gone. The
-- parts, merged now, are dropped.

local key = KEYS[1]
local state = redis.call('HGET', key, 'state')
if not state or state == 'done' then return 0 end

local flat = {'state', 'done', 'finished_at', ARGV[2], 'updated_at', ARGV[2], 'rate', '0'}
for name, value in pairs(cjson.decode(ARGV[1])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', key, unpack(flat))
redis.call('HSET', key, 'completed', redis.call('HGET', key, 'total'))
redis.call('HDEL', key, 'error')

local shards = tonumber(redis.call('HGET', key, 'shards'))
local parts = {}
for i = 0, shards - 1 do parts[#parts + 1] = 'part:' .. i end
redis.call('HDEL', key, unpack(parts))
redis.call('HINCRBY', key, 'updates', 1)
redis.call('EXPIRE', key, ARGV[3])
return 1
