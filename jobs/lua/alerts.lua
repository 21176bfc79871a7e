-- The alerts sink (jobs/alerts_sink.py): one evaluation of the alert rules, all or nothing.
-- KEYS[1]     hash rule -> state record (JSON) of the rules pending or firing
-- KEYS[2]     time of the last evaluation applied (epoch ms)
-- KEYS[3]     list of state changes (AlertStateChanged JSON) not yet in Kafka
-- KEYS[4..8]  the alerts channel's stream keys (jobs/lua/envelope.lua, prepended)
-- ARGV[1] evaluation time (epoch ms)  ARGV[2] the channel's name
-- ARGV[3] JSON {rule: state record as JSON text} of the rules pending or firing now
-- ARGV[4] the channel's data (JSON text)  ARGV[5] JSON [AlertStateChanged JSON text, ...]
-- ARGV[6], ARGV[7] the channel history's size and age in seconds
-- Returns -1 when a later evaluation was applied before (nothing changed), else 1 when the
-- channel was published and 0 when its data was already the snapshot's.
local states, evaluated, outbox = KEYS[1], KEYS[2], KEYS[3]
local channel_keys = stream_keys(4)
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
--    envelope.lua builds the envelope with the data last, so it is everything after ',"data":' but the
--    final brace)
local head = ',"data":'
local snapshot = redis.call('GET', channel_keys[1])
if snapshot then
  local start = string.find(snapshot, head, 1, true)
  if start and string.sub(snapshot, start + #head, -2) == data then return 0 end
end
publish_envelope(channel_keys, channel, data, nil, history_bound(ARGV[6], ARGV[7]))
return 1
