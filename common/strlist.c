/*
 * strlist: growable arrays of owned strings for configuration lists.
 */
#include "strlist.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
strlist_add(struct strlist *l, const char *s)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 4;
		char **v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	if ((l->v[l->n] = strdup(s)) == NULL)
		return -1;
	l->n++;
	return 0;
}

int
strlist_split(struct strlist *l, const char *s)
{
	while (*s) {
		while (*s == ',' || isspace((unsigned char)*s))
			s++;
		size_t len = 0;
		while (s[len] && s[len] != ',' && !isspace((unsigned char)s[len]))
			len++;
		if (len == 0)
			break;
		char *item = strndup(s, len);
		if (item == NULL || strlist_add(l, item) < 0) {
			free(item);
			return -1;
		}
		free(item);
		s += len;
	}
	return 0;
}

int
strlist_contains_ci(const struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcasecmp(l->v[i], s) == 0)
			return 1;
	return 0;
}

void
strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

int
strlist_equal(const struct strlist *a, const struct strlist *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->v[i], b->v[i]) != 0)
			return 0;
	return 1;
}
