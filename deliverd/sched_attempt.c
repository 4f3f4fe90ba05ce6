/*
 * sched_attempt: one delivery attempt on one message, run by a worker
 * thread that owns the message (see sched.c).  Local recipients are
 * written to their mailboxes one at a time (each mailbox by one worker
 * at a time); remote ones go to remote_deliver() grouped by domain, under
 * the destination concurrency limit.  Every final result is made durable
 * in the spool before the next step; failures (and temporary failures
 * past the lifetime) become one DSN for the attempt, queued before the
 * recipients are marked bounced, so a crash can repeat a DSN but never
 * lose one.
 */
#include "sched_int.h"
#include "bounce.h"
#include "log.h"
#include "mbox.h"
#include "remote.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Per-recipient outcome of one attempt. */
struct res {
	int tried;
	int saved;               /* DONE and written to the spool */
	int lazy;                /* ... not yet synced */
	enum remote_status status;
	char dsn[16];
	char relay[300];
	char text[512];
};

/* The message was deleted (DELETE, or HOLD) while this attempt ran: its
 * entry forgotten, or its queue file unlinked. */
static int
msg_deleted(struct sched *s, const struct spool_msg *m)
{
	struct stat st;
	if (fstat(m->fd, &st) == 0 && st.st_nlink == 0)
		return 1;
	return sched_forgotten(s, m->id);
}

/* Stop before the next step: shutting down, or the message deleted. */
static int
halted(struct sched *s, const struct spool_msg *m)
{
	return sched_stopping(s) || msg_deleted(s, m);
}

/* Take slot key, or note it in blocked (the first busy one) and say no. */
static int
take_slot(struct sched *s, const char *key, long limit, char *blocked, size_t blen)
{
	if (slot_try(s, key, limit))
		return 1;
	if (!blocked[0])
		snprintf(blocked, blen, "%s", key);
	return 0;
}

/* The enhanced status code inside text, or fallback. */
static void
find_dsn(const char *text, const char *fallback, char *dsn, size_t len)
{
	for (const char *p = text; p && *p; p++) {
		if ((*p == '2' || *p == '4' || *p == '5') && p[1] == '.' &&
		    (p == text || p[-1] == ' ' || p[-1] == '(')) {
			size_t n = strspn(p, "0123456789.");
			if (n >= 5 && n < len && strchr(p + 2, '.') && strchr(p + 2, '.') < p + n - 1) {
				snprintf(dsn, len, "%.*s", (int)n, p);
				return;
			}
		}
	}
	snprintf(dsn, len, "%s", fallback);
}

static void
set_res(struct res *r, enum remote_status st, const char *dsn, const char *relay,
        const char *text)
{
	r->tried = 1;
	r->status = st;
	snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
	snprintf(r->relay, sizeof(r->relay), "%s", relay);
	snprintf(r->text, sizeof(r->text), "%s", text);
}

/* A delivery succeeded: record it in the spool at once, before anything
 * else (a log line included), so that a crash repeats as little as
 * possible.  A failed update leaves the recipient pending: delivered
 * again later (at-least-once), never lost. */
static void
save_done(struct spool_msg *m, size_t i, struct res *res)
{
	char q[600];
	struct res *r = &res[i];
	/* The last delivery of the attempt needs no sync of its own: the
	 * removal follows at once (unlinked, not synced: a power loss may
	 * repeat the delivery, never lose it; spool.c), or the fdatasync
	 * before deferring. */
	int last = 1;
	for (size_t j = 0; j < m->nrcpt; j++)
		if (j != i && m->rcpt[j].state == RCPT_PENDING && !res[j].tried)
			last = 0;
	if ((last ? spool_set_state_nosync(m, i, RCPT_DONE)
	          : spool_set_state(m, i, RCPT_DONE)) == 0) {
		r->saved = 1;
		r->lazy = last;
		return;
	}
	log_err("id=%s to=%s status=state_error error=\"%s\"", m->id,
	        log_quote(q, sizeof(q), m->rcpt[i].addr), strerror(errno));
}

