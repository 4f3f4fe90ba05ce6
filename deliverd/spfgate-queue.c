/*
 * spfgate-queue: the mail administrator's view of deliverd's queue.
 *
 *   spfgate-queue [-c FILE] [-t] list|flush|delete ID|hold ID|release ID
 *
 * list reads the spool itself (so it works while deliverd is down): one
 * block per message, like mailq -- id ('!' when held), age, size, sender,
 * then why a filter quarantined it (if one did), the last delivery error
 * and each recipient with its state.  The
 * other commands change the queue, which only the running deliverd may
 * do (its scheduler must know): they go through its control socket.
 * -t only checks the configuration file.  Exit 0 on success, 1 on
 * failure, 2 on bad usage or a bad configuration.
 */
#include "config.h"
#include "spool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void
usage(void)
{
	fprintf(stderr, "usage: spfgate-queue [-c FILE] [-t] list|flush|delete ID|hold ID|release ID\n");
	exit(2);
}

static const char *
age(time_t arrival, char *buf, size_t len)
{
	long s = (long)(time(NULL) - arrival);

	if (s < 0)
		s = 0;
	if (s < 120)
		snprintf(buf, len, "%lds", s);
	else if (s < 7200)
		snprintf(buf, len, "%ldm", s / 60);
	else if (s < 172800)
		snprintf(buf, len, "%ldh", s / 3600);
	else
		snprintf(buf, len, "%ldd", s / 86400);
	return buf;
}

static const char *
state_name(enum rcpt_state st)
{
	switch (st) {
	case RCPT_PENDING: return "pending";
	case RCPT_DONE:    return "delivered";
	case RCPT_BOUNCED: return "bounced";
	}
	return "?";
}

/* Untrusted text goes to a terminal: no control characters. */
static void
print_clean(const char *s)
{
	for (; *s; s++)
		putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

struct listing {
	struct spool *spool;
	int n;
	long long bytes;
};

static void
list_one(const char *id, void *arg)
{
	struct listing *l = arg;
	struct spool_msg m;
	char a[24], err[1100];
	int attempts;

	if (spool_load(l->spool, id, &m) != 0)
		return;         /* delivered meanwhile, or moved to corrupt/ */
	if (l->n++ == 0)
		printf("%-18s %5s %10s  %s\n", "-Queue ID-", "-Age-", "-Size-", "-Sender/Recipient-");
	l->bytes += (long long)m.body_len;
	printf("%-17s%c %5s %10lld  <", m.id, m.held ? '!' : ' ', age(m.arrival, a, sizeof(a)),
	       (long long)m.body_len);
	print_clean(m.sender);
	printf(">%s\n", m.held ? "  (held)" : "");
	if (m.quarantine) {
		/* why a filter had it held at arrival (still shown once released) */
		printf("%37s(quarantined: ", "");
		print_clean(m.quarantine);
		printf(")\n");
	}
	if (spool_read_defer(l->spool, id, &attempts, err, sizeof(err)) == 0 && attempts > 0) {
		printf("%37s(%d attempt%s: ", "", attempts, attempts == 1 ? "" : "s");
		print_clean(err);
		printf(")\n");
	}
	for (size_t i = 0; i < m.nrcpt; i++) {
		printf("%37s%-9s ", "", state_name(m.rcpt[i].state));
		print_clean(m.rcpt[i].orig);
		if (strcmp(m.rcpt[i].addr, m.rcpt[i].orig) != 0) {
			printf(" -> ");
			print_clean(m.rcpt[i].addr);
		}
		putchar('\n');
	}
	spool_msg_free(&m);
}

static int
cmd_list(const struct config *cfg)
{
	struct listing l = { 0 };
	struct stat st;
	char err[512];
	char q[4096];

	snprintf(q, sizeof(q), "%s/queue", cfg->deliverd.spool);
	if (stat(q, &st) < 0 && errno == ENOENT) {
		/* not created yet: do not make one as a side effect of looking */
		printf("Mail queue is empty\n");
		return 0;
	}
	if (access(q, R_OK | X_OK) < 0) {
		/* never "empty" for a queue we may not see */
		fprintf(stderr, "spfgate-queue: cannot read the queue %s: %s (it holds everyone's "
		        "mail: only root and deliverd's user may list it)\n", q, strerror(errno));
		return 1;
	}
	if ((l.spool = spool_open(cfg->deliverd.spool, err, sizeof(err))) == NULL) {
		fprintf(stderr, "spfgate-queue: %s\n", err);
		return 1;
	}
	if (spool_scan(l.spool, 1, list_one, &l) < 0) {
		fprintf(stderr, "spfgate-queue: cannot read %s: %s\n", cfg->deliverd.spool,
		        strerror(errno));
		spool_close(l.spool);
		return 1;
	}
	if (l.n == 0)
		printf("Mail queue is empty\n");
	else
		printf("-- %lld Kbytes in %d Request%s.\n", (l.bytes + 1023) / 1024, l.n,
		       l.n == 1 ? "" : "s");
	spool_close(l.spool);
	return 0;
}

static int
cmd_control(const struct config *cfg, const char *line)
{
	const char *path = cfg->deliverd.control;
	struct sockaddr_un sun;
	char buf[1024];
	size_t got = 0;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "spfgate-queue: %s: socket path too long\n", path);
		return 1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0
	    || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;
		fprintf(stderr, "spfgate-queue: deliverd is not running "
		        "(cannot connect to %s: %s)\n", path, strerror(e));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	snprintf(buf, sizeof(buf), "%s\nQUIT\n", line);
	if (write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf)) {
		fprintf(stderr, "spfgate-queue: %s: %s\n", path, strerror(errno));
		close(fd);
		return 1;
	}
	while (got < sizeof(buf) - 1 && memchr(buf, '\n', got) == NULL) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (strcmp(buf, "ok") == 0)
		return 0;
	fprintf(stderr, "spfgate-queue: %s\n", got ? buf : "no answer from deliverd");
	return 1;
}

int
main(int argc, char **argv)
{
	const char *path = CONFIG_DEFAULT_PATH, *cmd, *id = NULL;
	struct config cfg;
	char err[512], line[128];
	int check = 0, c, rc;

	while ((c = getopt(argc, argv, "c:th")) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 't': check = 1; break;
		default: usage();
		}
	}
	if (config_load(&cfg, path, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		config_free(&cfg);
		return 2;
	}
	if (check) {
		config_free(&cfg);
		return optind == argc ? 0 : 2;
	}
	if (optind >= argc)
		usage();
	cmd = argv[optind++];
	if (strcmp(cmd, "delete") == 0 || strcmp(cmd, "hold") == 0 || strcmp(cmd, "release") == 0) {
		if (optind != argc - 1)
			usage();
		id = argv[optind];
		if (!spool_valid_id(id)) {
			fprintf(stderr, "spfgate-queue: %s: not a queue id\n", id);
			config_free(&cfg);
			return 2;
		}
	} else if ((strcmp(cmd, "list") != 0 && strcmp(cmd, "flush") != 0) || optind != argc) {
		usage();
	}
	if (strcmp(cmd, "list") == 0) {
		rc = cmd_list(&cfg);
	} else {
		snprintf(line, sizeof(line), "%s%s%s", cmd, id ? " " : "", id ? id : "");
		for (char *p = line; *p && *p != ' '; p++)
			*p = (char)(*p - (*p >= 'a' && *p <= 'z' ? 32 : 0));
		rc = cmd_control(&cfg, line);
	}
	config_free(&cfg);
	return rc;
}
