-- Ending of wrk's request script for a measured run: prints one line with
-- the figures compare.sh reads. Latencies are in microseconds.
function done(summary, latency, requests)
    local errors = summary.errors
    local socket_errors = errors.connect + errors.read + errors.write + errors.timeout
    io.write(string.format("LOAD_RESULT %d %d %.0f %.0f %d %d\n",
        summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99),
        errors.status, socket_errors))
end
