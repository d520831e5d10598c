-- Give parked entries to workers (orchestrator/reaper.py).
--
-- KEYS[1] stream
-- ARGV: group, from (parking consumer), then pairs of (consumer, limit)
-- Oldest entries first; JUSTID keeps delivery counts. The receiving worker
-- reads its own pending entries before new ones, so it runs them next.
-- Returns the number given to each consumer, in order.

local stream, group, from = KEYS[1], ARGV[1], ARGV[2]
local given = {}
for i = 3, #ARGV, 2 do
  local to, limit = ARGV[i], tonumber(ARGV[i + 1])
  local n = 0
  if limit > 0 then
    local rows = redis.call('XPENDING', stream, group, '-', '+', limit, from)
    for _, row in ipairs(rows) do
      redis.call('XCLAIM', stream, group, to, 0, row[1], 'JUSTID')
      n = n + 1
    end
  end
  table.insert(given, n)
end
return given
