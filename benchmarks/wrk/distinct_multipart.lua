-- wrk script: POST multipart/form-data to the URL's path (/ingest) where every file of every request is
-- distinct content, across threads and connections, so the server stores (never deduplicates) each one.
--
--   wrk -t T -c C -d 600s --timeout 30s -s distinct_multipart.lua http://HOST:PORT/ingest \
--       -- files=1000 size=4096 requests=6 threads=T salt=0123456789abcdef
--
-- files:    files per request (1: "single", 1000: "batch");    size: bytes per file (>= the prefix, 43)
-- requests: ingest requests in all, split over the threads; each thread stops once its share is answered
--           (then wrk's own clock still runs to -d: benchmarks/wrkload.py sends SIGINT when every thread
--           has said so on stderr). 0: send until -d ends (requests still in flight then go uncounted).
-- threads:  wrk's -t, to split `requests`;   salt: 16 characters, new per run (else a rerun sends the
--           same files again to the same server).
--
-- A file is a fixed random template per thread whose first 43 bytes are overwritten by
-- "<salt> t<thread> r<request> f<file>\n", so a request costs one string.format per file and one
-- table.concat. The last line on stdout is "rhinobox-wrk <JSON>" (benchmarks/wrkload.py parses it).
-- wrk runs one Lua state per thread plus one for setup/done: done() reads each thread's counters with
-- thread:get. wrk 4.1 calls request() once on the first thread's state to check the request parses
-- (script_verify_request) and never sends it: that call gets a GET and counts nowhere.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } rhinobox_timespec;
int clock_gettime(int clock_id, rhinobox_timespec *tp);
]]

local CLOCK_MONOTONIC = 1 -- one clock for every thread, so spans compare across threads
local BOUNDARY = "rhinobox-wrk-5e1b7c2a"
local PREFIX_FORMAT = "%s t%04d r%010d f%06d\n"
local PREFIX_LEN = 16 + 6 + 12 + 8 + 1
local timespec = ffi.new("rhinobox_timespec")

local function now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
   return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

