-- wrk script: POST the file named by BODY_FILE with the Content-Type in CONTENT_TYPE and the
-- extra header pairs in EXTRA_HEADERS ("Name: value|Name: value"). Prints the non-2xx count.
-- (No response() callback: wrk counts non-2xx itself, and a Lua callback per response would
-- slow the load generator down.)
local body_file = os.getenv("BODY_FILE")
local handle = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = handle:read("*a")
handle:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE")
local extra = os.getenv("EXTRA_HEADERS") or ""
for name, value in string.gmatch(extra, "([^:|]+):%s*([^|]+)") do
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  io.write(string.format("NON2XX %d\n", summary.errors.status))
end
