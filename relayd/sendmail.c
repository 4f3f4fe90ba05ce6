/*
 * spfgate-sendmail: the sendmail(1) command line for local programs
 * (mail(1), cron, scripts), as Postfix's and Exim's sendmail provide it.
 * The message is read from standard input, completed as a local
 * submission (see sendmail_hdr.c) and handed to relayd over SMTP on
 * loopback; the exit status says what became of it (<sysexits.h>):
 * 0 once relayd said 250 (deliverd has it on stable storage), 75 when
 * it could not be handed over now, another code when it was refused.
 *
 * Modes: -bm (the default) submits; -bs relays an SMTP session on
 * stdin/stdout; -bv checks recipients only; -bp (or the name "mailq")
 * lists the queue and -q flushes it, through spfgate-queue; -bi (or the
 * name "newaliases") explains that there is nothing to build.
 */
#include "config.h"
#include "sendmail.h"

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#ifndef QUEUE_TOOL
#define QUEUE_TOOL "/usr/bin/spfgate-queue"
#endif

#define TIMEOUT_CONNECT 30
#define TIMEOUT_CMD     300
#define TIMEOUT_DATA    900     /* milters and deliverd's fsync after the dot */

struct opts {
	const char *config;
	char mode;              /* m s v p q i */
	const char *badmode;    /* an -b mode we do not have */
	int extract;            /* -t */
	int dot_ends;           /* no -i */
	const char *sender;     /* -f, -r */
	const char *fullname;   /* -F */
	int verbose;            /* -v */
};

static void
usage(void)
{
	fprintf(stderr,
	        "usage: " SM_NAME " [-bm|-bs|-bv|-bp|-bi|-q] [-C FILE] [-f SENDER] [-F NAME]"
	        " [-i] [-t] [-v] [RECIPIENT ...]\n");
	exit(EX_USAGE);
}

/*
 * sendmail's options.  Those that tune a sendmail or Postfix queue
 * manager (-o, -e, -B, -N, -R, -V, -h, -p, ...) are accepted and
 * ignored, as Postfix does, so that callers work unchanged; "-oi" is
 * "-i".  Parsing stops at the first recipient, as Postfix's does.
 */
static void
parse_opts(int argc, char **argv, struct opts *o)
{
	int c;

	while ((c = getopt(argc, argv, "+A:B:b:C:cd::e:F:f:GIih:L:mN:nO:o:p:q::R:r:tUV:vX:x")) != -1) {
		switch (c) {
		case 'b':
			if (strchr("msvpi", optarg[0]) && optarg[1] == '\0')
				o->mode = optarg[0];
			else
				o->badmode = optarg;
			break;
		case 'C': o->config = optarg; break;
		case 'F': o->fullname = optarg; break;
		case 'f':
		case 'r': o->sender = optarg; break;
		case 'I': o->mode = 'i'; break;
		case 'i': o->dot_ends = 0; break;
		case 'o':
			if (strcmp(optarg, "i") == 0)
				o->dot_ends = 0;
			break;
		case 'q':
			/* -q, -qRsite, -qSsender, -qIid: flush (the whole queue:
			 * spfgate-queue has no narrower flush); -q30m: a
			 * queue-run interval, deliverd's business: ignored */
			o->mode = optarg && optarg[0] >= '0' && optarg[0] <= '9' ? 'n' : 'q';
			break;
		case 't': o->extract = 1; break;
		case 'v': o->verbose = 1; break;
		case '?': usage(); break;
		default: break;
		}
	}
}

/* A reply's lines on one line, for a message on stderr. */
static const char *
flat(const char *text, char *buf, size_t len)
{
	snprintf(buf, len, "%s", text);
	for (char *p = buf; *p; p++)
		if (*p == '\n' || (unsigned char)*p < 0x20)
			*p = ' ';
	return buf;
}

static int
refused(struct smtp *s, const char *what, int rcpt, const char *outcome)
{
	char t[sizeof(s->text)];

	if (s->code < 0) {
		fprintf(stderr, SM_NAME ": %s; %s\n", s->err, outcome);
		return EX_TEMPFAIL;
	}
	fprintf(stderr, SM_NAME ": relayd at %s refused %s: %s; %s\n", s->peer, what,
	        flat(s->text, t, sizeof(t)), outcome);
	return smtp_exit_code(s->code, s->text, rcpt);
}

static int
open_session(struct smtp *s, const struct config *cfg, const struct opts *o)
{
	struct strlist targets = { 0 };
	int rc;

	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->verbose = o->verbose;
	if (smtp_targets(&cfg->relayd.listen, getenv("SPFGATE_RELAYD"), &targets) < 0) {
		fprintf(stderr, SM_NAME ": out of memory\n");
		return EX_OSERR;
	}
	rc = smtp_connect(s, &targets, TIMEOUT_CONNECT);
	strlist_free(&targets);
	if (rc < 0) {
		fprintf(stderr, SM_NAME ": %s; message not sent\n", s->err);
		return EX_TEMPFAIL;
	}
	return 0;
}