-- main state: the thread objects, in creation order (the first one's state is the verified one)

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
   thread:set("id", #threads)
end

-- thread states: the options, the request being built, and the counters done() collects

local budget, salt, pieces
files_per_request, file_size = nil, nil
local verifying = false
sent, answered, non_200, stored, duplicates, failed, unparsed = 0, 0, 0, 0, 0, 0, 0
first_at, last_at = nil, nil

local function options(args)
   local given = {}
   local i = 0
   while args[i] do
      local key, value = args[i]:match("^(%w+)=(.*)$")
      if key then
         given[key] = value
      elseif args[i] ~= "--" and not args[i]:match("^https?://") then -- wrk passes its URL first
         error("distinct_multipart.lua: expected key=value, got " .. args[i])
      end
      i = i + 1
   end
   return given
end

local function share(total, count, index)
   -- requests for thread `index` (1-based) of `count`: an even split, the first ones take the remainder
   local base = math.floor(total / count)
   return base + ((index <= total % count) and 1 or 0)
end

local function template(length, seed)
   math.randomseed(seed)
   local bytes = {}
   for i = 1, length do bytes[i] = string.char(math.random(0, 255)) end
   return table.concat(bytes)
end

local function part_head(index)
   return string.format(
      '--%s\r\nContent-Disposition: form-data; name="files"; filename="f%06d.bin"\r\n'
         .. "Content-Type: application/octet-stream\r\n\r\n",
      BOUNDARY, index)
end

local function request_head(content_length)
   local lines = { string.format("POST %s HTTP/1.1", wrk.path) }
   for name, value in pairs(wrk.headers) do
      local lower = name:lower()
      if lower ~= "content-type" and lower ~= "content-length" then
         lines[#lines + 1] = name .. ": " .. value
      end
   end
   lines[#lines + 1] = "Content-Type: multipart/form-data; boundary=" .. BOUNDARY
   lines[#lines + 1] = "Content-Length: " .. content_length
   return table.concat(lines, "\r\n") .. "\r\n\r\n"
end

function init(args)
   local given = options(args)
   files_per_request = tonumber(given.files or "1")
   file_size = tonumber(given.size or "4096")
   local files, size = files_per_request, file_size
   salt = given.salt or "0000000000000000"
   local total = tonumber(given.requests or "0")
   if #salt ~= 16 then error("distinct_multipart.lua: salt must be 16 characters") end
   if size < PREFIX_LEN then error("distinct_multipart.lua: size must be at least " .. PREFIX_LEN) end
   budget = total > 0 and share(total, tonumber(given.threads or "1"), id) or 0
   if total > 0 and budget == 0 then error("distinct_multipart.lua: fewer requests than threads") end
   verifying = id == 1

   local tail = template(size, id):sub(PREFIX_LEN + 1)
   local closing = "--" .. BOUNDARY .. "--\r\n"
   local length = #closing
   pieces = {}
   for f = 1, files do
      -- file f: its part head, its unique prefix (set per request), the template's rest, CRLF
      local head = part_head(f)
      pieces[4 * f - 2], pieces[4 * f - 1], pieces[4 * f], pieces[4 * f + 1] = head, "", tail, "\r\n"
      length = length + #head + size + 2
   end
   pieces[4 * files + 2] = closing
   pieces[1] = request_head(length)
end

function request()
   if verifying then
      verifying = false
      return wrk.format("GET", wrk.path)
   end
   if budget > 0 and sent >= budget then
      return "" -- this thread's share is sent: the connection stays idle until the thread stops
   end
   sent = sent + 1
   if not first_at then first_at = now() end
   for f = 1, files_per_request do
      local prefix = string.format(PREFIX_FORMAT, salt, id, sent, f)
      if #prefix ~= PREFIX_LEN then error("distinct_multipart.lua: a counter outgrew its prefix field") end
      pieces[4 * f - 1] = prefix
   end
   return table.concat(pieces)
end

function response(status, headers, body)
   answered = answered + 1
   last_at = now()
   if status ~= 200 then non_200 = non_200 + 1 end
   -- RhinoBox's answer ends with the counts; reading only its tail keeps a 1,000-file answer cheap.
   local s, d, f = body:sub(-160):match('"stored":%s*(%d+),%s*"duplicates":%s*(%d+),%s*"failed":%s*(%d+)}%s*$')
   if s then
      stored, duplicates, failed = stored + tonumber(s), duplicates + tonumber(d), failed + tonumber(f)
   else
      unparsed = unparsed + 1
   end
   if budget > 0 and answered == budget then -- once: the line below is counted per thread
      wrk.thread:stop()
      io.stderr:write(string.format("rhinobox-wrk: thread %d done\n", id))
      io.stderr:flush()
   end
end

-- main state again: sum the threads' counters and print one machine-readable line

function done(summary, latency, requests)
   local total = { sent = 0, answered = 0, non_200 = 0, stored = 0, duplicates = 0, failed = 0, unparsed = 0 }
   local first, last = math.huge, -math.huge
   for _, thread in ipairs(threads) do
      for name in pairs(total) do total[name] = total[name] + thread:get(name) end
      local started, ended = thread:get("first_at"), thread:get("last_at")
      if started and started < first then first = started end
      if ended and ended > last then last = ended end
   end
   local files, size = threads[1]:get("files_per_request"), threads[1]:get("file_size")
   local e = summary.errors
   io.write(string.format(
      'rhinobox-wrk {"sent": %d, "answered": %d, "files_per_request": %d, "file_size": %d,'
         .. ' "span_s": %.6f, "wrk_duration_s": %.6f, "non_200": %d, "stored": %d, "duplicates": %d,'
         .. ' "failed": %d, "unparsed": %d, "errors": {"connect": %d, "read": %d, "write": %d,'
         .. ' "status": %d, "timeout": %d}, "p50_ms": %.3f, "p99_ms": %.3f}\n',
      total.sent, total.answered, files, size,
      last > first and last - first or 0, summary.duration / 1e6, total.non_200, total.stored,
      total.duplicates, total.failed, total.unparsed, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000))
   io.flush()
end
