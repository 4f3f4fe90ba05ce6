/*
 * mboxw: append messages to an mbox with mbox_deliver, for the tests that
 * read the result back with real mail readers.
 *
 *   mboxw [-i UID:GID] [-m MODE] [-t LOCK_MS] MAILBOX SENDER RCPT FILE...
 *
 * Each FILE is one message (LF line ends).  Exit 0 when every append
 * succeeded, 75 (EX_TEMPFAIL) or 69 (EX_UNAVAILABLE) after the first
 * failure, whose reason goes to stderr.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mbox.h"

int
main(int argc, char **argv)
{
	struct mbox_dest d = { .mode = 0600, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	int c;

	log_open("mboxw", LOG_TARGET_STDERR);
	/* a file size limit must fail the write, not kill us */
	signal(SIGXFSZ, SIG_IGN);
	while ((c = getopt(argc, argv, "i:m:t:")) != -1) {
		switch (c) {
		case 'i': {
			unsigned long u, g;
			if (sscanf(optarg, "%lu:%lu", &u, &g) != 2)
				goto usage;
			d.switch_identity = 1;
			d.uid = (uid_t)u;
			d.gid = (gid_t)g;
			break;
		}
		case 'm':
			d.mode = (int)strtol(optarg, NULL, 8);
			break;
		case 't':
			mbox_set_lock_timeout(atoi(optarg));
			break;
		default:
			goto usage;
		}
	}
	if (argc - optind < 4)
		goto usage;
	d.path = argv[optind];
	for (int i = optind + 3; i < argc; i++) {
		int fd = open(argv[i], O_RDONLY);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			perror(argv[i]);
			return 66;
		}
		struct mbox_msg m = { .fd = fd, .off = 0, .len = st.st_size,
		                      .sender = argv[optind + 1],
		                      .delivered_to = argv[optind + 2],
		                      .arrival = time(NULL) };
		char err[512];
		enum mbox_status s = mbox_deliver(&d, &m, err, sizeof(err));
		close(fd);
		if (s != MBOX_OK) {
			fprintf(stderr, "mboxw: %s: %s\n", argv[i], err);
			return s == MBOX_TEMP ? 75 : 69;
		}
	}
	return 0;
usage:
	fprintf(stderr, "usage: mboxw [-i UID:GID] [-m MODE] [-t LOCK_MS] MAILBOX SENDER RCPT FILE...\n");
	return 64;
}
