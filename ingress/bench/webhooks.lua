-- wrk script: POST pre-signed ~1 KB webhooks from requests.txt (gen.py),
-- round-robin from a per-thread offset. RATE (requests/s per connection) in
-- the environment paces each connection for latency-at-a-given-rate runs.
local reqs = {}
local idx = 0
local pace_ms = 0

function init(args)
  local file = os.getenv("REQUESTS") or "requests.txt"
  for line in io.lines(file) do
    local path, sig, body = line:match("^([^\t]+)\t([^\t]+)\t(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", path,
      {["Content-Type"] = "application/json", ["X-Zoho-Webhook-Signature"] = sig}, body)
  end
  idx = math.random(#reqs)
  local rate = tonumber(os.getenv("RATE") or "0")
  if rate > 0 then pace_ms = 1000 / rate end
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function delay()
  return pace_ms
end

-- No response(): with one, wrk parses every response's headers for it. wrk
-- itself counts answers other than 2xx/3xx (errors.status, printed below).

function done(summary, latency, requests)
  io.write(string.format("requests %d, errors: connect %d read %d write %d status %d timeout %d\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
  io.write(string.format("accepted/s %.0f  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
