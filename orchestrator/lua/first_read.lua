-- A worker's first read (orchestrator/worker/runtime.py), in the same round
-- trip as its CLIENT ID: its own pending entries (handed to it by the
-- spawner) with their delivery counts, or else new ones.
--
-- KEYS[1] stream; ARGV: group, consumer, most own entries, most new entries
-- Returns {own entries, {id, delivery count}..., new entries}; entries as
-- XREADGROUP gives them ({id, {field, value, ...}}).

local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local function entries(reply)
  if not reply or not reply[1] then return {} end
  return reply[1][2]
end

local own = entries(redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', ARGV[3],
                                'STREAMS', stream, '0'))
local counts, fresh = {}, {}
if #own > 0 then
  local rows = redis.call('XPENDING', stream, group, '-', '+', #own * 2, consumer)
  for _, row in ipairs(rows) do table.insert(counts, {row[1], row[4]}) end
elseif tonumber(ARGV[4]) > 0 then  -- 0: a draining worker takes nothing new
  fresh = entries(redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', ARGV[4],
                             'STREAMS', stream, '>'))
end
return {own, counts, fresh}
