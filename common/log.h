/*
 * log: one line per event, to syslog (facility mail) or to stderr.
 * Lines are "key=value" pairs; callers quote untrusted values with
 * log_quote() so that a client cannot inject a second log line.
 */
#ifndef SPFGATE_LOG_H
#define SPFGATE_LOG_H

#include <stddef.h>
#include <syslog.h>

enum log_target { LOG_TARGET_SYSLOG, LOG_TARGET_STDERR };

void log_open(const char *ident, enum log_target target);
void log_set_verbose(int on);
void log_msg(int priority, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/*
 * Render s as a log value into buf: bare if it is made only of safe
 * printable characters, otherwise in double quotes with \", \\ and \xNN
 * escapes.  Always NUL-terminates; truncates long values with "...".
 * Returns buf.  A NULL s renders as "".
 */
const char *log_quote(char *buf, size_t len, const char *s);

#endif
