-- forged_ar.lua: Authentication-Results fields that claim filterd's
-- authserv-id (MAIL_NAME, any case, with or without a version or a
-- result) are deleted, by their index among the fields of that name;
-- those of other hosts, including look-alike ids, are kept (RFC 8601 §5).
-- The client is in relay_networks, so no DNS is involved.
dofile(LIB)

local conn = open(SOCK)
step("conninfo", mt.conninfo(conn, "client.example", "127.0.0.1"))
step("helo", mt.helo(conn, "localhost"))
step("mail", mt.mailfrom(conn, "<alice@sender.test>"))
expect(conn, "c", "MAIL")
step("rcpt", mt.rcptto(conn, "<bob@example.test>"))
expect(conn, "c", "RCPT")

local upper = string.upper(MAIL_NAME)
local fields = {
	{ "Authentication-Results", "elsewhere.example; spf=pass smtp.mailfrom=a@b.example", false },
	{ "Authentication-Results", upper .. "; spf=pass smtp.mailfrom=ceo@example.test", true },
	{ "authentication-results", MAIL_NAME .. " 1; dkim=pass header.d=example.test", true },
	{ "Authentication-Results", MAIL_NAME .. ".evil.example; spf=pass", false },
	{ "Received", "from x by y; Mon, 1 Jan 2024 00:00:00 +0000", nil },
	{ "Authentication-Results", "   " .. MAIL_NAME .. ";\r\n\tspf=pass smtp.mailfrom=x@example.test", true },
	{ "Authentication-Results", MAIL_NAME, true },
	{ "Authentication-Results", "x" .. MAIL_NAME .. "; spf=pass", false },
}
for _, f in ipairs(fields) do
	step("header", mt.header(conn, f[1], f[2]))
end
step("eom", mt.eom(conn))
expect(conn, "c", "end of message")

local idx = 0
for _, f in ipairs(fields) do
	if f[3] ~= nil then
		idx = idx + 1
		local deleted = mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", idx)
		if f[3] and not deleted then
			fail(string.format("forged field %d (%s) was kept", idx, f[2]))
		elseif not f[3] and deleted then
			fail(string.format("field %d (%s) was deleted", idx, f[2]))
		end
	end
end
if not mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results") then
	fail("filterd's own Authentication-Results was not inserted")
end
mt.disconnect(conn)
