-- wrk script of benches/serve.sh: POSTs the JSON body in $WRK_BODY to the
-- URL wrk is given, and at the end prints one machine-readable line of
-- latency percentiles (microseconds, as wrk records them) and counts.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("WRK_BODY") or error("set WRK_BODY to the request's JSON body")

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "STATS p50_us=%d p99_us=%d requests=%d duration_us=%d non_2xx=%d socket_errors=%d\n",
      latency:percentile(50), latency:percentile(99), summary.requests, summary.duration,
      e.status, e.connect + e.read + e.write + e.timeout))
end