static void
deliver_local(struct sched *s, struct snap *p, struct spool_msg *m,
              size_t i, struct res *res, char *blocked, size_t blen)
{
	struct res *r = &res[i];
	const struct spool_rcpt *rc = &m->rcpt[i];
	struct local_user u;
	char path[PATH_MAX], err[512], dto[600], dsn[16];

	int lu = localdb_user(p->db, rc->addr, &u);
	if (lu == -2) {
		set_res(r, REMOTE_DEFER, "4.3.0", "local", "4.3.0 user database unavailable");
		return;
	}
	if (lu != 0) {
		set_res(r, REMOTE_FAIL, "5.1.1", "local", "5.1.1 unknown local user");
		return;
	}
	if (mbox_path(p->cfg->deliverd.mailbox, u.name, u.home, path, sizeof(path)) != 0) {
		set_res(r, REMOTE_DEFER, "4.3.5", "local", "4.3.5 cannot expand the mailbox path");
		return;
	}
	/* Delivered-To: the address as given when it names this user, else
	 * the user at the domain it was sent to */
	const char *at = strrchr(rc->orig, '@');
	size_t ul = strlen(u.name);
	if (at && !strncasecmp(rc->orig, u.name, ul) &&
	    (rc->orig + ul == at || rc->orig[ul] == p->cfg->deliverd.recipient_delimiter))
		snprintf(dto, sizeof(dto), "%s", rc->orig);
	else
		snprintf(dto, sizeof(dto), "%s@%s", u.name, at ? at + 1 : p->cfg->mail_name);

	struct mbox_dest dst = {
		.path = path,
		.switch_identity = s->d->privileged && u.system,
		.uid = u.uid,
		.gid = s->have_mail_gid ? s->mail_gid : u.gid,
		.mode = p->cfg->deliverd.mailbox_mode,
	};
	struct mbox_msg mm = {
		.fd = m->fd, .off = m->body_off, .len = m->body_len,
		.sender = m->sender, .delivered_to = dto, .arrival = m->arrival,
	};
	err[0] = '\0';
	/* one writer per mailbox: the others are parked until it is free (not
	 * in mbox's lock timeouts, which would defer them by a whole retry
	 * interval; nor in a worker, which would stall other deliveries) */
	char key[PATH_MAX + 8];
	snprintf(key, sizeof(key), "mbox:%s", path);
	if (!take_slot(s, key, 1, blocked, blen))
		return;   /* not tried: the message waits for this mailbox */
	if (halted(s, m)) {
		slot_release(s, key);
		return;
	}
	enum mbox_status ms = mbox_deliver(&dst, &mm, err, sizeof(err));
	if (ms == MBOX_OK) {
		/* record it before waking the other writers of this mailbox:
		 * the at-least-once window stays as short as it can be */
		set_res(r, REMOTE_DONE, "2.0.0", "local", "delivered to mailbox");
		save_done(m, i, res);
	}
	slot_release(s, key);
	switch (ms) {
	case MBOX_OK:
		break;
	case MBOX_TEMP:
		find_dsn(err, "4.2.0", dsn, sizeof(dsn));
		set_res(r, REMOTE_DEFER, dsn, "local", err[0] ? err : "mailbox temporarily unavailable");
		break;
	default:
		find_dsn(err, "5.2.0", dsn, sizeof(dsn));
		set_res(r, REMOTE_FAIL, dsn, "local", err[0] ? err : "mailbox unavailable");
		break;
	}
}

