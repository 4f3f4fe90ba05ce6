/*
 * config: the one configuration file, /etc/spfgate/spfgate.conf.
 *
 * Every parameter's name, section, type and default is in params[] below
 * and nowhere else.  Unknown sections and keys are errors (a typo must not
 * silently become a default), reported as "FILE:LINE: message".  A '#' or
 * ';' after white space starts a comment, also at the end of a value line.
 */
#include "config.h"
#include "addr.h"
#include "spf.h"

#include <ini.h>
#include <stddef.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum ptype { P_STR, P_DOMAIN, P_DOMAINS, P_CIDRS, P_NAMESERVERS, P_SECONDS,
             P_BOOL, P_ACTION, P_LOG, P_LISTEN, P_LISTENS, P_PATH, P_OPTPATH,
             P_DURATION, P_COUNT, P_MODE, P_HOSTPORT, P_TLS, P_DELIM,
             P_USERS, P_ADDRPORTS, P_MILTERS, P_DEFACT, P_MAILBOX, P_IPADDR, P_PROCS };

struct param {
	const char *section;
	const char *name;
	enum ptype type;
	size_t off;
	const char *def;      /* NULL: computed in config_defaults() */
};

#define OFF(f) offsetof(struct config, f)

static const struct param params[] = {
	{ "global", "mail_name",      P_DOMAIN,      OFF(mail_name),      NULL },
	{ "global", "local_domains",  P_DOMAINS,     OFF(local_domains),  NULL },
	{ "global", "relay_networks", P_CIDRS,       OFF(relay_networks), "127.0.0.0/8, ::1" },
	{ "global", "nameservers",    P_NAMESERVERS, OFF(nameservers),    "" },
	{ "global", "dns_timeout",    P_SECONDS,     OFF(dns_timeout),    "5" },
	{ "global", "log",            P_LOG,         OFF(log),            "syslog" },

	{ "filterd", "listen",        P_LISTEN, OFF(filterd.listen),
	  "unix:" RUNSTATEDIR "/spfgate/filterd.sock" },
	{ "filterd", "on_fail",       P_ACTION, OFF(filterd.on_result[SPF_RES_FAIL]),      "reject" },
	{ "filterd", "on_softfail",   P_ACTION, OFF(filterd.on_result[SPF_RES_SOFTFAIL]),  "tag" },
	{ "filterd", "on_neutral",    P_ACTION, OFF(filterd.on_result[SPF_RES_NEUTRAL]),   "tag" },
	{ "filterd", "on_none",       P_ACTION, OFF(filterd.on_result[SPF_RES_NONE]),      "tag" },
	{ "filterd", "on_temperror",  P_ACTION, OFF(filterd.on_result[SPF_RES_TEMPERROR]), "tempfail" },
	{ "filterd", "on_permerror",  P_ACTION, OFF(filterd.on_result[SPF_RES_PERMERROR]), "tag" },
	{ "filterd", "user",          P_STR,    OFF(filterd.user),       "spfgate-filterd" },
	{ "filterd", "helo_check",    P_BOOL,   OFF(filterd.helo_check), "off" },
	{ "filterd", "dry_run",       P_BOOL,   OFF(filterd.dry_run),    "off" },

	{ "relayd", "listen",          P_ADDRPORTS, OFF(relayd.listen), "0.0.0.0:25, [::]:25" },
	{ "relayd", "user",            P_STR,      OFF(relayd.user),    "spfgate-relayd" },
	{ "relayd", "milters",         P_MILTERS,  OFF(relayd.milters),   "" },
	{ "relayd", "milter_default_action", P_DEFACT, OFF(relayd.milter_default_action), "tempfail" },
	{ "relayd", "milter_connect_timeout", P_DURATION, OFF(relayd.milter_connect_timeout), "30s" },
	{ "relayd", "milter_command_timeout", P_DURATION, OFF(relayd.milter_command_timeout), "30s" },
	{ "relayd", "milter_content_timeout", P_DURATION, OFF(relayd.milter_content_timeout), "300s" },
	{ "relayd", "lmtp",            P_LISTEN,   OFF(relayd.lmtp),
	  "unix:" RUNSTATEDIR "/spfgate/deliverd.sock" },
	{ "relayd", "tls_cert_file",   P_OPTPATH,  OFF(relayd.tls_cert_file), "" },
	{ "relayd", "tls_key_file",    P_OPTPATH,  OFF(relayd.tls_key_file),  "" },
	{ "relayd", "message_size_limit", P_COUNT, OFF(relayd.message_size_limit), "10240000" },
	{ "relayd", "recipient_limit", P_COUNT,    OFF(relayd.recipient_limit), "1000" },
	{ "relayd", "processes",       P_PROCS,    OFF(relayd.processes), "1" },
	{ "relayd", "max_sessions",    P_COUNT,    OFF(relayd.max_sessions), "10000" },
	{ "relayd", "max_sessions_per_client", P_COUNT, OFF(relayd.max_sessions_per_client), "50" },
	{ "relayd", "max_errors",      P_COUNT,    OFF(relayd.max_errors), "10" },
	{ "relayd", "max_received_headers", P_COUNT, OFF(relayd.max_received_headers), "50" },
	{ "relayd", "command_timeout", P_DURATION, OFF(relayd.command_timeout), "5m" },
	{ "relayd", "data_timeout",    P_DURATION, OFF(relayd.data_timeout), "5m" },

	{ "deliverd", "listen",        P_LISTENS,  OFF(deliverd.listen),
	  "unix:" RUNSTATEDIR "/spfgate/deliverd.sock" },
	{ "deliverd", "user",          P_STR,      OFF(deliverd.user),     "spfgate-deliverd" },
	{ "deliverd", "control",       P_PATH,     OFF(deliverd.control),
	  RUNSTATEDIR "/spfgate/deliverd.ctl" },
	{ "deliverd", "spool",         P_PATH,     OFF(deliverd.spool),
	  LOCALSTATEDIR "/spool/spfgate" },
	{ "deliverd", "mailbox",       P_MAILBOX,    OFF(deliverd.mailbox),
	  LOCALSTATEDIR "/mail/%u" },
	{ "deliverd", "mailbox_mode",  P_MODE,     OFF(deliverd.mailbox_mode), "0600" },
	{ "deliverd", "local_users",   P_USERS,    OFF(deliverd.local_users),  "system" },
	{ "deliverd", "aliases",       P_OPTPATH,  OFF(deliverd.aliases),      "/etc/aliases" },
	{ "deliverd", "recipient_delimiter", P_DELIM, OFF(deliverd.recipient_delimiter), "+" },
	{ "deliverd", "message_size_limit", P_COUNT, OFF(deliverd.message_size_limit), "10240000" },
	{ "deliverd", "smarthost",     P_HOSTPORT, OFF(deliverd.smarthost),    "" },
	{ "deliverd", "smarthost_tls", P_TLS,      OFF(deliverd.smarthost_tls), "required" },
	{ "deliverd", "smarthost_auth_file", P_OPTPATH, OFF(deliverd.smarthost_auth_file), "" },
	{ "deliverd", "smtp_tls",      P_TLS,      OFF(deliverd.smtp_tls),     "opportunistic" },
	{ "deliverd", "smtp_port",     P_COUNT,    OFF(deliverd.smtp_port),    "25" },
	{ "deliverd", "smtp_bind_address", P_IPADDR, OFF(deliverd.smtp_bind_address), "" },
	{ "deliverd", "retry_min",     P_DURATION, OFF(deliverd.retry_min),    "5m" },
	{ "deliverd", "retry_max",     P_DURATION, OFF(deliverd.retry_max),    "1h" },
	{ "deliverd", "queue_lifetime", P_DURATION, OFF(deliverd.queue_lifetime), "5d" },
	{ "deliverd", "concurrency",   P_COUNT,    OFF(deliverd.concurrency),  "20" },
	{ "deliverd", "destination_concurrency", P_COUNT, OFF(deliverd.destination_concurrency), "5" },
};

