-- A batch that cannot finish: a job rejected, or a shard out of attempts
-- (orchestrator/apps/batch/batch_record.py).
--
-- KEYS[1] orch:batch:<id>
-- ARGV[1] the batch's fields if it is not registered yet (a JSON object of
--   strings), ARGV[2] the error, ARGV[3] now (epoch seconds), ARGV[4] keep
--
-- A batch that is done stays done. Returns 1 when marked failed, else 0.

local key = KEYS[1]
local state = redis.call('HGET', key, 'state')
if state == 'done' then return 0 end
for name, value in pairs(cjson.decode(ARGV[1])) do
  redis.call('HSETNX', key, name, value)
end
redis.call('HSET', key, 'state', 'failed', 'error', ARGV[2], 'finished_at', ARGV[3],
           'updated_at', ARGV[3], 'rate', '0')
redis.call('HINCRBY', key, 'updates', 1)
redis.call('EXPIRE', key, ARGV[4])
return 1
