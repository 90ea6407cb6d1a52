-- wrk script: POSTs one chat completion per request and prints a JSON summary line.
-- BENCH_BODY, BENCH_KEY and BENCH_PROVIDER come from the environment.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "")
-- Bare Envoy has no filter to pick the provider; the filter ignores this header.
wrk.headers["x-tollgate-provider"] = os.getenv("BENCH_PROVIDER") or "offline"

done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non_2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.timeout, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.mean))
end
