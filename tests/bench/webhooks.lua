-- wrk script for tests/bench: POST pre-signed webhooks from $REQUESTS, one
-- request per line "path<TAB>signature<TAB>body" (written by bench.py, which
-- signs every body with its org's secret: LuaJIT has no HMAC-SHA256 and
-- signing here would measure wrk). Each thread takes its own slice of the
-- file so no body is sent twice unless the slice runs out ("wrapped"), and
-- done() prints one line "BENCH {json}" that bench.py parses. RATE > 0 paces
-- each connection at RATE requests/s (the smoke run keeps its backlog small);
-- a paced wait is drawn uniformly from 0.5-1.5 times the given one, so the
-- connections do not send in lockstep waves (webhooks do not arrive so).
--
-- wrk starts a thread as soon as its init() has run, then runs the next
-- thread's init(), and starts its clock only after the last one: with a large
-- file the first thread would send for seconds that wrk neither times nor
-- shares with the others, and requests/s would count them in a too short
-- duration. So each thread's init() leaves a file $READY<tid> behind, and a
-- thread's first delay() waits (up to 120 s) until every thread's file is
-- there: all threads start sending together, when wrk's clock starts.
local ffi = require("ffi")
ffi.cdef [[ int usleep(unsigned int usec); ]]
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local reqs, idx = {}, 0
local pace_ms = 0
wrapped = 0

function init(args)
  local n = tonumber(os.getenv("WRK_THREADS") or "2")
  local k = 0
  for line in io.lines(os.getenv("REQUESTS")) do
    if k % n == tid then
      local path, sig, body = line:match("^([^\t]+)\t([^\t]+)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", path,
        {["Content-Type"] = "application/json", ["X-Zoho-Webhook-Signature"] = sig}, body)
    end
    k = k + 1
  end
  math.randomseed(1000 + tid)
  local ready = os.getenv("READY") or ""
  if ready ~= "" then
    local f = assert(io.open(ready .. tid, "w"))
    f:close()
  end
  local rate = tonumber(os.getenv("RATE") or "0")
  if rate > 0 then pace_ms = 1000 / rate end
  -- PACE_MS: the mean wait after each response (bench.py calibrates it)
  local pace = tonumber(os.getenv("PACE_MS") or "0")
  if pace > 0 then pace_ms = pace end
end

local started = false

local function wait_for_threads()
  local ready = os.getenv("READY") or ""
  local n = tonumber(os.getenv("WRK_THREADS") or "2")
  if ready == "" then return end
  for _ = 1, 120000 do
    local all = true
    for i = 0, n - 1 do
      local f = io.open(ready .. i, "r")
      if not f then
        all = false
        break
      end
      f:close()
    end
    if all then return end
    ffi.C.usleep(1000)
  end
end

function delay()
  if not started then
    started = true
    wait_for_threads()
  end
  if pace_ms > 0 then return pace_ms * (0.5 + math.random()) end
  return 0
end

function request()
  idx = idx + 1
  if idx > #reqs then
    idx = 1
    wrapped = wrapped + 1
  end
  return reqs[idx]
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + (t:get("wrapped") or 0) end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"ok":%d,"non200":%d,"errors":%d,"duration_s":%.6f,' ..
    '"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"wrapped":%d}\n',
    summary.requests, summary.requests - e.status - e.connect - e.read - e.write - e.timeout,
    e.status, e.connect + e.read + e.write + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, w))
end