static int
greet(struct smtp *s, const struct config *cfg)
{
	if (smtp_reply(s, TIMEOUT_CMD) != 220)
		return refused(s, "the connection", 0, "message not sent");
	if (smtp_hello(s, cfg->mail_name) != 250)
		return refused(s, "EHLO", 0, "message not sent");
	return 0;
}

struct user {
	char addr[SM_ADDR_LEN];    /* login@mail_name */
	char gecos[256];            /* the full name, '&' expanded */
	unsigned long uid;
};

static int
invoking_user(const struct config *cfg, struct user *u)
{
	struct passwd *pw;
	char err[300];

	u->uid = (unsigned long)getuid();
	if ((pw = getpwuid(getuid())) == NULL) {
		fprintf(stderr, SM_NAME ": no user name for uid %lu\n", u->uid);
		return EX_NOUSER;
	}
	if (addr_envelope(pw->pw_name, cfg->mail_name, u->addr, sizeof(u->addr),
	                  err, sizeof(err)) < 0 || u->addr[0] == '\0') {
		fprintf(stderr, SM_NAME ": user %s: %s\n", pw->pw_name, err);
		return EX_NOUSER;
	}
	/* GECOS: "Full Name,room,phone"; '&' stands for the login, capitalised */
	size_t o = 0;
	for (const char *g = pw->pw_gecos ? pw->pw_gecos : ""; *g && *g != ','; g++) {
		if (*g == '&') {
			for (const char *n = pw->pw_name; *n && o + 1 < sizeof(u->gecos); n++)
				u->gecos[o++] = n == pw->pw_name && *n >= 'a' && *n <= 'z'
				                ? (char)(*n - 32) : *n;
		} else if (o + 1 < sizeof(u->gecos)) {
			u->gecos[o++] = *g;
		}
	}
	u->gecos[o] = '\0';
	return 0;
}

/* The envelope: sender and recipients from the command line. */
static int
envelope(const struct config *cfg, const struct opts *o, const struct user *u,
         int argc, char **argv, char *sender, size_t slen, struct strlist *rcpts)
{
	char err[400];

	if (o->sender == NULL)
		snprintf(sender, slen, "%s", u->addr);
	else if (addr_envelope(o->sender, cfg->mail_name, sender, slen, err, sizeof(err)) < 0) {
		fprintf(stderr, SM_NAME ": -f %s: %s\n", o->sender, err);
		return EX_USAGE;
	}
	for (int i = 0; i < argc; i++)
		if (addrlist_parse(argv[i], cfg->mail_name, rcpts, err, sizeof(err)) < 0) {
			fprintf(stderr, SM_NAME ": recipient %s: %s\n", argv[i], err);
			return EX_NOUSER;
		}
	return 0;
}

/* RCPT for each; the exit status for the refused ones (0: none). */
static int
send_rcpts(struct smtp *s, const struct strlist *rcpts, int verify, size_t *accepted)
{
	char what[SM_ADDR_LEN + 16], t[sizeof(s->text)];
	int worst = 0, temp = 0;

	*accepted = 0;
	for (size_t i = 0; i < rcpts->n; i++) {
		int code = smtp_cmd(s, TIMEOUT_CMD, "RCPT TO:<%s>", rcpts->v[i]);
		if (code < 0)
			return refused(s, "", 1, "message not sent");
		if (code == 250 || code == 251) {
			(*accepted)++;
			if (verify)
				printf("%s... deliverable: %s\n", rcpts->v[i], flat(s->text, t, sizeof(t)));
			continue;
		}
		if (verify) {
			printf("%s... undeliverable: %s\n", rcpts->v[i], flat(s->text, t, sizeof(t)));
			if (worst == 0)
				worst = smtp_exit_code(code, s->text, 1);
			continue;
		}
		snprintf(what, sizeof(what), "RCPT TO:<%s>", rcpts->v[i]);
		int rc = refused(s, what, 1, code < 500 ? "message not sent" : "not sent to this recipient");
		if (code < 500)
			temp = 1;
		else if (worst == 0)
			worst = rc;
	}
	/* a recipient that may work later: send nothing, so that the caller
	 * can try the whole message again without duplicates */
	return temp ? EX_TEMPFAIL : worst;
}