static const char *const sections[] = { "global", "relayd", "filterd", "deliverd" };

const char *
spf_action_str(enum spf_action a)
{
	switch (a) {
	case SPF_ACT_REJECT:   return "reject";
	case SPF_ACT_TEMPFAIL: return "tempfail";
	case SPF_ACT_TAG:      return "tag";
	}
	return "?";
}

static int
parse_bool(const char *v, int *out)
{
	static const char *const yes[] = { "on", "yes", "true", "1" };
	static const char *const no[] = { "off", "no", "false", "0" };
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0)
			return *out = 1, 0;
		if (strcasecmp(v, no[i]) == 0)
			return *out = 0, 0;
	}
	return -1;
}

/* "ADDR", "ADDR:PORT", "[V6]:PORT" or a bare IPv6 address. */
static int
nameserver_valid(const char *s)
{
	char host[64];
	const char *port = NULL;
	struct ipaddr a;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL || (size_t)(close - s - 1) >= sizeof(host))
			return 0;
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return 0;
	} else if (strchr(s, ':') != strrchr(s, ':')) {
		snprintf(host, sizeof(host), "%s", s);     /* bare IPv6 */
	} else {
		const char *colon = strchr(s, ':');
		size_t n = colon ? (size_t)(colon - s) : strlen(s);
		if (n >= sizeof(host))
			return 0;
		memcpy(host, s, n);
		host[n] = '\0';
		if (colon)
			port = colon + 1;
	}
	if (ipaddr_parse(host, &a) < 0)
		return 0;
	if (port) {
		char *end;
		long p = strtol(port, &end, 10);
		if (*port == '\0' || *end != '\0' || p < 1 || p > 65535)
			return 0;
	}
	return 1;
}

