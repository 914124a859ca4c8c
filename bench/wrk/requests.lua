-- wrk script for bench/run.py: replays pre-built signed requests from a file.
--
--   wrk -t1 -c32 -d5s --latency -s bench/wrk/requests.lua URL -- REQUESTS_FILE NONCE [TOKENS_FILE]
--
-- Each line of REQUESTS_FILE is  path <TAB> headers <TAB> body,  headers being "Name: value"
-- pairs joined by \31 (unit separator). A body containing @@id@@ is a template: every request
-- gets a fresh message id there (NONCE-thread-counter, the counter in 12 digits), so the add-on's
-- de-duplication never short-cuts. Bodies without the mark are sent as they are (pre-signed Slack requests).
-- With TOKENS_FILE (lines  template-index <TAB> jwt,  index from 0), request n is line n: its
-- template, with @@jwt@@ in the headers replaced by that one-time JWT (the add-on accepts each
-- JWT once), built in init. Past the last line the pool starts over, and the add-on answers
-- those with 401.
-- done() prints one line "WRK_JSON {...}" with the counts, percentiles and latency histogram.

local marker = "@@id@@"
local jwt_marker = "@@jwt@@"
local ID_DIGITS = 12 -- message ids have one length, so a template's Content-Length is fixed
local id_format = "%0" .. ID_DIGITS .. "d"
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

-- ``s`` cut at every plain occurrence of ``mark``: table.concat(parts, x) puts x back in.
local function split(s, mark)
  local parts, start = {}, 1
  while true do
    local i, j = s:find(mark, start, true)
    if not i then
      parts[#parts + 1] = s:sub(start)
      return parts
    end
    parts[#parts + 1] = s:sub(start, i - 1)
    start = j + 1
  end
end

-- A template, formatted once: its head cut at the JWT mark, its body cut at the id marks.
-- A request is then two table.concat calls (the generator stays cheap: no gsub, no format),
-- and with a token pool it is built in init, once per token.
local function template(path, headers, body)
  local ids = split(body, marker)
  local sample = table.concat(ids, string.rep("x", #nonce + ID_DIGITS))
  local raw = wrk.format("POST", path, headers, sample)
  local head = raw:sub(1, #raw - #sample) -- wrk.format puts the body last
  return { head = split(head, jwt_marker), ids = ids }
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
        templates[#templates + 1] = template(path, headers, body)
      else
        fixed[#fixed + 1] = wrk.format("POST", path, headers, body)
      end
    end
  end
  if args[3] then
    -- One request per one-time JWT, built here: request() then only hands them out. With
    -- several wrk threads each builds its own (its ids carry the thread number).
    local n = 0
    for line in io.lines(args[3]) do
      local index, token = line:match("^(%d+)\t(.*)$")
      if index then
        n = n + 1
        local t = templates[tonumber(index) + 1]
        fixed[#fixed + 1] = table.concat(t.head, token) .. table.concat(t.ids, id_of(n))
      end
    end
  end
end

function id_of(n)
  return nonce .. string.format(id_format, n)
end

function request()
  counter = counter + 1
  if #fixed > 0 then
    return fixed[(counter - 1) % #fixed + 1]
  end
  local t = templates[(counter - 1) % #templates + 1]
  return table.concat(t.head, "") .. table.concat(t.ids, id_of(counter))
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
