/*
 * milter_macros.c - the macro table the caller fills, the default macro
 * lists per stage, socket address parsing, names for messages.
 */
#include "milter_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <event2/util.h>

/* Postfix's milter_*_macros defaults, plus the client and interface ones. */
const char *const milter_default_macros[MW_NSTAGES] = {
	[SMFIM_CONNECT] = "j _ {daemon_name} {daemon_addr} {if_name} {if_addr} "
	                  "{client_addr} {client_name} {client_port} {client_ptr} v",
	[SMFIM_HELO] = "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
	[SMFIM_ENVFROM] = "i {auth_type} {auth_authen} {auth_author} {mail_addr} "
	                  "{mail_host} {mail_mailer}",
	[SMFIM_ENVRCPT] = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
	[SMFIM_DATA] = "i",
	[SMFIM_EOM] = "i",
	[SMFIM_EOH] = "i",
};

/* ---- macro table ---- */

struct milter_macros {
	size_t n, cap;
	char **name, **value;   /* names canonical: "x" or "{xyz}" */
};

/* "{x}" and "x" -> "x"; "xyz" and "{xyz}" -> "{xyz}". */
int milter_canon(const char *in, char *out, size_t outsz)
{
	size_t n = strlen(in);

	if (n >= 2 && in[0] == '{' && in[n - 1] == '}') {
		in++;
		n -= 2;
	}
	if (n == 0 || n + 3 > outsz)
		return -1;
	if (n == 1)
		snprintf(out, outsz, "%c", in[0]);
	else
		snprintf(out, outsz, "{%.*s}", (int)n, in);
	return 0;
}

struct milter_macros *milter_macros_new(void)
{
	return calloc(1, sizeof(struct milter_macros));
}

static long mac_find(const struct milter_macros *t, const char *cname)
{
	for (size_t i = 0; t && i < t->n; i++)
		if (strcmp(t->name[i], cname) == 0)
			return (long)i;
	return -1;
}

int milter_macros_set(struct milter_macros *t, const char *name, const char *value)
{
	char c[256];
	long i;

	if (t == NULL || name == NULL || milter_canon(name, c, sizeof(c)) < 0)
		return -1;
	i = mac_find(t, c);
	if (value == NULL) {
		if (i >= 0) {
			free(t->name[i]);
			free(t->value[i]);
			t->name[i] = t->name[t->n - 1];
			t->value[i] = t->value[t->n - 1];
			t->n--;
		}
		return 0;
	}
	char *v = strdup(value);
	if (v == NULL)
		return -1;
	if (i >= 0) {
		free(t->value[i]);
		t->value[i] = v;
		return 0;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 16;
		char **nn = realloc(t->name, cap * sizeof(char *));
		if (nn)
			t->name = nn;
		char **nv = nn ? realloc(t->value, cap * sizeof(char *)) : NULL;
		if (nv == NULL) {
			free(v);
			return -1;
		}
		t->value = nv;
		t->cap = cap;
	}
	if ((t->name[t->n] = strdup(c)) == NULL) {
		free(v);
		return -1;
	}
	t->value[t->n++] = v;
	return 0;
}

const char *milter_macros_get(const struct milter_macros *t, const char *name)
{
	char c[256];
	long i;

	if (milter_canon(name, c, sizeof(c)) < 0 || (i = mac_find(t, c)) < 0)
		return NULL;
	return t->value[i];
}

void milter_macros_free(struct milter_macros *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		free(t->name[i]);
		free(t->value[i]);
	}
	free(t->name);
	free(t->value);
	free(t);
}

int milter_parse_socket(const char *spec, struct sockaddr_storage *ss, int *len)
{
	char host[256];
	const char *p, *at;
	int fam = AF_INET;

	memset(ss, 0, sizeof(*ss));
	if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0) {
		struct sockaddr_un *su = (struct sockaddr_un *)ss;
		p = strchr(spec, ':') + 1;
		if (strlen(p) >= sizeof(su->sun_path) || *p == '\0')
			return -1;
		su->sun_family = AF_UNIX;
		strcpy(su->sun_path, p);
		*len = (int)sizeof(*su);
		return 0;
	}
	if (strncmp(spec, "inet6:", 6) == 0)
		fam = AF_INET6, p = spec + 6;
	else if (strncmp(spec, "inet:", 5) == 0)
		p = spec + 5;
	else
		return -1;
	if ((at = strchr(p, '@')) != NULL) {   /* Sendmail: PORT@HOST */
		snprintf(host, sizeof(host), "%s%s%s", strchr(at + 1, ':') ? "[" : "", at + 1,
		         strchr(at + 1, ':') ? "]" : "");
		snprintf(host + strlen(host), sizeof(host) - strlen(host), ":%.*s",
		         (int)(at - p), p);
	} else {                              /* Postfix: HOST:PORT */
		snprintf(host, sizeof(host), "%s", p);
	}
	if (strncmp(host, "localhost:", 10) == 0) {
		char tmp[256];
		snprintf(tmp, sizeof(tmp), "127.0.0.1%s", host + 9);
		memcpy(host, tmp, sizeof(host));
	}
	*len = (int)sizeof(*ss);
	if (evutil_parse_sockaddr_port(host, (struct sockaddr *)ss, len) < 0)
		return -1;
	(void)fam;
	return 0;
}

const char *milter_status_name(enum milter_status s)
{
	static const char *const n[] = { "continue", "accept", "reject", "tempfail", "discard",
	                                 "reply", "skip", "connfail", "failed" };
	return (unsigned)s < sizeof(n) / sizeof(n[0]) ? n[s] : "?";
}

const char *milter_event_name(enum milter_event e)
{
	static const char *const n[] = { "open", "connect", "helo", "mail", "rcpt", "data",
	                                 "header", "eoh", "body", "eom" };
	return (unsigned)e < sizeof(n) / sizeof(n[0]) ? n[e] : "?";
}
