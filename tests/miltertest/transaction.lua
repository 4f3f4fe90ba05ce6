-- transaction.lua: one SMTP transaction through filterd, checked at every
-- step: the verdict at MAIL, at each RCPT, and at end of message exactly
-- which header fields filterd inserted, deleted or left alone.
--
-- Parameters (miltertest -D NAME=VALUE):
--   LIB, SOCK            lib.lua, filterd's socket (miltertest syntax)
--   IP, HELO, FROM       client address ("unspec": none), HELO name, MAIL FROM
--   AUTH                 optional {auth_authen} macro at MAIL
--   EXPECT_MAIL          reply letter expected at MAIL ('c' or 'y')
--   RCPTS, EXPECT_RCPTS  recipients (space separated), one letter each
--   HDR1_NAME, HDR1_VALUE, HDR2_NAME, HDR2_VALUE
--                        the fields expected at the top; none if unset
--   FORGED               "1": the message carries an Authentication-Results
--                        field claiming filterd's authserv-id (MAIL_NAME),
--                        after a genuine one from another host
dofile(LIB)

local conn = open(SOCK)
step("conninfo", mt.conninfo(conn, "client.example", IP))
step("helo", mt.helo(conn, HELO))
if AUTH ~= nil then
	step("macro", mt.macro(conn, SMFIC_MAIL, "{auth_authen}", AUTH))
end
step("mail", mt.mailfrom(conn, FROM))
expect(conn, EXPECT_MAIL, "MAIL FROM:" .. FROM)
if EXPECT_MAIL ~= "c" then
	mt.disconnect(conn)
	return
end

local accepted = 0
for i, rcpt in ipairs(split(RCPTS)) do
	step("rcpt", mt.rcptto(conn, rcpt))
	local want = string.sub(EXPECT_RCPTS, i, i)
	expect(conn, want, "RCPT TO:" .. rcpt)
	if want == "c" then
		accepted = accepted + 1
	end
end
if accepted == 0 then
	mt.disconnect(conn)
	return
end

step("header", mt.header(conn, "Authentication-Results",
                         "elsewhere.example; spf=fail smtp.mailfrom=x@y.example"))
if FORGED == "1" then
	step("header", mt.header(conn, "Authentication-Results",
	                         MAIL_NAME .. "; spf=pass smtp.mailfrom=ceo@example.test"))
end
step("header", mt.header(conn, "From", "<" .. "someone@sender.test>"))
step("header", mt.header(conn, "Subject", "miltertest"))
step("eom", mt.eom(conn))
expect(conn, "c", "end of message")

for _, h in ipairs({ { HDR1_NAME, HDR1_VALUE }, { HDR2_NAME, HDR2_VALUE } }) do
	if h[1] ~= nil then
		if not mt.eom_check(conn, MT_HDRINSERT, h[1], h[2], 0) then
			local got = mt.getheader(conn, h[1], 0)
			fail(string.format("%s not inserted at the top as\n  %s\ngot\n  %s",
			                   h[1], h[2], tostring(got)))
		end
		if mt.getheader(conn, h[1], 1) ~= nil then
			fail(h[1] .. " inserted more than once")
		end
	end
end
if HDR1_NAME == nil and mt.eom_check(conn, MT_HDRINSERT) then
	fail("a header field was inserted: " .. tostring(mt.getheader(conn, "Received-SPF", 0)))
end
if mt.eom_check(conn, MT_HDRADD) then
	fail("a header field was appended instead of inserted at the top")
end
if FORGED == "1" then
	if not mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", 2) then
		fail("the forged Authentication-Results (index 2) was not deleted")
	end
end
if mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", 1) then
	fail("the other host's Authentication-Results (index 1) was deleted")
end
mt.disconnect(conn)
