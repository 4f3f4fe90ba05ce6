/*
 * log: one line per event, to syslog (facility mail), to stderr, or to
 * three files in one folder as Exim keeps them: mainlog (every line),
 * rejectlog (refused mail, log_reject) and paniclog (errors, log_err).
 * Lines are "key=value" pairs; callers quote untrusted values with
 * log_quote() so that a client cannot inject a second log line.
 */
#ifndef SPFGATE_LOG_H
#define SPFGATE_LOG_H

#include <stddef.h>
#include <syslog.h>

enum log_target { LOG_TARGET_SYSLOG, LOG_TARGET_STDERR, LOG_TARGET_FILES };

void log_open(const char *ident, enum log_target target);
/*
 * Open the [global] log of the configuration: "syslog", "stderr" or
 * "files:/DIR" (to_stderr overrides it).  0, or -1 with err.
 */
int log_open_spec(const char *ident, const char *spec, int to_stderr,
                  char *err, size_t errlen);
/* Files only: open them again (after logrotate moved them); SIGHUP. */
void log_reopen(void);
void log_set_verbose(int on);
void log_msg(int priority, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_reject(...) log_msg(LOG_NOTICE, __VA_ARGS__)
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
