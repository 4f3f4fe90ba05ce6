/*
 * miltc - drive relayd's milter client from a script, for the tests.
 *
 *   miltc [-C connect_s] [-t command_s] [-T content_s] [-a actions] SOCKET < script
 *
 * One event per line (C escapes \r \n \t \\ \xHH in the text arguments):
 *   macro NAME [VALUE]        set (or unset) a macro in the session table
 *   open                      connect and negotiate (a new connection
 *                             after a quit: the next session)
 *   connect HOST FAMILY PORT ADDR   FAMILY 4, 6, L or U
 *   helo NAME | mail <A> [ARG...] | rcpt <A> [ARG...] | data
 *   header NAME:VALUE         VALUE is the text after the colon, as is
 *   eoh | body TEXT | bigbody N (N bytes of body in 65535-byte chunks)
 *   eom | abort | quit
 * Each reply prints as "EVENT STATUS[ TEXT]"; at EOM each modification
 * prints as "mod TYPE ..." with escapes.  Exit 0 at the end of the script.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/event.h>

#include "milter_client.h"

#define MAX_LINES 10000
#define MAX_ARGS 32

static struct event_base *base;
static struct milter_conf conf;
static struct milter_conn *conn;
static struct milter_macros *mac;
static char *lines[MAX_LINES];
static size_t nlines, cur;
static char *body_buf;
static size_t body_left;

static void step(void);

static size_t unescape(char *s)
{
	char *o = s;

	for (char *p = s; *p; p++) {
		if (*p != '\\' || !p[1]) {
			*o++ = *p;
			continue;
		}
		p++;
		switch (*p) {
		case 'r': *o++ = '\r'; break;
		case 'n': *o++ = '\n'; break;
		case 't': *o++ = '\t'; break;
		case '0': *o++ = '\0'; break;
		case 'x':
			if (isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
				char h[3] = { p[1], p[2], 0 };
				*o++ = (char)strtol(h, NULL, 16);
				p += 2;
				break;
			}
			/* fall through */
		default: *o++ = *p; break;
		}
	}
	*o = '\0';
	return (size_t)(o - s);
}

static void print_esc(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r') fputs("\\r", stdout);
		else if (c == '\n') fputs("\\n", stdout);
		else if (c == '\t') fputs("\\t", stdout);
		else if (c == '\\') fputs("\\\\", stdout);
		else if (c < 0x20 || c >= 0x7f) printf("\\x%02x", c);
		else putchar(c);
	}
}

static void print_mod(const struct milter_mod *d)
{
	static const char *const names[] = { "addheader", "insheader", "chgheader", "chgfrom",
	                                     "addrcpt", "delrcpt", "replbody", "quarantine" };
	printf("mod %s", names[d->type]);
	switch (d->type) {
	case MILTER_MOD_INSHDR:
	case MILTER_MOD_CHGHDR:
		printf(" %lu", d->index);
		/* fall through */
	case MILTER_MOD_ADDHDR:
		printf(" %s:", d->name);
		if (d->value)
			print_esc(d->value, strlen(d->value));
		else
			fputs(" (delete)", stdout);
		break;
	case MILTER_MOD_REPLBODY:
		putchar(' ');
		print_esc((const char *)d->body, d->body_len);
		break;
	default:
		putchar(' ');
		print_esc(d->value, strlen(d->value));
		if (d->args) {
			putchar(' ');
			print_esc(d->args, strlen(d->args));
		}
	}
	putchar('\n');
}

static void done(struct milter_conn *m, const struct milter_result *r, void *arg)
{
	(void)arg;
	if (r->event == MILTER_EV_BODY && body_left && r->status == MILTER_CONTINUE) {
		size_t n = body_left > MILTER_CHUNK_MAX ? MILTER_CHUNK_MAX : body_left;
		body_left -= n;
		milter_body(m, body_buf, n);
		return;
	}
	body_left = 0;
	printf("%s %s", milter_event_name(r->event), milter_status_name(r->status));
	if (r->reply)
		printf(" %s", r->reply);
	if (r->error)
		printf(" (%s)", r->error);
	if (r->event == MILTER_EV_OPEN && r->status == MILTER_CONTINUE)
		printf(" actions=0x%lx protocol=0x%lx", milter_actions(m), milter_protocol(m));
	putchar('\n');
	for (size_t i = 0; i < r->nmods; i++)
		print_mod(&r->mods[i]);
	fflush(stdout);
	step();
}

static int split(char *line, char **argv)
{
	int n = 0;
	char *p = line;

	while (n < MAX_ARGS && *p) {
		p += strspn(p, " \t");
		if (!*p)
			break;
		argv[n++] = p;
		p += strcspn(p, " \t");
		if (*p)
			*p++ = '\0';
	}
	return n;
}