/* Deliver to every pending recipient of domain dom (remote). */
static void
deliver_domain(struct sched *s, struct snap *p, struct spool_msg *m,
               const char *dom, struct res *res, char *blocked, size_t blen)
{
	size_t n = 0;
	const char **rc = calloc(m->nrcpt, sizeof(*rc));
	size_t *idx = calloc(m->nrcpt, sizeof(*idx));
	struct remote_result *rr = calloc(m->nrcpt, sizeof(*rr));
	char key[300];
	if (!rc || !idx || !rr) {
		for (size_t i = 0; i < m->nrcpt; i++) {
			const char *a = strrchr(m->rcpt[i].addr, '@');
			if (m->rcpt[i].state == RCPT_PENDING && a && !strcasecmp(a + 1, dom))
				set_res(&res[i], REMOTE_DEFER, "4.3.0", "none", "out of memory");
		}
		goto out;
	}
	for (size_t i = 0; i < m->nrcpt; i++) {
		const char *a = strrchr(m->rcpt[i].addr, '@');
		if (m->rcpt[i].state != RCPT_PENDING || res[i].tried || !a || strcasecmp(a + 1, dom))
			continue;
		rc[n] = m->rcpt[i].addr;
		idx[n++] = i;
	}
	if (!n)
		goto out;
	remote_destination(p->rc, dom, key, sizeof(key));
	if (!take_slot(s, key, p->cfg->deliverd.destination_concurrency, blocked, blen))
		goto out;   /* not tried: the message waits for this destination */
	if (halted(s, m)) {
		slot_release(s, key);
		goto out;
	}
	struct remote_job job = {
		.domain = dom, .sender = m->sender, .rcpts = rc, .nrcpt = n,
		.fd = m->fd, .off = m->body_off, .len = m->body_len, .id = m->id,
	};
	remote_deliver(p->rc, &job, rr);
	slot_release(s, key);
	for (size_t k = 0; k < n; k++) {
		set_res(&res[idx[k]], rr[k].status, rr[k].dsn[0] ? rr[k].dsn :
		        rr[k].status == REMOTE_DONE ? "2.0.0" :
		        rr[k].status == REMOTE_DEFER ? "4.0.0" : "5.0.0",
		        rr[k].relay[0] ? rr[k].relay : "none", rr[k].text);
		if (rr[k].status == REMOTE_DONE)
			save_done(m, idx[k], res);
	}
out:
	free(rc);
	free(idx);
	free(rr);
}

/*
 * Where the DSN for m goes: the sender, resolved like a recipient when it
 * is in a local domain.  n targets in *to (free with free_targets); 0 ok,
 * 1 nowhere to send it (logged), -1 temporary.
 */
static int
dsn_targets(struct snap *p, const struct spool_msg *m, struct spool_rcpt **to, size_t *n)
{
	const char *at = strrchr(m->sender, '@');
	char q[600], why[256];
	*to = NULL;
	*n = 0;
	if (at && config_is_local_domain(p->cfg, at + 1)) {
		char lp[512];
		snprintf(lp, sizeof(lp), "%.*s", (int)(at - m->sender), m->sender);
		struct local_target *t = NULL;
		size_t nt = 0;
		enum local_status ls = localdb_resolve(p->db, lp, &t, &nt, why, sizeof(why));
		if (ls == LOCAL_TEMP) {
			local_targets_free(t, nt);
			return -1;
		}
		if (ls != LOCAL_OK || nt == 0) {
			log_warn("id=%s status=dsn_dropped sender=%s reason=\"%s\"", m->id,
			         log_quote(q, sizeof(q), m->sender), ls == LOCAL_OK ? "no target" : why);
			local_targets_free(t, nt);
			return 1;
		}
		*to = calloc(nt, sizeof(**to));
		if (!*to) {
			local_targets_free(t, nt);
			return -1;
		}
		for (size_t i = 0; i < nt; i++) {
			(*to)[i].addr = strdup(t[i].user ? t[i].user : t[i].addr);
			(*to)[i].orig = strdup(m->sender);
			(*to)[i].state = RCPT_PENDING;
		}
		*n = nt;
		local_targets_free(t, nt);
		for (size_t i = 0; i < nt; i++)
			if (!(*to)[i].addr || !(*to)[i].orig)
				return -1;
		return 0;
	}
	*to = calloc(1, sizeof(**to));
	if (!*to)
		return -1;
	(*to)[0].addr = strdup(m->sender);
	(*to)[0].orig = strdup(m->sender);
	(*to)[0].state = RCPT_PENDING;
	*n = 1;
	return (*to)[0].addr && (*to)[0].orig ? 0 : -1;
}

static void
free_targets(struct spool_rcpt *to, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(to[i].addr);
		free(to[i].orig);
	}
	free(to);
}

/*
 * Queue one DSN for the recipients in fail[0..nf-1] and mark them
 * bounced.  0 done, -1 could not (they stay pending, retried later).
 */
