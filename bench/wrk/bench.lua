-- wrk script used for every HTTP workload of the ferrogate benchmark.
--
-- Optional request shape from the environment, so one script serves GET and
-- POST workloads:
--   BENCH_METHOD  HTTP method (default GET)
--   BENCH_BODY    request body; when set, sent as application/json
--
-- At the end it prints one line "BENCH_JSON {...}" with the totals and
-- latency percentiles, so the harness parses numbers rather than wrk's
-- human-formatted text (which rounds and switches units).

local method = os.getenv("BENCH_METHOD")
local body = os.getenv("BENCH_BODY")

if method and method ~= "" then
  wrk.method = method
end
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

-- No response() callback on purpose: defining one makes wrk parse every
-- response in Lua, which slows the load generator on a 2-core machine.
-- wrk's own summary.errors.status counts responses with status >= 400.

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"timeout_errors":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
