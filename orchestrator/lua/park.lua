-- Take every entry pending on a consumer that is gone (orchestrator/reaper.py).
--
-- KEYS[1] stream, KEYS[2] its dead-letter stream, KEYS[3] the consumer's
--   in-hand marker (orch:inhand:<consumer>), KEYS[4] its completion mark
--   (orch:done:<consumer>, set once the worker acknowledged a job)
-- ARGV: group, from (dead consumer), to (parking consumer), max_attempts,
--       error (why the consumer is gone), failed_at (epoch seconds), dry_run,
--       uncharged ("1": the worker left because Redis or a dependency was
--       down, EX_TEMPFAIL: none of its deliveries was an attempt)
--
-- Which deliveries were attempts? A worker reading fresh entries does not
-- say which one it is running, so its death counts against each entry it
-- held (their count stays as Redis counted it). A worker running entries
-- that were delivered before (suspects) writes their ids to its in-hand
-- marker first: then only the entries in hand keep the delivery as an
-- attempt, and the others get it back (RETRYCOUNT count-1). Entries whose
-- counted attempts reach max_attempts go to the dead-letter stream with the
-- error and are acknowledged; the others are claimed by the parking
-- consumer (JUSTID keeps the count). The consumer is deleted once nothing
-- is pending on it (XGROUP DELCONSUMER would drop pending entries).
-- Returns {parked, dead_lettered, deleted (0/1), done (0/1), in_hand (0/1)}:
-- whether the worker had completed work, and whether it was running
-- entries it had marked in hand; the spawner's crash-loop rule reads both.
-- The marks are deleted with the consumer (a dry run leaves them).

local stream, dead, marker_key = KEYS[1], KEYS[2], KEYS[3]
local group, from, to = ARGV[1], ARGV[2], ARGV[3]
local max_attempts, err, failed_at = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local dry = ARGV[7] == '1'
local uncharged = ARGV[8] == '1'

-- No stream or group (never created, or deleted by an operator): nothing
-- can be pending on the consumer, so there is nothing to recover.
local groups = redis.pcall('XINFO', 'GROUPS', stream)
local done = redis.call('EXISTS', KEYS[4])
local marker = redis.call('GET', marker_key)
local holding = (marker and marker ~= '') and 1 or 0
local function forget_marks()
  if not dry then redis.call('DEL', marker_key, KEYS[4]) end
end
if type(groups) == 'table' and groups.err then forget_marks(); return {0, 0, 0, done, holding} end
local found = false
for _, g in ipairs(groups) do
  for i = 1, #g, 2 do
    if g[i] == 'name' and g[i + 1] == group then found = true end
  end
end
if not found then forget_marks(); return {0, 0, 0, done, holding} end

local in_hand = {}
if marker then
  for id in string.gmatch(marker, '%S+') do in_hand[id] = true end
end

local function dead_letter(id, count)
  local entry = redis.call('XRANGE', stream, id, id)
  if #entry > 0 then
    local fields = entry[1][2]
    for _, kv in ipairs({{'error', err}, {'attempts', tostring(count)},
                         {'failed_at', failed_at}, {'original_id', id}}) do
      table.insert(fields, kv[1]); table.insert(fields, kv[2])
    end
    redis.call('XADD', dead, '*', unpack(fields))
  end
  redis.call('XACK', stream, group, id)
end

local parked, killed, start = 0, 0, '-'
while true do
  local rows = redis.call('XPENDING', stream, group, start, '+', 200, from)
  if #rows == 0 then break end
  local keep = {'XCLAIM', stream, group, to, 0}  -- claimed as they are, in one call
  for _, row in ipairs(rows) do
    local id, count = row[1], tonumber(row[4])
    local attempted = (not uncharged) and ((not marker) or in_hand[id])
    if attempted and count >= max_attempts then
      if not dry then dead_letter(id, count) end
      killed = killed + 1
    else
      if attempted then
        table.insert(keep, id)
      elseif not dry then
        redis.call('XCLAIM', stream, group, to, 0, id, 'RETRYCOUNT',
                   math.max(count - 1, 0), 'JUSTID')
      end
      parked = parked + 1
    end
    start = '(' .. id
  end
  if #keep > 5 and not dry then
    table.insert(keep, 'JUSTID')  -- options follow the ids; JUSTID keeps the counts
    redis.call(unpack(keep))
  end
end

local deleted = 0
forget_marks()
if not dry then
  if #redis.call('XPENDING', stream, group, '-', '+', 1, from) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, from)
    deleted = 1
  end
end
return {parked, killed, deleted, done, holding}
