/*
 * log: one line per event, to syslog (facility mail) or stderr.  The
 * daemons write "key=value" pairs; log_quote() makes any client-supplied
 * value safe to put on such a line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum log_target target = LOG_TARGET_STDERR;
static const char *log_ident = "spfgate";
static int verbose;

void
log_open(const char *ident, enum log_target t)
{
	log_ident = ident;
	target = t;
	if (t == LOG_TARGET_SYSLOG)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_set_verbose(int on)
{
	verbose = on;
}

void
log_msg(int priority, const char *fmt, ...)
{
	va_list ap;

	if (priority == LOG_DEBUG && !verbose)
		return;
	va_start(ap, fmt);
	if (target == LOG_TARGET_SYSLOG) {
		vsyslog(LOG_MAIL | priority, fmt, ap);
	} else {
		char line[4096];
		vsnprintf(line, sizeof(line), fmt, ap);
		/* One write per line so threads never interleave halves. */
		char buf[4200];
		int n = snprintf(buf, sizeof(buf), "%s: %s\n", log_ident, line);
		if (n > (int)sizeof(buf) - 1)
			n = sizeof(buf) - 1, buf[n - 1] = '\n';
		fwrite(buf, 1, (size_t)n, stderr);
		fflush(stderr);
	}
	va_end(ap);
}

static int
safe_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';
}

const char *
log_quote(char *buf, size_t len, const char *s)
{
	size_t o = 0;
	int bare = 1;

	if (len < 8) {
		if (len)
			buf[0] = '\0';
		return buf;
	}
	if (s == NULL)
		s = "";
	if (*s == '\0')
		bare = 0;
	for (const char *p = s; *p; p++)
		if (!safe_char((unsigned char)*p))
			bare = 0;
	if (!bare)
		buf[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char tmp[5];
		size_t tl;
		if (bare || (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')) {
			tmp[0] = (char)*p;
			tl = 1;
		} else if (*p == '"' || *p == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)*p;
			tl = 2;
		} else {
			snprintf(tmp, sizeof(tmp), "\\x%02x", *p);
			tl = 4;
		}
		if (o + tl + 5 > len) {     /* room for ..." and NUL */
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(buf + o, tmp, tl);
		o += tl;
	}
	if (!bare)
		buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}
