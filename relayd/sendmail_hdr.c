/*
 * sendmail_hdr: the message's header section, the way a local
 * submission needs it.
 *
 * The headers run from the top (after a leading mbox "From " line,
 * which sendmail has always skipped) to the first empty line, or to the
 * first line that is neither a header field nor a continuation: that
 * line starts the body, and an empty line is put before it when the
 * message is sent, so that readers do not take body text for headers.
 * Bcc: never leaves; -t takes the recipients from To:, Cc: and Bcc:
 * (or from the Resent- ones when a Resent- header is present, as
 * sendmail and Postfix do); a missing From:, Date: or Message-ID: is
 * added at the end, as Postfix's cleanup does for local submissions.
 */
#include "sendmail.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* "Name:" or "Name :" -> the name's length, or 0 for a non-header. */
static size_t
field_name_len(const char *p, size_t n)
{
	size_t i = 0, name;

	while (i < n && (unsigned char)p[i] > 32 && (unsigned char)p[i] < 127 && p[i] != ':')
		i++;
	name = i;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return name > 0 && i < n && p[i] == ':' ? name : 0;
}

static int
add_hdr(struct message *m, size_t off, size_t len, size_t namelen)
{
	if (m->nh == m->hcap) {
		size_t cap = m->hcap ? m->hcap * 2 : 32;
		struct hdr *h = realloc(m->h, cap * sizeof(*h));
		if (h == NULL)
			return -1;
		m->h = h;
		m->hcap = cap;
	}
	m->h[m->nh++] = (struct hdr){ .off = off, .len = len, .namelen = namelen };
	return 0;
}

int
msg_parse(struct message *m, struct msgtext *text)
{
	size_t pos = 0;

	memset(m, 0, sizeof(*m));
	m->text = *text;
	memset(text, 0, sizeof(*text));
	const char *p = m->text.p;
	size_t len = m->text.len;

	if (len >= 5 && memcmp(p, "From ", 5) == 0)
		pos = (size_t)((const char *)memchr(p, '\n', len) - p) + 1;
	m->start = pos;
	m->body = len;
	while (pos < len) {
		const char *nl = memchr(p + pos, '\n', len - pos);
		size_t n = (size_t)(nl - (p + pos)), namelen;

		if (n == 0) {
			m->body = pos + 1;
			m->separated = 1;
			break;
		}
		if ((p[pos] == ' ' || p[pos] == '\t') && m->nh > 0) {
			m->h[m->nh - 1].len += n + 1;
		} else if ((namelen = field_name_len(p + pos, n)) > 0) {
			if (add_hdr(m, pos, n + 1, namelen) < 0)
				return -1;
		} else {
			m->body = pos;
			break;
		}
		pos += n + 1;
	}
	return 0;
}

void
message_free(struct message *m)
{
	msg_free(&m->text);
	free(m->h);
	memset(m, 0, sizeof(*m));
}

static int
named(const struct message *m, const struct hdr *h, const char *name)
{
	return h->namelen == strlen(name)
	       && strncasecmp(m->text.p + h->off, name, h->namelen) == 0;
}

const struct hdr *
msg_find(const struct message *m, const char *name)
{
	for (size_t i = 0; i < m->nh; i++)
		if (named(m, &m->h[i], name))
			return &m->h[i];
	return NULL;
}

char *
msg_value(const struct message *m, const struct hdr *h)
{
	const char *p = m->text.p + h->off;
	const char *end = p + h->len - 1;       /* without the last '\n' */
	const char *v = memchr(p, ':', h->len) + 1;
	char *out = malloc(h->len + 1), *o = out;

	if (out == NULL)
		return NULL;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	for (; v < end; v++)
		if (*v != '\n')         /* unfold: the line end goes, the WSP stays */
			*o++ = *v;
	*o = '\0';
	return out;
}

int
msg_extract_rcpts(const struct message *m, const char *domain,
                  struct strlist *rcpts, char *err, size_t errlen)
{
	static const char *const plain[] = { "To", "Cc", "Bcc" };
	static const char *const resent[] = { "Resent-To", "Resent-Cc", "Resent-Bcc" };
	const char *const *names = plain;
	char why[300];

	for (size_t i = 0; i < m->nh; i++)
		if (m->h[i].namelen > 7 && strncasecmp(m->text.p + m->h[i].off, "Resent-", 7) == 0)
			names = resent;
	for (size_t i = 0; i < m->nh; i++) {
		const struct hdr *h = &m->h[i];
		for (size_t k = 0; k < 3; k++) {
			if (!named(m, h, names[k]))
				continue;
			char *v = msg_value(m, h);
			if (v == NULL) {
				snprintf(err, errlen, "out of memory");
				return -1;
			}
			int rc = addrlist_parse(v, domain, rcpts, why, sizeof(why));
			free(v);
			if (rc < 0) {
				snprintf(err, errlen, "%s: header: %s", names[k], why);
				return -1;
			}
		}
	}
	return 0;
}

