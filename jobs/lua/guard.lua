-- Exactly once per micro-batch of one query and its checkpoint (jobs/checkpoint.py).
-- Prepended to every sink script; the sink's own KEYS start at KEYS[2], its ARGV at ARGV[4].
-- KEYS[1]  the query's guard hash {query_id, batch, offsets}
-- ARGV[1]  the query id (kept in the checkpoint; a new checkpoint has a new one)
-- ARGV[2]  the batch id, or '' for a call outside any batch
-- ARGV[3]  the Kafka offsets the batch ends at (JSON from the checkpoint's offset log)
local function already_applied()
  if ARGV[2] == '' then return false end
  local applied = redis.call('HMGET', KEYS[1], 'query_id', 'batch')
  return applied[1] == ARGV[1] and applied[2] ~= false and tonumber(ARGV[2]) <= tonumber(applied[2])
end

local function remember_batch()
  if ARGV[2] ~= '' then
    redis.call('HSET', KEYS[1], 'query_id', ARGV[1], 'batch', ARGV[2], 'offsets', ARGV[3])
  end
end
