-- wrk script: POST the file named by BODY_FILE with the Content-Type in CONTENT_TYPE and the
-- extra header pairs in EXTRA_HEADERS ("Name: value|Name: value"). Counts non-2xx answers.
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

local failures = 0
function response(status, headers, body)
  if status < 200 or status > 299 then failures = failures + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("NON2XX %d\n", summary.errors.status))
end
