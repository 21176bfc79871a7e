-- The alerts sink (jobs/alerts_sink.py): one evaluation of the alert rules, all or nothing.
-- KEYS[1]     hash rule -> state record (JSON) of the rules pending or firing
-- KEYS[2]     time of the last evaluation applied (epoch ms)
-- KEYS[3]     list of state changes (AlertStateChanged JSON) not yet in Kafka
-- KEYS[4..6]  snapshot key, live channel, seq key of the alerts channel
-- ARGV[1] evaluation time (epoch ms)  ARGV[2] the channel's name
-- ARGV[3] JSON {rule: state record as JSON text} of the rules pending or firing now
-- ARGV[4] the channel's data (JSON text)  ARGV[5] JSON [AlertStateChanged JSON text, ...]
-- Returns -1 when a later evaluation was applied before (nothing changed), else 1 when the
-- channel was published and 0 when its data was already the snapshot's.
local states, evaluated, outbox = KEYS[1], KEYS[2], KEYS[3]
local snapshot_key, live, seq = KEYS[4], KEYS[5], KEYS[6]
local at, channel, data = ARGV[1], ARGV[2], ARGV[4]

local last = redis.call('GET', evaluated)
if last and tonumber(at) < tonumber(last) then return -1 end
redis.call('SET', evaluated, at)

-- 1. the rules' states replace the stored ones; state changes queue for Kafka
redis.call('DEL', states)
for rule, record in pairs(cjson.decode(ARGV[3])) do
  redis.call('HSET', states, rule, record)
end
for _, change in ipairs(cjson.decode(ARGV[5])) do
  redis.call('RPUSH', outbox, change)
end

-- 2. publish the channel when its data differs from the snapshot's (compared as text:
--    the envelope is built here, so the data is everything after ',"data":' but the final brace)
local head = ',"data":'
local snapshot = redis.call('GET', snapshot_key)
if snapshot then
  local start = string.find(snapshot, head, 1, true)
  if start and string.sub(snapshot, start + #head, -2) == data then return 0 end
end
local text = '{"channel":' .. cjson.encode(channel) .. ',"seq":'
  .. string.format('%d', redis.call('INCR', seq)) .. head .. data .. '}'
redis.call('SET', snapshot_key, text)
redis.call('PUBLISH', live, text)
return 1
