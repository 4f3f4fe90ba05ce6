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
enum tls_policy { TLS_NONE, TLS_OPPORTUNISTIC, TLS_REQUIRED };
enum milter_default { MILTER_DEFAULT_ACCEPT, MILTER_DEFAULT_REJECT, MILTER_DEFAULT_TEMPFAIL };

struct config {
	char *path;                    /* file read, or NULL for built-ins */

	/* [global] */
	char *mail_name;
	struct strlist local_domains;  /* lower case, no trailing dot */
	struct cidr_list relay_networks;
	struct strlist nameservers;    /* empty: /etc/resolv.conf */
	int dns_timeout;               /* seconds */
	char *log;                     /* "syslog", "stderr" or "files:/DIR" */

	/* [filterd] */
	struct {
		char *listen;
		/* indexed by enum spf_result */
		enum spf_action on_result[7];
		int helo_check;
		int dry_run;
		char *user;                  /* run as, when started as root */
	} filterd;

	/* [relayd] */
	struct {
		struct strlist listen;       /* "ADDR:PORT", "[V6]:PORT" */
		char *user;                  /* run as, when started as root */
		struct strlist milters;      /* unix:/PATH, inet:PORT@ADDR, in order */
		int milter_default_action;   /* enum milter_default */
		long milter_connect_timeout, milter_command_timeout,
		     milter_content_timeout; /* seconds */
		char *lmtp;                  /* deliverd: unix:/PATH or inet:PORT@ADDR */
		char *tls_cert_file, *tls_key_file;  /* "" : no STARTTLS */
		long message_size_limit;
		long recipient_limit;
		long processes;              /* event loops, 0: one per CPU */
		long max_sessions, max_sessions_per_client;
		long max_errors;
		long max_received_headers;
		long command_timeout, data_timeout;  /* seconds */
	} relayd;

	/* [deliverd] */
	struct {
		struct strlist listen;      /* LMTP: unix:/PATH, inet:PORT@ADDR */
		char *user;                 /* run as, when started as root */
		char *control;              /* control socket path (queue tool) */
		char *spool;                /* spool directory */
		char *mailbox;              /* mbox path template: %u user, %% */
		int mailbox_mode;           /* mode of a new mailbox */
		struct strlist local_users; /* "system" and/or users file paths */
		char *aliases;              /* aliases(5) file, "" for none */
		char recipient_delimiter;   /* '+' etc, '\0' for none */
		long message_size_limit;    /* bytes */
		char *smarthost;            /* host[:port], "" for MX routing */
		int smarthost_tls;          /* enum tls_policy */
		char *smarthost_auth_file;  /* "user password" file, "" for none */
		int smtp_tls;               /* enum tls_policy, MX delivery */
		long smtp_port;             /* port of remote MX hosts */
		char *smtp_bind_address;    /* source address of SMTP connections, "" any */
		long retry_min, retry_max;  /* seconds */
		long queue_lifetime;        /* seconds */
		long concurrency;           /* deliveries at once, overall */
		long destination_concurrency; /* per destination */
	} deliverd;
};

/* Fill built-in defaults. */
void config_defaults(struct config *c);
/* Defaults, then the file.  0, or -1 with "FILE:LINE: msg" in err;
 * call config_free() either way. */
int config_load(struct config *c, const char *path, char *err, size_t errlen);
void config_free(struct config *c);
/* config_load() into a new struct; NULL with err.  config_destroy()
 * frees it (NULL is fine). */
struct config *config_new(const char *path, char *err, size_t errlen);
void config_destroy(struct config *c);

const char *spf_action_str(enum spf_action a);
/* A dns_timeout value ("5": seconds, 1..60), or -1: the key's rule, for
 * the tools' --dns-timeout too. */
int config_dns_timeout(const char *v);
/* Is this domain one of ours?  (case-insensitive, trailing dot ignored) */
int config_is_local_domain(const struct config *c, const char *domain);

#endif
