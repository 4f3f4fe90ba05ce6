-- odd_input.lua: input an MTA may pass on or a client may send, none of
-- which may crash filterd or put a broken field into the message.  The
-- SPF records it relies on are the zone of test_filterd_miltertest.py:
-- sender.test allows 192.0.2.0/24 and 2001:db8::/32, all else fails.
dofile(LIB)

-- Run MAIL/RCPT/EOM on an open connection; return the inserted fields.
local function transaction(conn, from, rcpt, want_mail)
	step("mail", mt.mailfrom(conn, from))
	expect(conn, want_mail, "MAIL FROM:" .. from)
	if want_mail ~= "c" then
		return nil
	end
	step("rcpt", mt.rcptto(conn, rcpt))
	expect(conn, "c", "RCPT TO:" .. rcpt)
	step("header", mt.header(conn, "Subject", "odd input"))
	step("eom", mt.eom(conn))
	expect(conn, "c", "end of message")
	return { rspf = mt.getheader(conn, "Received-SPF", 0),
	         ar = mt.getheader(conn, "Authentication-Results", 0) }
end

-- A field value must be one logical line: folds are "\n" + white space,
-- no CR, no bare LF, no line over 998 octets with its name.
local function check_safe(name, v)
	if v == nil then
		fail(name .. " missing")
	end
	if string.find(v, "\r", 1, true) then
		fail(name .. " contains CR: " .. v)
	end
	local first = true
	for line in string.gmatch(v .. "\n", "([^\n]*)\n") do
		local len = #line + (first and (#name + 2) or 0)
		if len > 998 then
			fail(name .. " has a line of " .. len .. " octets")
		end
		if not first and not string.match(line, "^[ \t]") then
			fail(name .. " has a bare line break: " .. v)
		end
		first = false
	end
end

local function contains(v, s, what)
	if v == nil or not string.find(v, s, 1, true) then
		fail(what .. ": expected " .. s .. " in " .. tostring(v))
	end
end

-- 1. No client address at all (unknown protocol family): not SPF-checked,
--    not trusted for relaying, no SPF fields.
local conn = open(SOCK)
step("conninfo", mt.conninfo(conn, "localhost", "unspec"))
step("helo", mt.helo(conn, "localhost"))
step("mail", mt.mailfrom(conn, "<alice@sender.test>"))
expect(conn, "c", "MAIL from a client without address")
step("rcpt", mt.rcptto(conn, "<carol@elsewhere.example>"))
expect(conn, "y", "relay from a client without address")
step("rcpt", mt.rcptto(conn, "<bob@example.test>"))
expect(conn, "c", "local RCPT from a client without address")
step("eom", mt.eom(conn))
expect(conn, "c", "end of message")
if mt.eom_check(conn, MT_HDRINSERT) then
	fail("SPF fields added for a client without address")
end
mt.disconnect(conn)

-- 2. IPv4-mapped IPv6 is the IPv4 client.
conn = open(SOCK)
step("conninfo", mt.conninfo(conn, "client.example", "::ffff:192.0.2.10"))
step("helo", mt.helo(conn, "mail.sender.test"))
local h = transaction(conn, "<alice@sender.test>", "<bob@example.test>", "c")
contains(h.rspf, "client-ip=192.0.2.10;", "mapped address")
contains(h.ar, "spf=pass", "mapped address")
mt.disconnect(conn)

-- 3. An IPv6 client with an address-literal HELO.
conn = open(SOCK)
step("conninfo", mt.conninfo(conn, "client.example", "2001:db8::25"))
step("helo", mt.helo(conn, "[IPv6:2001:db8::25]"))
h = transaction(conn, "<alice@sender.test>", "<bob@example.test>", "c")
contains(h.rspf, "client-ip=2001:db8::25;", "IPv6 client")
contains(h.ar, "spf=pass", "IPv6 client")
check_safe("Received-SPF", h.rspf)
mt.disconnect(conn)

-- 4. A HELO carrying CR, LF, quotes and semicolons, with the null sender
--    (whose identity is built from the HELO): the fields stay intact.
conn = open(SOCK)
step("conninfo", mt.conninfo(conn, "client.example", "198.51.100.7"))
step("helo", mt.helo(conn, "evil\r\nX-Injected: yes; spf=pass \"quoted\" (c)"))
h = transaction(conn, "<>", "<bob@example.test>", "c")
check_safe("Received-SPF", h.rspf)
check_safe("Authentication-Results", h.ar)
-- outside quoted-strings and comments only filterd's own structure is left
for _, v in ipairs({ h.ar, h.rspf }) do
	local bare = unquoted(v)
	if string.find(bare, "Injected", 1, true) or string.find(bare, "spf=pass", 1, true) then
		fail("HELO text escaped its quoting: " .. v)
	end
end
mt.disconnect(conn)

-- 5. Very long HELO and sender (a name without SPF record: none, tagged):
--    the fields are cut or folded, never over-long.
conn = open(SOCK)
step("conninfo", mt.conninfo(conn, "client.example", "198.51.100.7"))
local label = string.rep("a", 60)
local long = label .. "." .. label .. "." .. label .. ".sender.test"
step("helo", mt.helo(conn, long))
h = transaction(conn, "<" .. string.rep("b", 64) .. "@" .. long .. ">", "<bob@example.test>", "c")
check_safe("Received-SPF", h.rspf)
check_safe("Authentication-Results", h.ar)
mt.disconnect(conn)

-- 6. Odd MAIL FROM arguments on one connection, each answered, then the
--    transaction state starts clean: a rejected MAIL, an aborted one,
--    and finally a passing one that gets exactly its own fields.
conn = open(SOCK)
step("conninfo", mt.conninfo(conn, "client.example", "192.0.2.10"))
step("helo", mt.helo(conn, "mail.sender.test"))
for _, from in ipairs({ "<@relay.example:alice@sender.test>", "<\"a@b\"@sender.test>",
                        "not an address", "<alice@[192.0.2.1]>", "<a@b@c>", "" }) do
	step("mail", mt.mailfrom(conn, from))
	local got = letter(mt.getreply(conn))
	if got ~= "c" and got ~= "y" then
		fail("MAIL FROM:" .. from .. " answered '" .. got .. "'")
	end
	step("abort", mt.abort(conn))
end
conn2 = open(SOCK)
step("conninfo", mt.conninfo(conn2, "client.example", "203.0.113.9"))
step("helo", mt.helo(conn2, "mail.sender.test"))
step("mail", mt.mailfrom(conn2, "<alice@sender.test>"))
expect(conn2, "y", "MAIL FROM a forged sender")
h = transaction(conn2, "<alice@soft.sender.test>", "<bob@example.test>", "c")
contains(h.ar, "spf=softfail", "after a rejected MAIL")
if mt.getheader(conn2, "Received-SPF", 1) ~= nil then
	fail("fields of the rejected MAIL were added too")
end
mt.disconnect(conn2)
h = transaction(conn, "<alice@sender.test>", "<bob@example.test>", "c")
contains(h.ar, "spf=pass smtp.mailfrom=alice@sender.test", "after aborted MAILs")
mt.disconnect(conn)
