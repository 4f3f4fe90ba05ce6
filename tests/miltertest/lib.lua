-- lib.lua: helpers shared by filterd's miltertest scripts
-- (loaded with dofile(LIB); the scripts get their parameters as -D globals).
-- Any failed check raises an error, which makes miltertest exit non-zero.

function fail(msg)
	-- miltertest does not always print the error of a failed script
	io.stderr:write("FAILED: " .. msg .. "\n")
	error(msg, 0)
end

-- A reply code as the letter libmilter sends ('c' continue, 'y' custom
-- reply, 'r' reject, 't' tempfail, 'a' accept).
function letter(code)
	if code == nil or code == 0 then
		return "none"
	end
	return string.char(math.floor(code))
end

-- Connect and negotiate explicitly: miltertest only learns which steps
-- the filter wants without a reply when the script negotiates itself.
function open(sock)
	local conn = mt.connect(sock)
	if conn == nil then
		fail("cannot connect to " .. sock)
	end
	local err = mt.negotiate(conn, nil, nil, nil)
	if err ~= nil then
		fail("negotiate: " .. err)
	end
	return conn
end

function expect(conn, want, what)
	local got = letter(mt.getreply(conn))
	if got ~= want then
		fail(string.format("%s: filterd replied '%s', expected '%s'", what, got, want))
	end
end

-- Call a milter step; a transport error is a failure too.
function step(what, err)
	if err ~= nil then
		fail(what .. ": " .. tostring(err))
	end
end

function split(s)
	local t = {}
	if s == nil then
		return t
	end
	for w in string.gmatch(s, "%S+") do
		t[#t + 1] = w
	end
	return t
end

-- A header field value with its quoted-strings and comments removed:
-- what is left is what a parser reads as structure.
function unquoted(v)
	local out, i, depth, inq = {}, 1, 0, false
	while i <= #v do
		local c = string.sub(v, i, i)
		if (inq or depth > 0) and c == "\\" then
			i = i + 1
		elseif inq then
			if c == '"' then
				inq = false
			end
		elseif c == '"' and depth == 0 then
			inq = true
		elseif c == "(" then
			depth = depth + 1
		elseif c == ")" and depth > 0 then
			depth = depth - 1
		elseif depth == 0 then
			out[#out + 1] = c
		end
		i = i + 1
	end
	return table.concat(out)
end
