/*
 * msgedit: apply a filter's header and body changes (struct filter_mod,
 * filter.h) to a message, msgbuf to msgbuf.  The header section is
 * parsed into fields (a line starting with a blank continues the field
 * before it); the body is copied through, or replaced.
 */
#ifndef RELAYD_MSGEDIT_H
#define RELAYD_MSGEDIT_H

#include <stddef.h>
#include "filter.h"
#include "msgbuf.h"

/* Does any of mods change the message text (headers or body)? */
int msgedit_needed(const struct filter_mod *mods, size_t n);
/* out must be initialised (empty).  0, or -1 (out of memory, read error). */
int msgedit_apply(struct msgbuf *in, const struct filter_mod *mods, size_t n,
                  struct msgbuf *out);

#endif