static int
listen_valid(const char *v)
{
	if (strncmp(v, "unix:", 5) == 0 || strncmp(v, "local:", 6) == 0)
		return strchr(v, ':')[1] == '/';
	if (strncmp(v, "inet:", 5) == 0 || strncmp(v, "inet6:", 6) == 0) {
		const char *p = strchr(v, ':') + 1;
		char *end;
		long port = strtol(p, &end, 10);
		return end != p && port > 0 && port < 65536
		       && (*end == '\0' || (*end == '@' && end[1] != '\0'));
	}
	return 0;
}

struct load_ctx {
	struct config *c;
	char err[256];
	int set[sizeof(params) / sizeof(params[0])];
	const char *section_seen;
};

/* Apply one value; returns NULL or an error message (static). */
static const char *
apply(struct config *c, const struct param *p, const char *v)
{
	void *f = (char *)c + p->off;
	static __thread char msg[200];
	const char *bad;

	switch (p->type) {
	case P_OPTPATH:
	case P_PATH:
	case P_MAILBOX:
		/* a mailbox may also be in the recipient's home: "%h/mbox" */
		if (p->type == P_MAILBOX && v[0] != '/' && strncmp(v, "%h/", 3) != 0)
			return "expected an absolute path, or one that starts with %h/";
		if (p->type == P_PATH && v[0] != '/')
			return "expected an absolute path";
		if (p->type == P_OPTPATH && v[0] != '\0' && v[0] != '/')
			return "expected an absolute path or nothing";
		/* FALLTHROUGH */
	case P_STR:
	case P_LOG:
	case P_LISTEN:
		if (p->type == P_LOG && strcmp(v, "syslog") != 0 && strcmp(v, "stderr") != 0 &&
		    strncmp(v, "files:/", 7) != 0)
			return "expected syslog, stderr or files:/DIR";
		if (p->type == P_LISTEN && !listen_valid(v))
			return "expected unix:/PATH or inet:PORT@ADDR";
		free(*(char **)f);
		if ((*(char **)f = strdup(v)) == NULL)
			return "out of memory";
		return NULL;
	case P_IPADDR: {
		unsigned char a[16];
		if (v[0] != '\0' && inet_pton(AF_INET, v, a) != 1 && inet_pton(AF_INET6, v, a) != 1)
			return "expected an IPv4 or IPv6 address, or nothing";
		free(*(char **)f);
		if ((*(char **)f = strdup(v)) == NULL)
			return "out of memory";
		return NULL;
	}
	case P_DOMAIN: {
		char d[256];
		if (strlen(v) >= sizeof(d) || !addr_domain_valid(v) || v[0] == '[')
			return "not a valid domain name";
		snprintf(d, sizeof(d), "%s", v);
		addr_domain_normalize(d);
		free(*(char **)f);
		if ((*(char **)f = strdup(d)) == NULL)
			return "out of memory";
		return NULL;
	}
	case P_DOMAINS: {
		struct strlist tmp = { 0 };
		struct strlist *l = f;
		if (strlist_split(&tmp, v) < 0)
			return "out of memory";
		strlist_free(l);
		for (size_t i = 0; i < tmp.n; i++) {
			if (strlen(tmp.v[i]) > 255 || !addr_domain_valid(tmp.v[i])
			    || tmp.v[i][0] == '[') {
				snprintf(msg, sizeof(msg), "not a valid domain name: %.100s", tmp.v[i]);
				strlist_free(&tmp);
				return msg;
			}
			addr_domain_normalize(tmp.v[i]);
			strlist_add(l, tmp.v[i]);
		}
		strlist_free(&tmp);
		return NULL;
	}
	case P_CIDRS: {
		struct cidr_list *l = f;
		cidr_list_free(l);
		if (cidr_list_parse(l, v, &bad) < 0) {
			snprintf(msg, sizeof(msg), "not a network (ADDR or ADDR/PREFIX, host bits zero): %.100s", bad);
			return msg;
		}
		return NULL;
	}
	case P_NAMESERVERS: {
		struct strlist *l = f;
		strlist_free(l);
		if (strlist_split(l, v) < 0)
			return "out of memory";
		for (size_t i = 0; i < l->n; i++)
			if (!nameserver_valid(l->v[i])) {
				snprintf(msg, sizeof(msg), "not ADDR or ADDR:PORT: %.100s", l->v[i]);
				return msg;
			}
		return NULL;
	}
	case P_LISTENS: {
		struct strlist *l = f;
		strlist_free(l);
		if (strlist_split(l, v) < 0)
			return "out of memory";
		if (l->n == 0)
			return "expected at least one unix:/PATH or inet:PORT@ADDR";
		for (size_t i = 0; i < l->n; i++)
			if (!listen_valid(l->v[i])) {
				snprintf(msg, sizeof(msg), "expected unix:/PATH or inet:PORT@ADDR: %.100s", l->v[i]);
				return msg;
			}
		return NULL;
	}
	case P_ADDRPORTS: {
		/* "ADDR:PORT" or "[V6ADDR]:PORT", each with a port. */
		struct strlist *l = f;
		strlist_free(l);
		if (strlist_split(l, v) < 0)
			return "out of memory";
		for (size_t i = 0; i < l->n; i++) {
			const char *it = l->v[i];
			int ok = it[0] == '[' ? strstr(it, "]:") != NULL : strchr(it, ':') == strrchr(it, ':')
			                                                     && strchr(it, ':') != NULL;
			if (!ok || !nameserver_valid(it)) {
				snprintf(msg, sizeof(msg), "expected ADDR:PORT or [V6ADDR]:PORT: %.100s", it);
				return msg;
			}
		}
		return NULL;
	}
	case P_MILTERS: {
		struct strlist *l = f;
		strlist_free(l);
		if (strlist_split(l, v) < 0)
			return "out of memory";
		for (size_t i = 0; i < l->n; i++)
			if (!listen_valid(l->v[i])) {
				snprintf(msg, sizeof(msg), "expected unix:/PATH or inet:PORT@ADDR: %.100s", l->v[i]);
				return msg;
			}
		return NULL;
	}
	case P_DEFACT:
		if (strcmp(v, "accept") == 0)
			*(int *)f = MILTER_DEFAULT_ACCEPT;
		else if (strcmp(v, "reject") == 0)
			*(int *)f = MILTER_DEFAULT_REJECT;
		else if (strcmp(v, "tempfail") == 0)
			*(int *)f = MILTER_DEFAULT_TEMPFAIL;
		else
			return "expected accept, reject or tempfail";
		return NULL;
	case P_USERS: {
		struct strlist *l = f;
		strlist_free(l);
		if (strlist_split(l, v) < 0)
			return "out of memory";
		for (size_t i = 0; i < l->n; i++)
			if (strcmp(l->v[i], "system") != 0 && l->v[i][0] != '/')
				return "expected \"system\" and/or absolute paths of users files";
		return NULL;
	}
	case P_DELIM:
		if (strlen(v) > 1 || (v[0] && !strchr("+-_=", v[0])))
			return "expected one of + - _ = or nothing";
		*(char *)f = v[0];
		return NULL;
	case P_MODE: {
		char *end;
		long m = strtol(v, &end, 8);
		if (*v == '\0' || *end != '\0' || m < 0 || m > 0777)
			return "expected an octal file mode such as 0600";
		*(int *)f = (int)m;
		return NULL;
	}
	case P_PROCS: {
		char *end;
		long n = strtol(v, &end, 10);
		if (strcmp(v, "auto") == 0)
			n = 0, end = (char *)v + 4;
		else if (*v == '\0' || *end != '\0' || n < 1 || n > 64)
			return "expected auto (one per CPU) or 1 to 64";
		*(long *)f = n;
		return NULL;
	}
	case P_COUNT: {
		char *end;
		long n = strtol(v, &end, 10);
		if (*v == '\0' || *end != '\0' || n < 1 || n > 2147483647L)
			return "expected a positive number";
		*(long *)f = n;
		return NULL;
	}
	case P_DURATION: {
		char *end;
		long n = strtol(v, &end, 10), mult = 1;
		if (*v == '\0' || end == v || n < 0)
			return "expected a duration such as 300, 5m, 1h or 5d";
		if (*end == 's')
			end++;
		else if (*end == 'm')
			mult = 60, end++;
		else if (*end == 'h')
			mult = 3600, end++;
		else if (*end == 'd')
			mult = 86400, end++;
		else if (*end == 'w')
			mult = 7 * 86400, end++;
		if (*end != '\0' || n > 365L * 86400 / mult)
			return "expected a duration such as 300, 5m, 1h or 5d";
		*(long *)f = n * mult;
		return NULL;
	}
	case P_HOSTPORT: {
		/* host, host:port, [v6]:port, or nothing */
		const char *port = NULL;
		char host[256];
		if (v[0] == '[') {
			const char *close = strchr(v, ']');
			if (close == NULL || (close[1] && close[1] != ':'))
				return "expected host[:port]";
			if (close[1] == ':')
				port = close + 2;
		} else if (strchr(v, ':')) {
			port = strchr(v, ':') + 1;
			if (strchr(port, ':'))
				return "expected host[:port] (IPv6 in brackets)";
		}
		if (port) {
			char *end;
			long pn = strtol(port, &end, 10);
			if (*port == '\0' || *end || pn < 1 || pn > 65535)
				return "expected host[:port]";
		}
		if (v[0] && v[0] != '[') {
			size_t hl = port ? (size_t)(port - 1 - v) : strlen(v);
			if (hl == 0 || hl >= sizeof(host))
				return "expected host[:port]";
			memcpy(host, v, hl);
			host[hl] = '\0';
			if (!addr_domain_valid(host))
				return "expected host[:port]";
		}
		free(*(char **)f);
		if ((*(char **)f = strdup(v)) == NULL)
			return "out of memory";
		return NULL;
	}
	case P_TLS:
		if (strcmp(v, "required") == 0)
			*(int *)f = TLS_REQUIRED;
		else if (strcmp(v, "opportunistic") == 0)
			*(int *)f = TLS_OPPORTUNISTIC;
		else if (strcmp(v, "none") == 0)
			*(int *)f = TLS_NONE;
		else
			return "expected required, opportunistic or none";
		return NULL;
	case P_SECONDS: {
		int n = config_dns_timeout(v);
		if (n < 0)
			return "expected a number of seconds (1..60)";
		*(int *)f = n;
		return NULL;
	}
	case P_BOOL:
		if (parse_bool(v, (int *)f) < 0)
			return "expected on or off";
		return NULL;
	case P_ACTION: {
		enum spf_action *a = f;
		if (strcmp(v, "reject") == 0)
			*a = SPF_ACT_REJECT;
		else if (strcmp(v, "tempfail") == 0)
			*a = SPF_ACT_TEMPFAIL;
		else if (strcmp(v, "tag") == 0)
			*a = SPF_ACT_TAG;
		else
			return "expected reject, tempfail or tag";
		return NULL;
	}
	}
	return "internal error";
}