static int
bounce_rcpts(struct sched *s, struct snap *p, struct spool_msg *m,
             const size_t *fail, size_t nf, const struct res *res, int *expired)
{
	char q[600], err[256], nid[SPOOL_ID_MAX];
	int rc = 0;
	if (m->sender[0]) {
		struct spool_rcpt *to;
		size_t nto;
		int t = dsn_targets(p, m, &to, &nto);
		if (t == -1) {
			free_targets(to, nto);
			log_warn("id=%s status=dsn_deferred reason=\"cannot resolve the sender now\"", m->id);
			return -1;
		}
		if (t == 0) {
			struct bounce_rcpt *br = calloc(nf, sizeof(*br));
			char (*fin)[600] = calloc(nf, sizeof(*fin));
			if (!br || !fin) {
				free(br);
				free(fin);
				free_targets(to, nto);
				return -1;
			}
			for (size_t k = 0; k < nf; k++) {
				const struct spool_rcpt *r = &m->rcpt[fail[k]];
				const struct res *x = &res[fail[k]];
				if (strchr(r->addr, '@'))
					snprintf(fin[k], sizeof(fin[k]), "%s", r->addr);
				else
					snprintf(fin[k], sizeof(fin[k]), "%s@%s", r->addr, p->cfg->mail_name);
				br[k].final = fin[k];
				br[k].orig = r->orig;
				br[k].status = x->dsn;
				br[k].remote_mta = strcmp(x->relay, "local") ? x->relay : NULL;
				br[k].diag = x->text;
				br[k].expired = expired[k];
			}
			int b = bounce_queue(s->d->spool, p->cfg->mail_name, m, br, nf, to, nto,
			                     nid, err, sizeof(err));
			free(br);
			free(fin);
			free_targets(to, nto);
			if (b == -1) {
				log_err("id=%s status=dsn_deferred reason=\"%s\"", m->id, err);
				return -1;
			}
			log_info("id=%s status=queued kind=dsn orig_id=%s to=%s nrcpt=%zu",
			         nid, m->id, log_quote(q, sizeof(q), m->sender), nf);
			sched_submit(s, nid);
		}
	}
	for (size_t k = 0; k < nf; k++) {
		if (spool_set_state(m, fail[k], RCPT_BOUNCED) == -1) {
			log_err("id=%s to=%s status=state_error error=\"%s\"", m->id,
			        log_quote(q, sizeof(q), m->rcpt[fail[k]].addr), strerror(errno));
			rc = -1;
		}
	}
	log_info("id=%s status=bounced nrcpt=%zu%s", m->id, nf,
	         m->sender[0] ? "" : " dsn=none reason=\"null sender: no DSN for a DSN\"");
	return rc;
}