static int
submit(const struct config *cfg, const struct opts *o, int argc, char **argv)
{
	struct strlist rcpts = { 0 };
	struct message m = { 0 };
	struct msgtext text = { 0 };
	struct added add = { 0 };
	struct user u = { 0 };
	struct smtp s = { .fd = -1 };
	struct wire w;
	char sender[SM_ADDR_LEN], err[SM_ADDR_LEN + 32];
	size_t accepted;
	int rc, rcpt_rc = 0;

	if ((rc = invoking_user(cfg, &u)) != 0
	    || (rc = envelope(cfg, o, &u, argc, argv, sender, sizeof(sender), &rcpts)) != 0)
		goto out;
	if (rcpts.n == 0 && !o->extract) {
		fprintf(stderr, SM_NAME ": no recipients given (name them, or use -t)\n");
		rc = EX_USAGE;
		goto out;
	}
	rc = msg_read(stdin, o->dot_ends, (size_t)cfg->relayd.message_size_limit, &text);
	if (rc != IN_OK) {
		if (rc == IN_TOOBIG)
			fprintf(stderr, SM_NAME ": message larger than message_size_limit (%ld octets); "
			        "not sent\n", cfg->relayd.message_size_limit);
		else
			fprintf(stderr, SM_NAME ": reading the message: %s; not sent\n",
			        rc == IN_IOERR ? strerror(errno) : "out of memory");
		rc = rc == IN_TOOBIG ? EX_DATAERR : rc == IN_IOERR ? EX_IOERR : EX_OSERR;
		msg_free(&text);
		goto out;
	}
	if (msg_parse(&m, &text) < 0) {
		fprintf(stderr, SM_NAME ": out of memory\n");
		rc = EX_OSERR;
		goto out;
	}
	if (o->extract && msg_extract_rcpts(&m, cfg->mail_name, &rcpts, err, sizeof(err)) < 0) {
		fprintf(stderr, SM_NAME ": %s; not sent\n", err);
		rc = EX_DATAERR;
		goto out;
	}
	if (rcpts.n == 0) {
		fprintf(stderr, SM_NAME ": no recipients in the To:, Cc: or Bcc: headers\n");
		rc = EX_USAGE;
		goto out;
	}
	msg_drop_bcc(&m);

	const char *name = o->fullname ? o->fullname : getenv("NAME");
	struct submitter sub = {
		.mail_name = cfg->mail_name, .sender = sender, .user_addr = u.addr,
		.fullname = name ? name : o->sender == NULL && u.gecos[0] ? u.gecos : NULL,
		.uid = u.uid, .now = (long long)time(NULL),
	};
	if (msg_added_headers(&m, &sub, &add) < 0) {
		fprintf(stderr, SM_NAME ": out of memory\n");
		rc = EX_OSERR;
		goto out;
	}
	wire_init(&w, NULL, NULL);
	wire_message(&w, &m, &add);

	if ((rc = open_session(&s, cfg, o)) != 0 || (rc = greet(&s, cfg)) != 0)
		goto out;
	if (s.ext_size && s.size_max > 0 && w.bytes > (unsigned long long)s.size_max) {
		fprintf(stderr, SM_NAME ": message of %llu octets is larger than relayd at %s "
		        "accepts (SIZE %lld); not sent\n", w.bytes, s.peer, s.size_max);
		rc = EX_DATAERR;
		goto quit;
	}
	char size[32] = "";
	if (s.ext_size)
		snprintf(size, sizeof(size), " SIZE=%llu", w.bytes);
	if (smtp_cmd(&s, TIMEOUT_CMD, "MAIL FROM:<%s>%s%s", sender, size,
	             m.text.eight_bit && s.ext_8bit ? " BODY=8BITMIME" : "") != 250) {
		snprintf(err, sizeof(err), "MAIL FROM:<%s>", sender);
		rc = refused(&s, err, 0, "message not sent");
		goto quit;
	}
	rcpt_rc = send_rcpts(&s, &rcpts, 0, &accepted);
	if (rcpt_rc == EX_TEMPFAIL || accepted == 0) {
		rc = rcpt_rc;
		goto quit;
	}
	if (smtp_cmd(&s, TIMEOUT_CMD, "DATA") != 354) {
		rc = refused(&s, "DATA", 0, "message not sent");
		goto quit;
	}
	wire_init(&w, smtp_sink, &s);
	wire_message(&w, &m, &add);
	wire_raw(&w, ".\r\n", 3);
	if (wire_flush(&w) < 0 || smtp_reply(&s, TIMEOUT_DATA) != 250) {
		rc = refused(&s, "the message", 0, "message not sent");
		goto quit;
	}
	rc = rcpt_rc;
quit:
	if (s.code > 0)
		(void)smtp_cmd(&s, TIMEOUT_CMD, "QUIT");
out:
	smtp_close(&s);
	added_free(&add);
	message_free(&m);
	strlist_free(&rcpts);
	return rc;
}