void
msg_drop_bcc(struct message *m)
{
	for (size_t i = 0; i < m->nh; i++)
		if (named(m, &m->h[i], "Bcc") || named(m, &m->h[i], "Resent-Bcc"))
			m->h[i].drop = 1;
}

/* ------------------------------------------------------- new headers */

static int
is_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
	       || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static void
b64(const unsigned char *in, size_t n, char *out)
{
	static const char a[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (; n >= 3; n -= 3, in += 3, out += 4) {
		out[0] = a[in[0] >> 2];
		out[1] = a[((in[0] & 3) << 4) | (in[1] >> 4)];
		out[2] = a[((in[1] & 15) << 2) | (in[2] >> 6)];
		out[3] = a[in[2] & 63];
	}
	if (n) {
		out[0] = a[in[0] >> 2];
		out[1] = a[((in[0] & 3) << 4) | (n > 1 ? in[1] >> 4 : 0)];
		out[2] = n > 1 ? a[(in[1] & 15) << 2] : '=';
		out[3] = '=';
		out += 4;
	}
	*out = '\0';
}

char *
phrase_encode(const char *name)
{
	size_t n = strlen(name);
	char *clean = malloc(n + 1), *out;
	int eight = 0, special = 0;

	if (clean == NULL)
		return NULL;
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = (unsigned char)name[i];
		clean[i] = (char)(i < n && (c < 0x20 || c == 0x7f) ? ' ' : c);
	}
	while (n > 0 && clean[n - 1] == ' ')
		clean[--n] = '\0';
	char *s = clean + strspn(clean, " ");
	n = strlen(s);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x80)
			eight = 1;
		else if (c != ' ' && !is_atext(c))
			special = 1;
	}
	if (eight) {
		/* encoded words of at most 45 octets (75 characters), each
		 * ending on a UTF-8 character boundary */
		out = malloc(n * 2 + (n / 40 + 1) * 16 + 1);
		if (out != NULL) {
			char *o = out;
			for (size_t i = 0; i < n; ) {
				size_t k = n - i > 45 ? 45 : n - i;
				while (k > 1 && i + k < n && ((unsigned char)s[i + k] & 0xC0) == 0x80)
					k--;
				o += sprintf(o, "%s=?UTF-8?B?", i ? " " : "");
				b64((const unsigned char *)s + i, k, o);
				o += strlen(o);
				o += sprintf(o, "?=");
				i += k;
			}
		}
	} else if (special) {
		out = malloc(n * 2 + 3);
		if (out != NULL) {
			char *o = out;
			*o++ = '"';
			for (size_t i = 0; i < n; i++) {
				if (s[i] == '"' || s[i] == '\\')
					*o++ = '\\';
				*o++ = s[i];
			}
			*o++ = '"';
			*o = '\0';
		}
	} else {
		out = strdup(s);
	}
	free(clean);
	return out;
}

static void
rfc5322_date(long long now, char *buf, size_t len)
{
	time_t t = (time_t)now;
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(buf, len, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

int
msg_added_headers(const struct message *m, const struct submitter *s, struct added *out)
{
	char date[64], rnd[40], stamp[32];
	char *name = NULL;
	const char *from = s->sender[0] ? s->sender : s->user_addr;
	size_t cap;

	memset(out, 0, sizeof(*out));
	rfc5322_date(s->now, date, sizeof(date));
	if (asprintf(&out->top, "Received: by %s (" SM_NAME ", from userid %lu);\n\t%s\n",
	             s->mail_name, s->uid, date) < 0) {
		out->top = NULL;
		return -1;
	}
	if (s->fullname && (name = phrase_encode(s->fullname)) == NULL)
		return -1;
	cap = strlen(from) + strlen(s->mail_name) + (name ? strlen(name) : 0) + 256;
	if ((out->end = malloc(cap)) == NULL) {
		free(name);
		return -1;
	}
	char *o = out->end;
	*o = '\0';
	if (msg_find(m, "From") == NULL) {
		if (name && *name)
			o += sprintf(o, "From: %s <%s>\n", name, from);
		else
			o += sprintf(o, "From: %s\n", from);
	}
	if (msg_find(m, "Date") == NULL)
		o += sprintf(o, "Date: %s\n", date);
	if (msg_find(m, "Message-ID") == NULL) {
		if (s->msgid_rand) {
			snprintf(rnd, sizeof(rnd), "%s", s->msgid_rand);
		} else {
			unsigned char r[8];
			if (getrandom(r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
				unsigned long long x = (unsigned long long)s->now * 2654435761u
				                       ^ ((unsigned long long)getpid() << 20)
				                       ^ (unsigned long long)clock();
				memcpy(r, &x, sizeof(r));
			}
			for (size_t i = 0; i < sizeof(r); i++)
				sprintf(rnd + 2 * i, "%02X", r[i]);
		}
		time_t t = (time_t)s->now;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		sprintf(o, "Message-ID: <%s.%s@%s>\n", stamp, rnd, s->mail_name);
	}
	free(name);
	return 0;
}

void
added_free(struct added *a)
{
	free(a->top);
	free(a->end);
	memset(a, 0, sizeof(*a));
}