int
sched_attempt(struct sched *s, const char *id, int attempts, char *last, size_t lastlen,
        time_t *expires, char *blocked, size_t blen)
{
	struct spool_msg m;
	char q1[600], q2[600], q3[600], q4[1100];
	int rc = spool_load(s->d->spool, id, &m);
	if (rc == -1 && errno != ENOENT) {
		/* EMFILE, ENOMEM, EIO...: it is still there, try again later */
		snprintf(last, lastlen, "4.3.0 cannot read the queue file: %s", strerror(errno));
		*expires = 0;
		return 0;
	}
	if (rc != 0)
		return 1;   /* missing (deleted) or corrupt (moved, logged) */
	if (m.held) {
		spool_msg_free(&m);
		return 1;
	}
	struct snap *p = snap_pin(s);
	*expires = m.arrival + p->cfg->deliverd.queue_lifetime;
	struct res *res = calloc(m.nrcpt, sizeof(*res));
	size_t *fail = calloc(m.nrcpt, sizeof(*fail));
	int *expired = calloc(m.nrcpt, sizeof(*expired));
	int gone = 0;
	if (!res || !fail || !expired) {
		snprintf(last, lastlen, "out of memory");
		goto out;
	}
	/* local recipients one by one, each address once */
	for (size_t i = 0; i < m.nrcpt && !halted(s, &m); i++) {
		if (m.rcpt[i].state != RCPT_PENDING || strchr(m.rcpt[i].addr, '@') || res[i].tried)
			continue;
		deliver_local(s, p, &m, i, res, blocked, blen);
		if (!res[i].tried)
			continue;   /* parked on a busy mailbox, or halted */
		for (size_t j = i + 1; j < m.nrcpt; j++)
			if (m.rcpt[j].state == RCPT_PENDING && !strcmp(m.rcpt[j].addr, m.rcpt[i].addr)) {
				res[j] = res[i];
				res[j].saved = 0;
				if (res[j].status == REMOTE_DONE)
					save_done(&m, j, res);
			}
	}
	/* remote recipients by domain */
	for (size_t i = 0; i < m.nrcpt && !halted(s, &m); i++) {
		const char *a = strrchr(m.rcpt[i].addr, '@');
		if (m.rcpt[i].state == RCPT_PENDING && a && !res[i].tried)
			deliver_domain(s, p, &m, a + 1, res, blocked, blen);
	}
	/* deleted meanwhile: no DSN, no defer/ note; gone */
	int deleted = msg_deleted(s, &m);

	time_t now = time(NULL);
	int expire = now >= m.arrival + p->cfg->deliverd.queue_lifetime;
	size_t nf = 0, ndefer = 0, nfinal = 0, ntrydefer = 0;
	for (size_t i = 0; i < m.nrcpt; i++) {
		struct res *r = &res[i];
		if (r->saved) {
			nfinal++;   /* delivered just now, already recorded */
		} else if (m.rcpt[i].state != RCPT_PENDING) {
			nfinal++;   /* final before this attempt */
			continue;
		}
		if (!r->tried) {
			ndefer++;   /* stopping: not attempted */
			continue;
		}
		const char *status = r->status == REMOTE_DONE ? "sent" :
		                     deleted ? "deleted" :
		                     r->status == REMOTE_FAIL ? "bounced" :
		                     expire ? "expired" : "deferred";
		log_info("id=%s to=%s orig_to=%s relay=%s delay=%lld dsn=%s status=%s reply=%s",
		         m.id, log_quote(q1, sizeof(q1), m.rcpt[i].addr),
		         log_quote(q2, sizeof(q2), m.rcpt[i].orig),
		         log_quote(q3, sizeof(q3), r->relay), (long long)(now - m.arrival),
		         r->dsn, status, log_quote(q4, sizeof(q4), r->text));
		if (r->status == REMOTE_DONE) {
			if (!r->saved) {
				snprintf(last, lastlen, "spool state update failed");
				ndefer++;
			}
		} else if (r->status == REMOTE_FAIL || expire) {
			expired[nf] = r->status != REMOTE_FAIL;
			fail[nf++] = i;
		} else {
			ndefer++;
			ntrydefer++;
			/* for the listing: with its status code, once */
			if (r->text[0] >= '0' && r->text[0] <= '9')
				snprintf(last, lastlen, "%s", r->text);
			else
				snprintf(last, lastlen, "%s %s", r->dsn, r->text);
		}
	}
	int lazy = 0;
	for (size_t i = 0; i < m.nrcpt; i++)
		lazy |= res[i].lazy;
	if (deleted) {
		log_info("id=%s status=stopped reason=\"deleted during delivery\"", m.id);
		gone = 1;
		goto synced;
	}
	if (nf) {
		if (bounce_rcpts(s, p, &m, fail, nf, res, expired) == 0)
			nfinal += nf;
		else {
			ndefer += nf;
			snprintf(last, lastlen, "DSN could not be queued");
		}
	}
	if (nfinal == m.nrcpt) {
		/* attempts 0: never deferred, so no defer/ note to unlink */
		if ((attempts == 0 ? spool_remove_undeferred(s->d->spool, m.id)
		                   : spool_remove(s->d->spool, m.id)) == 0 || errno == ENOENT) {
			log_info("id=%s status=removed", m.id);
			lazy = 0;
		} else
			log_err("id=%s status=remove_error error=\"%s\"", m.id, strerror(errno));
		gone = 1;
	} else if (blocked[0] && !ntrydefer && !nf) {
		/* only waiting for a busy slot: not an attempt, no note */
		gone = 2;
	} else if (!sched_stopping(s)) {
		spool_note_defer(s->d->spool, m.id, attempts + 1, last);
		if (msg_deleted(s, &m)) {
			/* deleted while the note was written: do not leave it */
			char path[PATH_MAX];
			snprintf(path, sizeof(path), "%s/defer/%s", spool_dir(s->d->spool), m.id);
			unlink(path);
			gone = 1;
		}
	}
synced:
	if (lazy && fdatasync(m.fd) == -1)
		log_err("id=%s status=state_error error=\"%s\"", m.id, strerror(errno));
out:
	free(res);
	free(fail);
	free(expired);
	snap_unpin(s, p);
	spool_msg_free(&m);
	return gone;
}
