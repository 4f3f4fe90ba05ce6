/*
 * authres: the trace headers filterd adds, built here from parsed values
 * and never copied from libspf2: Received-SPF (RFC 7208 §9.1) and
 * Authentication-Results (RFC 8601).  Every value that came from a client
 * is either a dot-atom or a quoted-string with CR, LF and other controls
 * replaced, so a client cannot end a field, start a new one, or forge a
 * result.
 */
#ifndef SPFGATE_AUTHRES_H
#define SPFGATE_AUTHRES_H

#include <stddef.h>

/* Append s to buf as a dot-atom if it is one, else as a quoted-string.
 * Long values are cut (with "...") to at most max characters of s. */
void authres_value(char *buf, size_t len, const char *s, size_t max);
/* Append s for use inside a header comment "( ... )": controls replaced,
 * parentheses and backslashes escaped. */
void authres_comment(char *buf, size_t len, const char *s, size_t max);
/* Does an Authentication-Results value carry this authserv-id? */
int authres_is_ours(const char *value, const char *authserv_id);

#endif
