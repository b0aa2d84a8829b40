"""The Lua scripts of the Redis coordination store (``redis_store``): each write to a run is one of them."""

# Every script that writes a run's hash or one of its satellite keys (steps hash, named lists, done list)
# first checks that the run's hash exists, and writes nothing when it is gone (expired, or never created):
# a write never recreates a key without an expiry. A satellite key expires in the given ttl, or when the run
# does if that is sooner (PTTL of the run; -1, a run with no expiry, leaves the ttl).

# HSET KEYS[1] ARGV[1] ARGV[2] unless one of the fields ARGV[5..] is set; 1 when it was set, -1 when the
# run's record is gone (expired): nothing is written then. When set and ARGV[3] is not empty, add ARGV[3] to
# the set KEYS[2] (a worker's held steps), which expires in ARGV[4] seconds; when not set, remove it from
# that set (held before the start guard by ``TAKE_STEP``: a step that does not start is not held).
SET_UNLESS = """
local function refused(outcome)
  if ARGV[3] ~= '' then redis.call('SREM', KEYS[2], ARGV[3]) end
  return outcome
end
if redis.call('EXISTS', KEYS[1]) == 0 then return refused(-1) end
for i = 5, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then return refused(0) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 1
"""

# HSET the field/value pairs ARGV[2..] on KEYS[1]; with ARGV[1] == '1', then read the whole record back
# (HGETALL, flat). nil when the run's record is gone: nothing is written then.
SET_FIELDS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
if ARGV[1] == '1' then return redis.call('HGETALL', KEYS[1]) end
return 1
"""

# HSETNX KEYS[1] ARGV[1] ARGV[2]: {1} for the one caller that set it, {0} when it was set already or the
# run's record is gone (nothing is written then). With a field name in ARGV[3], its value (HGET) follows.
# With a member in ARGV[4], the one that set it also holds that lease: ZADD to KEYS[2] (the leases) scored
# ARGV[5], which then expires in ARGV[6] seconds.
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, false} end
local won = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if won == 1 and ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
if ARGV[3] ~= '' then return {won, redis.call('HGET', KEYS[1], ARGV[3])} end
return {won, false}
"""

# CLAIM the field ARGV[1] of the run KEYS[1] (value '1'), then read the run's record and the block's
# envelopes KEYS[2] (both HGETALL, flat): {won, record, envelopes}. A gone run is not claimed. With a member
# in ARGV[2], the one that claims holds that lease (ZADD KEYS[3] ARGV[3], expiring in ARGV[4] seconds).
CLAIM_AND_READ = """
local won = 0
if redis.call('EXISTS', KEYS[1]) == 1 then won = redis.call('HSETNX', KEYS[1], ARGV[1], '1') end
if won == 1 and ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
return {won, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

# Take over the lease ARGV[1] in the leases KEYS[1] if it ran out (its score is at or before ARGV[2]): it is
# held until ARGV[3] then. 1 for the one caller that took it; 0 when it was renewed, taken or dropped.
TAKE_LEASE = """
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held or tonumber(held) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

# File a step's envelope (HSET KEYS[1] ARGV[1] ARGV[2]; with ARGV[4] == '1', HSETNX: an envelope already
# filed stays) and renew the expiry of the envelopes and of the run's record KEYS[2] (ARGV[3] seconds from
# now, if that is later: a run lives on while its steps report): how many steps are filed, and 1 when this
# envelope was written (0: another was filed already; this very envelope found there counts as written: the
# call sent again after its reply was lost). nil when the run's record is gone: nothing is written then.
RECORD_STEP = """
local left = redis.call('PTTL', KEYS[2])
if left == -2 then return false end
local wrote = 1
if ARGV[4] == '1' then
  wrote = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
  if wrote == 0 and redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then wrote = 1 end
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local ms = ARGV[3] * 1000
if left >= 0 and left < ms then redis.call('PEXPIRE', KEYS[2], ms) end
redis.call('PEXPIRE', KEYS[1], ms)
return {redis.call('HLEN', KEYS[1]), wrote}
"""

# RECORD_STEP (replacing) and read one field of the run (HGET KEYS[2] ARGV[4]): how many steps are filed,
# and that field (nil when unset); nil when the run's record is gone. With ARGV[5], remove it from the set
# KEYS[3] (its worker's held steps). On every step's path: keep it small.
FILE_STEP = """
local left = redis.call('PTTL', KEYS[2])
if left == -2 then return false end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local filed = redis.call('HLEN', KEYS[1])
local ms = ARGV[3] * 1000
if left >= 0 and left < ms then redis.call('PEXPIRE', KEYS[2], ms) end
redis.call('PEXPIRE', KEYS[1], ms)
if ARGV[5] then redis.call('SREM', KEYS[3], ARGV[5]) end
return {filed, redis.call('HGET', KEYS[2], ARGV[4])}
"""

# RPUSH the items ARGV[5..] onto the list KEYS[1] (ARGV[2] at a time) and renew its expiry (ARGV[1]
# seconds, at most the run's KEYS[2]); with a field name in ARGV[3], HSET it to ARGV[4] on the run (a mark
# that the items are there). nil when the run's record is gone: nothing is written then.
PUSH_ITEMS = """
local left = redis.call('PTTL', KEYS[2])
if left == -2 then return false end
local chunk = tonumber(ARGV[2])
for i = 5, #ARGV, chunk do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + chunk - 1, #ARGV)))
end
if #ARGV >= 5 then
  local ms = ARGV[1] * 1000
  if left >= 0 and left < ms then ms = left end
  redis.call('PEXPIRE', KEYS[1], ms)
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
return 1
"""

# HINCRBY KEYS[1] ARGV[1] ARGV[2] only when the run's record exists; nil when it is gone.
INCR_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
"""

# End a run: write the fields ARGV[3..] (pairs) and done=1 on KEYS[1], then replace the done list KEYS[2] by
# one item, which wakes every waiter; both expire in ARGV[1] seconds. With a field name in ARGV[2], only the
# first caller to set that field does it (1; later ones get 0 and write nothing). 0 when the run's record is
# gone: a run that expired cannot be finished, and nothing is written.
FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] ~= '' and redis.call('HSETNX', KEYS[1], ARGV[2], '1') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'done', '1', unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


# TAKE_STEP: add ARGV[2] to the held steps KEYS[3] (kept ARGV[3] seconds) unless the run KEYS[1] is gone, one
# of its fields ARGV[6..] is set (its block decided or settled, the run cancelled), its field ARGV[4] holds the
# text ARGV[5] (this delivery passed its start guard), or the step ARGV[1] is filed in KEYS[2]: a step taken
# by a pool process, held before its message is acknowledged. 1 when added, 0 when not.
TAKE_STEP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 6, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then return 0 end
end
local started = redis.call('HGET', KEYS[1], ARGV[4])
if started and string.find(started, ARGV[5], 1, true) then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""
