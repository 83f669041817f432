-- wrk script: replays pre-signed requests written by bench/wrk.py (wrk's Lua has no HMAC).
-- Usage: wrk ... -s bench/sign.lua URL -- REQUESTS_FILE THREADS
-- Each thread takes every THREADS-th record, so no event id is sent by two threads. When a
-- thread runs out it starts over (its ids are then duplicates); done() prints how often.
--
-- Record format: method \n path \n header-count \n (name \n value \n)* body-length \n body \n

local records = {}
local index = 0
local threads = {}
local started = 0
wrapped = 0

function setup(thread)
  thread:set("tid", started)
  started = started + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  local nthreads = tonumber(args[2]) or 1
  local f = assert(io.open(path, "rb"))
  local i = 0
  while true do
    local method = f:read("*l")
    if method == nil or method == "" then break end
    local target = f:read("*l")
    local count = tonumber(f:read("*l"))
    local headers = {}
    for _ = 1, count do
      local name = f:read("*l")
      headers[name] = f:read("*l")
    end
    local body = f:read(tonumber(f:read("*l")))
    f:read("*l")
    if i % nthreads == tid then
      table.insert(records, wrk.format(method, target, headers, body))
    end
    i = i + 1
  end
  f:close()
end

function request()
  index = index + 1
  if index > #records then
    index = 1
    wrapped = wrapped + 1
  end
  return records[index]
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + (thread:get("wrapped") or 0)
  end
  io.write(string.format("bench-wrapped: %d\n", total))
end
