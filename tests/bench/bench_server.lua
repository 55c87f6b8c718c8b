-- wrk script for tests/bench/bench_server.sh: POST the body in $BODY with Content-Type $CT
-- (and Inference-Header-Content-Length $HLEN when set) to the path given on the command
-- line; at the end print one JSON line with requests/s, p50/p99 latency and error counts.
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("CT") or "application/json"
local hlen = os.getenv("HLEN")
if hlen and hlen ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = hlen
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    '{"rps": %.2f, "p50_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f, "requests": %d, ' ..
    '"non2xx": %d, "socket_errors": %d}\n',
    summary.requests / secs, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.mean / 1e3, summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
