-- negotiate.lua: filterd asks only for what it uses.  No body, no
-- end-of-header, no unknown commands; no reply expected for connect,
-- HELO and headers (an MTA never waits on those); replies at MAIL, RCPT,
-- DATA (so that over TCP an MTA never sends two packets in a row into a
-- delayed ACK) and end of message; it may add and change headers and
-- nothing else.
dofile(LIB)

local conn = open(SOCK)
local wanted = {
	{ "SMFIP_NR_CONN", SMFIP_NR_CONN }, { "SMFIP_NR_HELO", SMFIP_NR_HELO },
	{ "SMFIP_NR_HDR", SMFIP_NR_HDR }, { "SMFIP_NOBODY", SMFIP_NOBODY },
	{ "SMFIP_NOEOH", SMFIP_NOEOH }, { "SMFIP_NOUNKNOWN", SMFIP_NOUNKNOWN },
}
local unwanted = {
	{ "SMFIP_NOCONNECT", SMFIP_NOCONNECT }, { "SMFIP_NOHELO", SMFIP_NOHELO },
	{ "SMFIP_NOMAIL", SMFIP_NOMAIL }, { "SMFIP_NORCPT", SMFIP_NORCPT },
	{ "SMFIP_NOHDRS", SMFIP_NOHDRS }, { "SMFIP_NR_MAIL", SMFIP_NR_MAIL },
	{ "SMFIP_NR_RCPT", SMFIP_NR_RCPT }, { "SMFIP_RCPT_REJ", SMFIP_RCPT_REJ },
	{ "SMFIP_NODATA", SMFIP_NODATA }, { "SMFIP_NR_DATA", SMFIP_NR_DATA },
}
for _, o in ipairs(wanted) do
	if not mt.test_option(conn, o[2]) then
		fail("filterd did not ask for " .. o[1])
	end
end
for _, o in ipairs(unwanted) do
	if mt.test_option(conn, o[2]) then
		fail("filterd asked for " .. o[1])
	end
end
for _, a in ipairs({ { "SMFIF_ADDHDRS", SMFIF_ADDHDRS }, { "SMFIF_CHGHDRS", SMFIF_CHGHDRS } }) do
	if not mt.test_action(conn, a[2]) then
		fail("filterd did not ask for " .. a[1])
	end
end
for _, a in ipairs({ { "SMFIF_CHGBODY", SMFIF_CHGBODY }, { "SMFIF_ADDRCPT", SMFIF_ADDRCPT },
                     { "SMFIF_DELRCPT", SMFIF_DELRCPT }, { "SMFIF_CHGFROM", SMFIF_CHGFROM },
                     { "SMFIF_QUARANTINE", SMFIF_QUARANTINE } }) do
	if mt.test_action(conn, a[2]) then
		fail("filterd asked for " .. a[1])
	end
end
mt.disconnect(conn)
