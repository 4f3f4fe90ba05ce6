/*
 * milter_int.h - what milter_client.c, milter_macros.c and milter_mods.c
 * share; not for users of the library (they include milter_client.h).
 */
#ifndef SPFGATE_MILTER_INT_H
#define SPFGATE_MILTER_INT_H

#include <sys/socket.h>
#include <event2/bufferevent.h>
#include "milter_client.h"
#include "milter_wire.h"

#define MAX_MODS 4096                       /* modifications per message */
#define MAX_REPLBODY (64u * 1024 * 1024)    /* replacement body bytes */
#define NONE (-1)

enum state { ST_NEW, ST_CONNECTING, ST_NEGOTIATING, ST_READY, ST_WAIT, ST_FAILED,
	     ST_CLOSING };

struct milter_conn {
	struct event_base *base;
	struct milter_conf conf;
	char *name, *socket, *conf_macros[MW_NSTAGES], *mlist[MW_NSTAGES];
	milter_done_fn done;
	void *arg;
	struct bufferevent *bev;
	struct event *timer, *defer;
	enum state state;
	int pending, finished;    /* a callback is owed / its result is set */
	long timeout;             /* of the pending command */
	unsigned long actions, protocol;
	int conn_verdict, msg_verdict, in_msg, skip_body;
	char *conn_reply, *msg_reply;   /* texts of standing MILTER_REPLY verdicts */
	struct milter_result res;
	char *reply, error[256];
	struct milter_mod *mods;
	size_t nmods, capmods;
	long replbody;            /* index of the REPLBODY mod, or NONE */
	struct mw_pkt pkt;
};

/* milter_macros.c */
extern const char *const milter_default_macros[MW_NSTAGES];
/* "{x}" and "x" -> "x"; "xyz" and "{xyz}" -> "{xyz}"; -1 if empty/too long */
int milter_canon(const char *in, char *out, size_t outsz);
/* "unix:/path", "local:/path", "inet:PORT@HOST", "inet6:PORT@HOST",
 * "inet:HOST:PORT" (numeric HOST or localhost); 0, or -1 */
int milter_parse_socket(const char *spec, struct sockaddr_storage *ss, int *len);

/* milter_mods.c: one modification reply at EOM (checked against the
 * negotiated actions) added to m->mods; 0, or -1 with m->error set. */
int milter_modification(struct milter_conn *m, char cmd, const unsigned char *d, size_t n);

#endif
