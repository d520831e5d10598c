-- A worker's read of its own entries (orchestrator/worker/streamreads.py):
-- first, in the same round trip as its CLIENT ID; then whenever it looks at
-- its own pending list again.
--
-- KEYS[1] stream; ARGV: group, consumer, most own entries, most new entries,
--   most parked entries to take first, the parking consumer
-- Parked entries (given back by a worker, or a gone worker's) are older than
-- any undelivered one, so a worker about to read takes them first, oldest
-- first (JUSTID keeps their delivery counts, which its read then counts).
-- Then its own pending entries (handed to it, taken from the parking
-- consumer, or its own failures) with their delivery counts, or else new
-- ones.
-- Returns {own entries, {id, delivery count}..., new entries}; entries as
-- XREADGROUP gives them ({id, {field, value, ...}}).

local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local function entries(reply)
  if not reply or not reply[1] then return {} end
  return reply[1][2]
end

local take = tonumber(ARGV[5]) or 0
while take > 0 do  -- in chunks: unpack() has a limit
  local rows = redis.call('XPENDING', stream, group, '-', '+', math.min(take, 200), ARGV[6])
  if #rows == 0 then break end
  local claim = {'XCLAIM', stream, group, consumer, 0}
  for _, row in ipairs(rows) do table.insert(claim, row[1]) end
  table.insert(claim, 'JUSTID')
  redis.call(unpack(claim))
  take = take - #rows
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
