-- Ending of wrk's request script for reload.sh: counts the responses of
-- each status and the 200 responses whose body is not expected_body, which
-- the script defines first. Prints "LOAD_STATUSES 200=N ...",
-- "LOAD_WRONG_BODIES N" and the LOAD_RESULT line of run_summary.lua.
-- NOTE: only one wrk thread's counts are read, which is all of them
-- because reload.sh runs wrk with one thread.
statuses = {}
wrong_bodies = 0
local load_thread

function setup(thread)
    load_thread = thread
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    if status == 200 and body ~= expected_body then
        wrong_bodies = wrong_bodies + 1
    end
end

function done(summary, latency, requests)
    local counts = load_thread:get("statuses")
    local parts = {}
    for status, count in pairs(counts) do
        table.insert(parts, string.format("%d=%d", status, count))
    end
    table.sort(parts)
    io.write("LOAD_STATUSES " .. table.concat(parts, " ") .. "\n")
    io.write(string.format("LOAD_WRONG_BODIES %d\n", load_thread:get("wrong_bodies")))

    local errors = summary.errors
    local socket_errors = errors.connect + errors.read + errors.write + errors.timeout
    io.write(string.format("LOAD_RESULT %d %d %.0f %.0f %d %d\n",
        summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99),
        errors.status, socket_errors))
end