/* Strip a trailing "  # comment" or "  ; comment". */
static void
strip_comment(char *v)
{
	for (char *p = v; *p; p++)
		if ((*p == '#' || *p == ';') && (p == v || p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			break;
		}
	size_t n = strlen(v);
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		v[--n] = '\0';
}

static int
handler(void *user, const char *section, const char *name, const char *value)
{
	struct load_ctx *ctx = user;
	char v[4096];
	int known_section = 0;

	if (ctx->err[0])
		return 1;           /* keep the first error only */
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
		if (strcmp(section, sections[i]) == 0)
			known_section = 1;
	if (!known_section) {
		if (*section == '\0')
			snprintf(ctx->err, sizeof(ctx->err), "%s: key outside any section", name);
		else
			snprintf(ctx->err, sizeof(ctx->err), "[%s]: unknown section", section);
		return 0;
	}
	if (name == NULL)
		return 1;           /* section header alone */
	if (strlen(value) >= sizeof(v)) {
		snprintf(ctx->err, sizeof(ctx->err), "%s: value too long", name);
		return 0;
	}
	snprintf(v, sizeof(v), "%s", value);
	strip_comment(v);
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		const struct param *p = &params[i];
		if (strcmp(p->section, section) != 0 || strcmp(p->name, name) != 0)
			continue;
		const char *e = apply(ctx->c, p, v);
		if (e) {
			snprintf(ctx->err, sizeof(ctx->err), "%s: %s", name, e);
			return 0;
		}
		ctx->set[i] = 1;
		return 1;
	}
	snprintf(ctx->err, sizeof(ctx->err), "unknown key \"%s\" in [%s]", name, section);
	return 0;
}

