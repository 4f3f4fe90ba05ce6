/*
 * config: /etc/spfgate/spfgate.conf, one INI file for all daemons
 * ([global], [relayd], [filterd], [deliverd]), parsed with inih.
 * Every parameter's name and default is in the table in config.c.
 * Unknown sections or keys and bad values are errors reported as
 * "FILE:LINE: message".
 */
#ifndef SPFGATE_CONFIG_H
#define SPFGATE_CONFIG_H

#include <stddef.h>
#include "cidr.h"
#include "strlist.h"

#define CONFIG_DEFAULT_PATH SYSCONFDIR "/spfgate/spfgate.conf"

enum spf_action { SPF_ACT_REJECT, SPF_ACT_TEMPFAIL, SPF_ACT_TAG };

struct config {
	char *path;                    /* file read, or NULL for built-ins */

	/* [global] */
	char *mail_name;
	struct strlist local_domains;  /* lower case, no trailing dot */
	struct cidr_list relay_networks;
	struct strlist nameservers;    /* empty: /etc/resolv.conf */
	int dns_timeout;               /* seconds */
	char *log;                     /* "syslog" or "stderr" */

	/* [filterd] */
	struct {
		char *listen;
		/* indexed by enum spf_result */
		enum spf_action on_result[7];
		int helo_check;
		int dry_run;
	} filterd;
};

/* Fill built-in defaults. */
void config_defaults(struct config *c);
/* Defaults, then the file.  0, or -1 with "FILE:LINE: msg" in err;
 * call config_free() either way. */
int config_load(struct config *c, const char *path, char *err, size_t errlen);
void config_free(struct config *c);

const char *spf_action_str(enum spf_action a);
/* Is this domain one of ours?  (case-insensitive, trailing dot ignored) */
int config_is_local_domain(const struct config *c, const char *domain);

#endif
