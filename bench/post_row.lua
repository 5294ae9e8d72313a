-- wrk script: POST the JSON body read from the file named by the first script argument.
-- Usage: wrk -s bench/post_row.lua URL/predict -- BODY_FILE
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local file = assert(io.open(args[1], "rb"), "wrk script argument: a file holding the request body")
  wrk.body = file:read("*a")
  file:close()
end
