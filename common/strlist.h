/*
 * strlist: a growable array of owned strings, used for comma/space
 * separated configuration lists.
 */
#ifndef SPFGATE_STRLIST_H
#define SPFGATE_STRLIST_H

#include <stddef.h>

struct strlist {
	char **v;
	size_t n, cap;
};

int strlist_add(struct strlist *l, const char *s);       /* 0 or -1 (ENOMEM) */
/* Split on commas and white space, appending each non-empty item. */
int strlist_split(struct strlist *l, const char *s);
int strlist_contains_ci(const struct strlist *l, const char *s);
/* The same strings in the same order? */
int strlist_equal(const struct strlist *a, const struct strlist *b);
void strlist_free(struct strlist *l);

#endif
