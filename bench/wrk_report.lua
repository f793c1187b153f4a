-- wrk script: POST a fixed JSON body and print one JSON line of results for bench/http_cached.py.
-- With WRK_QUESTIONS=n, each request asks one of n questions at random instead (bench/chaos_runtime.py:
-- several processes then read, from a shared Redis, what the others wrote); with WRK_QUESTIONS=new,
-- every request asks a question never asked before, so each one needs the LM.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("WRK_BODY") or '{"inputs": {"question": "What is DSPy?"}}'

local questions = os.getenv("WRK_QUESTIONS")
if questions == "new" then
  local prefix, counter = (os.getenv("WRK_PREFIX") or "") .. " " .. tostring(os.time()), 0
  request = function()
    counter = counter + 1
    return wrk.format(nil, nil, nil, string.format('{"input": "new %s %d"}', prefix, counter))
  end
elseif tonumber(questions or "0") > 0 then
  local n = tonumber(questions)
  request = function()
    return wrk.format(nil, nil, nil, string.format('{"input": "question %d"}', math.random(n)))
  end
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "errors": %d, "non_2xx": %d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
