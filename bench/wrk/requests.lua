-- wrk script for bench/run.py: replays pre-built signed requests from a file.
--
--   wrk -t1 -c32 -d5s --latency -s bench/wrk/requests.lua URL -- REQUESTS_FILE NONCE [TOKENS_FILE]
--
-- Each line of REQUESTS_FILE is  path <TAB> headers <TAB> body,  headers being "Name: value"
-- pairs joined by \31 (unit separator). A body containing @@id@@ is a template: every request
-- gets a fresh message id there (NONCE-thread-counter), so the add-on's de-duplication never
-- short-cuts. Bodies without the mark are sent as they are (pre-signed Slack requests).
-- With TOKENS_FILE (lines  template-index <TAB> jwt,  index from 0), request n uses line n: its
-- template, with @@jwt@@ in the headers replaced by that one-time JWT (the add-on accepts each
-- JWT once). Past the last line the pool starts over, and the add-on answers those with 401.
-- done() prints one line "WRK_JSON {...}" with the counts, percentiles and latency histogram.

local marker = "@@id@@"
local jwt_marker = "@@jwt@@"
local templates = {}
local tokens = {}
local fixed = {}
local counter = 0
local nonce = ""
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  nonce = (args[2] or "n") .. "-" .. tostring(tid or 0) .. "-"
  for line in io.lines(args[1]) do
    local path, head, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    if path then
      local headers = {}
      for name, value in head:gmatch("([^\31:]+): ([^\31]*)") do
        headers[name] = value
      end
      if body:find(marker, 1, true) then
        templates[#templates + 1] = { path, headers, body }
      else
        fixed[#fixed + 1] = wrk.format("POST", path, headers, body)
      end
    end
  end
  if args[3] then
    for line in io.lines(args[3]) do
      local index, token = line:match("^(%d+)\t(.*)$")
      if index then
        tokens[#tokens + 1] = { tonumber(index) + 1, token }
      end
    end
  end
end

local function with_token(headers, token)
  local filled = {}
  for name, value in pairs(headers) do
    filled[name] = (value:gsub(jwt_marker, token))
  end
  return filled
end

function request()
  counter = counter + 1
  if #fixed > 0 then
    return fixed[(counter - 1) % #fixed + 1]
  end
  if #tokens > 0 then
    local pick = tokens[(counter - 1) % #tokens + 1]
    local t = templates[pick[1]]
    local body = (t[3]:gsub(marker, nonce .. counter))
    return wrk.format("POST", t[1], with_token(t[2], pick[2]), body)
  end
  local t = templates[(counter - 1) % #templates + 1]
  local body = (t[3]:gsub(marker, nonce .. counter))
  return wrk.format("POST", t[1], t[2], body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local hist = {}
  for i = 1, #latency do
    local value, count = latency(i)
    if value == nil then break end
    if count > 0 then hist[#hist + 1] = string.format("[%d,%d]", value, count) end
  end
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"histogram":[%s]}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, table.concat(hist, ",")))
end