void
config_defaults(struct config *c)
{
	char host[256];

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		if (params[i].def)
			(void)apply(c, &params[i], params[i].def);
	c->filterd.on_result[SPF_RES_PASS] = SPF_ACT_TAG;
	if (gethostname(host, sizeof(host)) < 0 || !addr_domain_valid(host))
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	(void)apply(c, &params[0], host);
}

int
config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	struct load_ctx *ctx;
	int rc;

	config_defaults(c);
	if (path == NULL)
		goto finish;
	if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	ctx->c = c;
	rc = ini_parse(path, handler, ctx);
	if (rc == -1) {
		snprintf(err, errlen, "%s: cannot open", path);
		free(ctx);
		return -1;
	}
	if (rc != 0) {
		snprintf(err, errlen, "%s:%d: %s", path, rc,
		         ctx->err[0] ? ctx->err : "syntax error");
		free(ctx);
		return -1;
	}
	int ld_set = 0;
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		if (ctx->set[i] && strcmp(params[i].name, "local_domains") == 0)
			ld_set = 1;
	free(ctx);
	if ((c->path = strdup(path)) == NULL)
		return -1;
	if (ld_set)
		return 0;
finish:
	/* Like Postfix's mydestination: this host's own name and localhost. */
	strlist_free(&c->local_domains);
	strlist_add(&c->local_domains, c->mail_name);
	strlist_add(&c->local_domains, "localhost");
	return 0;
}

