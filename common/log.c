/*
 * log: one line per event, to syslog (facility mail), stderr, or the
 * three files of an Exim-style log folder.  The daemons write
 * "key=value" pairs; log_quote() makes any client-supplied value safe to
 * put on such a line.
 *
 * Files: every daemon appends to the same mainlog, rejectlog and
 * paniclog, one write(2) per line with O_APPEND, so lines from several
 * processes and threads never interleave.  Lines are
 * "YYYY-MM-DD HH:MM:SS ident[pid]: text".  SIGHUP reopens them, for
 * logrotate.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_target target = LOG_TARGET_STDERR;
static const char *log_ident = "spfgate";
static int verbose;

enum { LF_MAIN, LF_REJECT, LF_PANIC, LF_N };
static const char *const lf_names[LF_N] = { "mainlog", "rejectlog", "paniclog" };
static int lf_fd[LF_N] = { -1, -1, -1 };
static char lf_dir[1024];

static int
files_open(char *err, size_t errlen)
{
	int fd[LF_N];

	for (int i = 0; i < LF_N; i++) {
		char path[1100];
		snprintf(path, sizeof(path), "%s/%s", lf_dir, lf_names[i]);
		fd[i] = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
		if (fd[i] < 0) {
			snprintf(err, errlen, "log file %s: %s", path, strerror(errno));
			while (i-- > 0)
				close(fd[i]);
			return -1;
		}
	}
	for (int i = 0; i < LF_N; i++) {
		int old = lf_fd[i];
		__atomic_store_n(&lf_fd[i], fd[i], __ATOMIC_RELEASE);
		if (old >= 0)
			close(old);   /* a racing writer may lose one line to EBADF */
	}
	return 0;
}

int
log_open_spec(const char *ident, const char *spec, int to_stderr,
              char *err, size_t errlen)
{
	if (to_stderr || strcmp(spec, "stderr") == 0) {
		log_open(ident, LOG_TARGET_STDERR);
		return 0;
	}
	if (strcmp(spec, "syslog") == 0) {
		log_open(ident, LOG_TARGET_SYSLOG);
		return 0;
	}
	if (strncmp(spec, "files:", 6) != 0 || spec[6] != '/') {
		snprintf(err, errlen, "log: expected syslog, stderr or files:/DIR");
		return -1;
	}
	snprintf(lf_dir, sizeof(lf_dir), "%s", spec + 6);
	if (files_open(err, errlen) < 0)
		return -1;
	log_ident = ident;
	target = LOG_TARGET_FILES;
	return 0;
}

void
log_reopen(void)
{
	char err[1200];

	if (target == LOG_TARGET_FILES && files_open(err, sizeof(err)) < 0)
		log_err("%s; still writing to the files opened before", err);
}

static void
files_write(int priority, const char *line)
{
	char buf[4400];
	struct tm tm;
	time_t now = time(NULL);

	localtime_r(&now, &tm);
	int n = snprintf(buf, sizeof(buf), "%04d-%02d-%02d %02d:%02d:%02d %s[%ld]: %s\n",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	                 tm.tm_min, tm.tm_sec, log_ident, (long)getpid(), line);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1, buf[n - 1] = '\n';
	(void)!write(__atomic_load_n(&lf_fd[LF_MAIN], __ATOMIC_ACQUIRE), buf, (size_t)n);
	if (priority == LOG_NOTICE)
		(void)!write(__atomic_load_n(&lf_fd[LF_REJECT], __ATOMIC_ACQUIRE), buf, (size_t)n);
	else if (priority <= LOG_ERR)
		(void)!write(__atomic_load_n(&lf_fd[LF_PANIC], __ATOMIC_ACQUIRE), buf, (size_t)n);
}

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
	} else if (target == LOG_TARGET_FILES) {
		char line[4096];
		vsnprintf(line, sizeof(line), fmt, ap);
		files_write(priority, line);
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