/* -bv: ask relayd about each recipient, send nothing. */
static int
verify(const struct config *cfg, const struct opts *o, int argc, char **argv)
{
	struct strlist rcpts = { 0 };
	struct user u = { 0 };
	struct smtp s = { .fd = -1 };
	char sender[SM_ADDR_LEN], err[SM_ADDR_LEN + 32];
	size_t accepted;
	int rc;

	if ((rc = invoking_user(cfg, &u)) != 0
	    || (rc = envelope(cfg, o, &u, argc, argv, sender, sizeof(sender), &rcpts)) != 0)
		goto out;
	if (rcpts.n == 0) {
		fprintf(stderr, SM_NAME ": -bv: no recipients given\n");
		rc = EX_USAGE;
		goto out;
	}
	if ((rc = open_session(&s, cfg, o)) != 0 || (rc = greet(&s, cfg)) != 0)
		goto out;
	if (smtp_cmd(&s, TIMEOUT_CMD, "MAIL FROM:<%s>", sender) != 250) {
		snprintf(err, sizeof(err), "MAIL FROM:<%s>", sender);
		rc = refused(&s, err, 0, "nothing verified");
	} else {
		rc = send_rcpts(&s, &rcpts, 1, &accepted);
		if (s.code > 0)
			(void)smtp_cmd(&s, TIMEOUT_CMD, "RSET");
	}
	if (s.code > 0)
		(void)smtp_cmd(&s, TIMEOUT_CMD, "QUIT");
out:
	smtp_close(&s);
	strlist_free(&rcpts);
	return rc;
}

static int
session(const struct config *cfg, const struct opts *o)
{
	struct smtp s;
	int rc;

	if ((rc = open_session(&s, cfg, o)) != 0)
		return rc;
	rc = bs_relay(&s, 0, 1);
	smtp_close(&s);
	return rc;
}

/* -bp and -q: the queue is spfgate-queue's. */
static int
run_queue(const char *config, const char *cmd)
{
	const char *tool = getenv("SPFGATE_QUEUE");
	char *args[] = { (char *)"spfgate-queue", (char *)"-c", (char *)config,
	                 (char *)cmd, NULL };

	if (tool == NULL || *tool == '\0')
		tool = QUEUE_TOOL;
	fflush(NULL);
	execv(tool, args);
	fprintf(stderr, SM_NAME ": cannot run %s: %s\n", tool, strerror(errno));
	return EX_UNAVAILABLE;
}

int
main(int argc, char **argv)
{
	struct opts o = { .mode = 'm', .dot_ends = 1 };
	struct config cfg;
	char err[600];
	const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	int rc;

	/* a closed connection is an error reply, not a killed sender */
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(base, "mailq") == 0)
		o.mode = 'p';
	else if (strcmp(base, "newaliases") == 0)
		o.mode = 'i';
	parse_opts(argc, argv, &o);
	if (o.badmode) {
		fprintf(stderr, SM_NAME ": -b%s is not supported (relayd and deliverd run as "
		        "services of their own)\n", o.badmode);
		return EX_USAGE;
	}
	if (o.config == NULL)
		o.config = CONFIG_DEFAULT_PATH;
	if (o.mode == 'p')
		return run_queue(o.config, "list");
	if (o.mode == 'q')
		return run_queue(o.config, "flush");
	if (o.mode == 'n')
		return 0;
	if (access(o.config, R_OK) < 0) {
		/* every user who sends mail reads it: say why, not just "cannot open" */
		fprintf(stderr, SM_NAME ": cannot read %s: %s\n", o.config, strerror(errno));
		return EX_CONFIG;
	}
	if (config_load(&cfg, o.config, err, sizeof(err)) < 0) {
		fprintf(stderr, SM_NAME ": %s\n", err);
		config_free(&cfg);
		return EX_CONFIG;
	}
	switch (o.mode) {
	case 'i':
		if (cfg.deliverd.aliases[0])
			fprintf(stderr, SM_NAME ": no alias database to build: deliverd reads %s "
			        "itself when it starts and when it is reloaded "
			        "(systemctl reload spfgate-deliverd)\n", cfg.deliverd.aliases);
		else
			fprintf(stderr, SM_NAME ": no alias database to build: deliverd uses no "
			        "aliases file ([deliverd] aliases is empty)\n");
		rc = 0;
		break;
	case 's':
		rc = session(&cfg, &o);
		break;
	case 'v':
		rc = verify(&cfg, &o, argc - optind, argv + optind);
		break;
	default:
		rc = submit(&cfg, &o, argc - optind, argv + optind);
	}
	config_free(&cfg);
	if (fflush(stdout) != 0 && rc == 0)
		rc = EX_IOERR;
	return rc;
}