void
config_free(struct config *c)
{
	free(c->path);
	free(c->mail_name);
	free(c->log);
	free(c->filterd.listen);
	free(c->filterd.user);
	free(c->relayd.user);
	free(c->deliverd.user);
	strlist_free(&c->relayd.listen);
	strlist_free(&c->relayd.milters);
	free(c->relayd.lmtp);
	free(c->relayd.tls_cert_file);
	free(c->relayd.tls_key_file);
	strlist_free(&c->deliverd.listen);
	strlist_free(&c->deliverd.local_users);
	free(c->deliverd.control);
	free(c->deliverd.spool);
	free(c->deliverd.mailbox);
	free(c->deliverd.aliases);
	free(c->deliverd.smarthost);
	free(c->deliverd.smtp_bind_address);
	free(c->deliverd.smarthost_auth_file);
	strlist_free(&c->local_domains);
	strlist_free(&c->nameservers);
	cidr_list_free(&c->relay_networks);
	memset(c, 0, sizeof(*c));
}

int
config_dns_timeout(const char *v)
{
	char *end;
	long n = strtol(v, &end, 10);

	/* Beyond a minute an MTA's milter timeout fires first. */
	if (*v == '\0' || *end != '\0' || n < 1 || n > 60)
		return -1;
	return (int)n;
}

struct config *
config_new(const char *path, char *err, size_t errlen)
{
	struct config *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (config_load(c, path, err, errlen) < 0) {
		config_free(c);
		free(c);
		return NULL;
	}
	return c;
}

void
config_destroy(struct config *c)
{
	if (c) {
		config_free(c);
		free(c);
	}
}

int
config_is_local_domain(const struct config *c, const char *domain)
{
	char d[256];

	if (domain == NULL || strlen(domain) >= sizeof(d))
		return 0;
	snprintf(d, sizeof(d), "%s", domain);
	addr_domain_normalize(d);
	return strlist_contains_ci(&c->local_domains, d);
}
