-- Ending of wrk's request script for the warm-up: counts the responses of
-- each status and prints them as "LOAD_STATUSES 200=N ...". A response
-- callback slows wrk down, so measured runs use run_summary.lua instead.
-- NOTE: only one wrk thread's counts are read, which is all of them
-- because compare.sh runs wrk with one thread.
statuses = {}
local load_thread

function setup(thread)
    load_thread = thread
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local counts = load_thread:get("statuses")
    local parts = {}
    for status, count in pairs(counts) do
        table.insert(parts, string.format("%d=%d", status, count))
    end
    table.sort(parts)
    io.write("LOAD_STATUSES " .. table.concat(parts, " ") .. "\n")
end
