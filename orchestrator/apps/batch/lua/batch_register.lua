-- Register a batch once and queue its shards (orchestrator/apps/batch/batch_record.py).
--
-- KEYS[1] orch:batch:<id>, KEYS[2] the batch queue's stream
-- ARGV[1] the batch's fields (a JSON object of strings), ARGV[2] keep
--   (seconds the hash outlives its last update), ARGV[3..] shard payloads,
--   each added to the stream as the field "payload"
-- One call, so a submitter (or a worker splitting a large job) that dies
-- half-way leaves nothing or everything, and a second call (the split job
-- run again) adds nothing. Returns 1 when registered now, 0 when the id was
-- taken.

local key, stream = KEYS[1], KEYS[2]
if redis.call('EXISTS', key) == 1 then return 0 end
local flat = {}
for name, value in pairs(cjson.decode(ARGV[1])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', key, unpack(flat))
redis.call('EXPIRE', key, ARGV[2])
for i = 3, #ARGV do
  redis.call('XADD', stream, '*', 'payload', ARGV[i])
end
return 1