static int run(char *line)
{
	char *argv[MAX_ARGS + 1] = { 0 }, *rest;
	int argc;

	line[strcspn(line, "\r\n")] = '\0';
	if (line[0] == '#' || line[strspn(line, " \t")] == '\0')
		return 1;
	/* the text argument of macro/header/body keeps its blanks */
	if (strncmp(line, "macro ", 6) == 0) {
		char *name = line + 6, *v = name + strcspn(name, " ");
		int has = *v != '\0';
		*v = '\0';
		if (has)
			unescape(++v);
		milter_macros_set(mac, name, has ? v : NULL);
		return 1;
	}
	if (strncmp(line, "header ", 7) == 0) {   /* header Name:value */
		char *name = line + 7, *v = strchr(name, ':');
		if (v == NULL)
			return -1;
		*v++ = '\0';
		unescape(v);
		return milter_header(conn, name, v);
	}
	if (strncmp(line, "body ", 5) == 0) {
		rest = line + 5;
		size_t n = unescape(rest);
		return milter_body(conn, rest, n);
	}
	argc = split(line, argv);
	if (strcmp(argv[0], "open") == 0) {
		if (conn)
			milter_close(conn);
		conn = milter_conn_new(base, &conf, done, NULL);
		return conn ? milter_open(conn) : -1;
	}
	if (conn == NULL)
		return -1;
	if (strcmp(argv[0], "connect") == 0 && argc == 5)
		return milter_connect(conn, mac, argv[1], argv[2][0], (unsigned)atoi(argv[3]), argv[4]);
	if (strcmp(argv[0], "helo") == 0 && argc == 2)
		return milter_helo(conn, mac, argv[1]);
	if (strcmp(argv[0], "mail") == 0 && argc >= 2)
		return milter_mail(conn, mac, argv[1], (const char *const *)argv + 2);
	if (strcmp(argv[0], "rcpt") == 0 && argc >= 2)
		return milter_rcpt(conn, mac, argv[1], (const char *const *)argv + 2);
	if (strcmp(argv[0], "data") == 0)
		return milter_data(conn, mac);
	if (strcmp(argv[0], "eoh") == 0)
		return milter_eoh(conn, mac);
	if (strcmp(argv[0], "eom") == 0)
		return milter_eom(conn, mac);
	if (strcmp(argv[0], "bigbody") == 0 && argc == 2) {
		size_t total = strtoul(argv[1], NULL, 10), n;
		free(body_buf);
		body_buf = malloc(MILTER_CHUNK_MAX);
		if (body_buf == NULL || total == 0)
			return -1;
		for (size_t i = 0; i < MILTER_CHUNK_MAX; i++)   /* 64-byte CRLF lines */
			body_buf[i] = i % 64 == 62 ? '\r' : i % 64 == 63 ? '\n' : 'x';
		n = total > MILTER_CHUNK_MAX ? MILTER_CHUNK_MAX : total;
		body_left = total - n;
		return milter_body(conn, body_buf, n);
	}
	if (strcmp(argv[0], "abort") == 0) {
		printf("abort\n");
		return milter_abort(conn) < 0 ? -1 : 1;
	}
	if (strcmp(argv[0], "quit") == 0) {
		milter_close(conn);
		conn = NULL;
		printf("quit\n");
		return 1;
	}
	return -1;
}

/* Run lines until one is pending (0) or the script ends. */
static void step(void)
{
	while (cur < nlines) {
		char *copy = strdup(lines[cur]);
		int rc;

		if (copy == NULL)
			exit(2);
		rc = run(copy);
		cur++;
		free(copy);
		if (rc < 0) {
			printf("error: line %zu: %s", cur, lines[cur - 1]);
			fflush(stdout);
			exit(2);
		}
		if (rc == 0)
			return;
		fflush(stdout);
	}
}

int main(int argc, char **argv)
{
	char buf[70000];
	int opt;

	conf.connect_timeout = 5;
	conf.command_timeout = 10;
	conf.content_timeout = 30;
	while ((opt = getopt(argc, argv, "C:t:T:a:")) != -1) {
		switch (opt) {
		case 'C': conf.connect_timeout = atol(optarg); break;
		case 't': conf.command_timeout = atol(optarg); break;
		case 'T': conf.content_timeout = atol(optarg); break;
		case 'a': conf.actions = strtoul(optarg, NULL, 0); break;
		default: return 2;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "usage: miltc [-C s] [-t s] [-T s] [-a actions] SOCKET < script\n");
		return 2;
	}
	conf.socket = argv[optind];
	while (nlines < MAX_LINES && fgets(buf, sizeof(buf), stdin))
		if ((lines[nlines++] = strdup(buf)) == NULL)
			return 2;
	base = event_base_new();
	mac = milter_macros_new();
	if (base == NULL || mac == NULL)
		return 2;
	step();
	event_base_dispatch(base);   /* ends when the last connection is freed */
	if (conn)
		milter_close(conn);
	event_base_dispatch(base);
	milter_macros_free(mac);
	event_base_free(base);
	for (size_t i = 0; i < nlines; i++)
		free(lines[i]);
	free(body_buf);
	return 0;
}
