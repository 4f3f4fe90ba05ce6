/*
 * remote_int: what remote.c, remote_route.c and the unit tests share:
 * the route (the addresses to try, in order) and the credentials file.
 */
#ifndef SPFGATE_REMOTE_INT_H
#define SPFGATE_REMOTE_INT_H

#include <stddef.h>
#include <sys/socket.h>

#include "dns.h"
#include "remote.h"

/* How many addresses one delivery attempt tries, over all MX hosts. */
#define REMOTE_MAX_ADDRS 10

struct remote_target {
	char host[256];             /* MX host name, or the address literal */
	struct sockaddr_storage ss; /* address and port */
	socklen_t sslen;
};

struct remote_route {
	struct remote_target t[REMOTE_MAX_ADDRS];
	size_t n;
	/* when n == 0: why there is nowhere to go */
	enum remote_status status;
	char dsn[16];
	char text[512];
};

/*
 * Split "host", "host:port", "[host-or-address]" or "[...]:port".
 * *bracketed tells that no MX lookup is wanted (Postfix's convention).
 * 0, or -1 on a malformed spec.
 */
int remote_parse_hostport(const char *spec, int defport, char *host, size_t hostlen,
                          int *port, int *bracketed);

/*
 * The addresses for name: its MX hosts when mx is set (preference order,
 * equal preferences shuffled; no MX → name itself; null MX → 5.1.10;
 * hosts named self and every host of the same or a worse preference
 * dropped, and 5.4.6 if none is left), else name itself.  Each host's
 * AAAA then A addresses, at most REMOTE_MAX_ADDRS in all.  An IP address
 * (with or without brackets) is used as it is.  0 when out->n > 0, else
 * -1 with out->status/dsn/text.
 */
int remote_route_lookup(struct dns_resolver *dns, const char *self, const char *name,
                        int port, int mx, struct remote_route *out);

/*
 * Read "user password" or "user:password" (first non-empty line not
 * starting with '#') from path.  The file must not be readable by group
 * or others.  0, or -1 with the reason in err.
 */
/*
 * This host's SMTP listeners ([relayd] listen), so that an MX whose
 * address is one of them is recognised as a loop even when its name is
 * not our mail_name.  A wildcard listener (0.0.0.0, ::) stands for every
 * local interface address and the loopback range.
 */
struct remote_self {
	struct sockaddr_storage *lst;   /* listeners: family, address, port */
	size_t nlst;
	struct sockaddr_storage *ifs;   /* interface addresses (getifaddrs) */
	size_t nifs;
};

int remote_self_init(struct remote_self *self, const struct strlist *listen);
void remote_self_free(struct remote_self *self);
/* Remove the targets that are our own listeners; returns how many. */
size_t remote_route_drop_self(struct remote_route *r, const struct remote_self *self);

int remote_read_auth(const char *path, char *user, size_t userlen,
                     char *pass, size_t passlen, char *err, size_t errlen);

#endif
