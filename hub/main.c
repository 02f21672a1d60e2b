/*
 * main.c - hubd: configuration, the single-instance claims, then a small
 * supervisor that forks the worker processes (hub__worker_run).
 *
 * Restart policy
 *   - Start: anything that can be checked before a fork is (registry,
 *     certificate and key readable, broker URIs, the listeners free and no
 *     other hubd holding them or this registry + hub id: instance.c). A
 *     worker reports "ready" through a pipe once it listens and its threads
 *     run; a worker that exits before that is a start error: hubd stops the
 *     others and exits 1 with that worker's one error in the log, instead
 *     of restarting it for ever.
 *   - A worker that dies after it was ready is restarted after a growing
 *     backoff (100 ms doubling to 10 s); the 6th death within 60 s stops
 *     hubd with exit 1, so the service manager's Restart= takes over. A
 *     failed fork() is retried with the same backoff.
 *   - Workers die with the supervisor: PR_SET_PDEATHSIG delivers SIGTERM,
 *     so an orphaned worker drains (its devices get their offline status)
 *     and exits instead of serving on.
 *
 * Signals: SIGTERM/SIGINT drain every worker and exit (0 when all drained);
 * SIGHUP re-reads the configuration for the log level, and is passed on to
 * the workers, which reload the TLS certificate and key in place (sessions
 * stay open).
 *
 * Workers share the device and ops listeners (SO_REUSEPORT), the registry
 * file, and the metrics region and failed-auth table mapped here before
 * the fork. The supervisor
 * touches no lws, TLS or broker state, so nothing random or connected is
 * inherited by the workers.
 *
 * Threads: one, the supervisor's.
 */
#include "conf.h"
#include "fleet.h"
#include "hub_int.h"
#include "hub_log.h"
#include "hub_version.h"
#include "metrics.h"
#include "registry.h"
#include "tls.h"

#include <mbedtls/version.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define FLAP_WINDOW_MS 60000
#define FLAP_MAX 5 /* deaths within the window that are still restarted */

struct wslot {
	pid_t pid;	    /* 0: not running */
	int ready_fd;	    /* read end of the worker's ready pipe, or -1 */
	int ready;	    /* the worker said it is ready */
	int64_t restart_at; /* 0: no restart due */
};

struct supervisor {
	struct conf conf;
	int argc;
	char **argv;
	int nworkers;
	struct metrics *m;
	struct authlimit *authlimit; /* shared by the workers: per hub */
	struct wslot w[METRICS_MAX_WORKERS];
	int64_t deaths[FLAP_MAX + 1]; /* ring of the last death times */
	unsigned ndeaths;
	unsigned fork_failures;
	sigset_t old_mask;
};

static int64_t
now_ms(void)
{
	return (int64_t)(hub_clock_mono_us() / 1000);
}

static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int
ensure_db_dir(const char *db)
{
	char tmp[sizeof(((struct conf *)0)->db)];
	const char *dir;

	if (!strcmp(db, ":memory:"))
		return 0;
	snprintf(tmp, sizeof(tmp), "%s", db);
	dir = dirname(tmp);
	if (mkdir(dir, 0750) && errno != EEXIST)
		return -1;
	return 0;
}

/* 100 ms doubling per recent failure, at most 10 s. */
static int64_t
backoff_ms(unsigned n)
{
	int64_t ms = BACKOFF_MIN_MS;

	while (n-- > 1 && ms < BACKOFF_MAX_MS)
		ms *= 2;
	return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

static void
set_log_level(int level)
{
	hub_log_set_level((enum hub_log_level)level);
	lws_set_log_level(level >= 3 ? LLL_ERR | LLL_WARN | LLL_NOTICE
				     : LLL_ERR,
			  hub_log_lws);
}

/* What can fail at start is checked here, once, before any fork. */
static int
preflight(const struct conf *c, char *err, size_t errlen)
{
	struct registry *reg = NULL;
	int rc;

	if (!c->no_tls) {
		if (access(c->tls_cert, R_OK)) {
			snprintf(err, errlen, "--tls-cert %s: %s", c->tls_cert,
				 strerror(errno));
			return HUB_ERR_IO;
		}
		if (access(c->tls_key, R_OK)) {
			snprintf(err, errlen, "--tls-key %s: %s", c->tls_key,
				 strerror(errno));
			return HUB_ERR_IO;
		}
		if (hub__tls_pair_ok(c->tls_cert, c->tls_key, err, errlen))
			return HUB_ERR_INVAL;
	}
	if (c->device_ca[0] && access(c->device_ca, R_OK)) {
		snprintf(err, errlen, "--device-ca %s: %s", c->device_ca,
			 strerror(errno));
		return HUB_ERR_IO;
	}
	/* migrations once, here, so workers never race on them */
	if (ensure_db_dir(c->db)) {
		snprintf(err, errlen,
			 "registry %s: cannot create its folder: %s", c->db,
			 strerror(errno));
		return HUB_ERR_IO;
	}
	{
		char e[256] = "";

		rc = registry_open(c->db, &reg, e, sizeof(e));
		if (rc != HUB_OK) {
			snprintf(err, errlen, "registry %s: %s", c->db, e);
			return rc;
		}
		registry_close(reg);
	}
	return HUB_OK;
}

/* ---- workers ------------------------------------------------------------ */

static void
spawn(struct supervisor *sv, int i)
{
	struct wslot *ws = &sv->w[i];
	pid_t parent = getpid(), pid;
	int p[2], j;

	if (pipe2(p, O_CLOEXEC)) {
		pid = -1;
		goto failed;
	}
	pid = fork();
	if (pid == 0) {
		/* die with the supervisor (SIGTERM: drain, then exit) */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1); /* it died before the prctl */
		close(p[0]);
		for (j = 0; j < sv->nworkers; j++)
			if (sv->w[j].ready_fd >= 0)
				close(sv->w[j].ready_fd);
		/* a SIGHUP before the worker's own handler is in place must
		 * not kill it (libev's ev_signal replaces this) */
		signal(SIGHUP, SIG_IGN);
		sigprocmask(SIG_SETMASK, &sv->old_mask, NULL);
		exit(hub__worker_run(&sv->conf, i, sv->nworkers, sv->m, p[1],
				     sv->argc, sv->argv, sv->authlimit));
	}
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		goto failed;
	}
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	ws->pid = pid;
	ws->ready_fd = p[0];
	ws->ready = 0;
	ws->restart_at = 0;
	sv->fork_failures = 0;
	__atomic_store_n(&sv->m->slot[i].pid, pid, __ATOMIC_RELAXED);
	return;
failed:
	/* out of processes or memory, often for a moment: try again */
	sv->fork_failures++;
	ws->restart_at = now_ms() + backoff_ms(sv->fork_failures);
	hub_log(HUB_LOG_ERR, "HUB-FORK-FAIL",
		"worker %d: %s; trying again in %lld ms", i, strerror(errno),
		(long long)(ws->restart_at - now_ms()));
}

/* Reads what the worker wrote on its ready pipe. */
static void
poll_ready(struct wslot *ws)
{
	char b[16];
	ssize_t n;

	if (ws->ready_fd < 0)
		return;
	while ((n = read(ws->ready_fd, b, sizeof(b))) > 0)
		if (memchr(b, 'R', (size_t)n))
			ws->ready = 1;
}

static void
close_ready(struct wslot *ws)
{
	if (ws->ready_fd >= 0)
		close(ws->ready_fd);
	ws->ready_fd = -1;
}

static void
signal_workers(struct supervisor *sv, int sig)
{
	int i;

	for (i = 0; i < sv->nworkers; i++)
		if (sv->w[i].pid > 0)
			kill(sv->w[i].pid, sig);
}

/* Deaths after ready within the window, this one included. */
static unsigned
record_death(struct supervisor *sv, int64_t now)
{
	unsigned i, n = 0;

	sv->deaths[sv->ndeaths++ % (FLAP_MAX + 1)] = now;
	for (i = 0; i < FLAP_MAX + 1 && i < sv->ndeaths; i++)
		if (now - sv->deaths[i] < FLAP_WINDOW_MS)
			n++;
	return n;
}

static const char *
how(int status, int *code)
{
	if (WIFSIGNALED(status)) {
		*code = WTERMSIG(status);
		return "killed by signal";
	}
	*code = WEXITSTATUS(status);
	return "exited";
}

/* A worker ended while running: 0 to go on, 1 to stop hubd (failed). */
static int
on_worker_exit(struct supervisor *sv, int i, int status)
{
	struct wslot *ws = &sv->w[i];
	pid_t pid = ws->pid;
	int64_t now = now_ms();
	unsigned recent;
	int code;
	const char *what = how(status, &code);

	poll_ready(ws);
	close_ready(ws);
	ws->pid = 0;
	__atomic_store_n(&sv->m->slot[i].pid, 0, __ATOMIC_RELAXED);
	if (!ws->ready) {
		hub_log(HUB_LOG_ERR, "HUB-START-FAILED",
			"worker %d %s %d before it was ready (its error is "
			"above); hubd stops",
			i, what, code);
		return 1;
	}
	recent = record_death(sv, now);
	if (recent > FLAP_MAX) {
		hub_log(HUB_LOG_ERR, "HUB-WORKER-FLAPPING",
			"worker %d %s %d: %u worker deaths within %d s; hubd "
			"stops (the service manager restarts it)",
			i, what, code, recent, FLAP_WINDOW_MS / 1000);
		return 1;
	}
	ws->restart_at = now + backoff_ms(recent);
	hub_log(HUB_LOG_ERR, "HUB-WORKER-DIED",
		"worker %d (pid %d) %s %d; restarting in %lld ms", i, (int)pid,
		what, code, (long long)(ws->restart_at - now));
	return 0;
}

/* SIGHUP: what can change without a restart. */
static void
reload(struct supervisor *sv)
{
	struct conf next;
	char err[256];
	int i;

	if (conf_load(&next, sv->argc, sv->argv, err, sizeof(err)) != HUB_OK) {
		hub_log(HUB_LOG_ERR, "HUB-RELOAD",
			"configuration not reloaded: %s", err);
		return;
	}
	sv->conf.log_level = next.log_level;
	set_log_level(next.log_level);
	hub_log(HUB_LOG_INFO, "HUB-RELOAD",
		"log level %d; workers reload the TLS certificate and key",
		next.log_level);
	/* a worker still starting reads the files anyway */
	for (i = 0; i < sv->nworkers; i++)
		if (sv->w[i].pid > 0 && sv->w[i].ready)
			kill(sv->w[i].pid, SIGHUP);
}

/*
 * Stops every worker: SIGTERM, then SIGKILL past the drain and 30 s for
 * the close handshakes and the flush. 0 if all drained and exited 0.
 */
static int
stop_all(struct supervisor *sv, const sigset_t *set)
{
	int64_t deadline = now_ms() + (int64_t)sv->conf.drain * 1000 + 30000;
	int failed = 0, live, i;

	signal_workers(sv, SIGTERM);
	for (;;) {
		struct timespec ts = {0, 200 * 1000000L};
		siginfo_t si;
		pid_t pid;
		int status;

		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (i = 0; i < sv->nworkers && sv->w[i].pid != pid;
			     i++)
				;
			if (i == sv->nworkers)
				continue;
			sv->w[i].pid = 0;
			close_ready(&sv->w[i]);
			__atomic_store_n(&sv->m->slot[i].pid, 0,
					 __ATOMIC_RELAXED);
			if (!WIFEXITED(status) || WEXITSTATUS(status))
				failed = 1;
		}
		for (i = 0, live = 0; i < sv->nworkers; i++)
			live += sv->w[i].pid > 0;
		if (!live)
			return failed;
		if (now_ms() > deadline) {
			hub_log(HUB_LOG_ERR, "HUB-STOP",
				"workers did not drain in time; killing");
			signal_workers(sv, SIGKILL);
			failed = 1;
			deadline = INT64_MAX;
		}
		sigtimedwait(set, &si, &ts); /* SIGCHLD, or a repeated TERM */
	}
}

int
main(int argc, char **argv)
{
	static struct supervisor sv;
	struct hub_instance inst;
	sigset_t set;
	struct rlimit rl;
	char err[1200];
	int i, rc, failed = 0;

	for (i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--version")) {
			printf("hubd %s (libwebsockets %s, mbedTLS %s)\n",
			       HUB_VERSION, LWS_LIBRARY_VERSION,
			       MBEDTLS_VERSION_STRING);
			return 0;
		}
	memset(&sv, 0, sizeof(sv));
	sv.argc = argc;
	sv.argv = argv;
	rc = conf_load(&sv.conf, argc, argv, err, sizeof(err));
	if (rc == HUB_ERR_EXISTS) {
		fputs(conf_usage(), stdout);
		return 0;
	}
	if (rc) {
		fprintf(stderr, "hubd: %s\n%s", err, conf_usage());
		return 2;
	}
	set_log_level(sv.conf.log_level);
	if (bridge_uri_list_check(sv.conf.broker, err, sizeof(err)) != HUB_OK) {
		fprintf(stderr, "hubd: --broker: %s\n", err);
		return 2;
	}
	if (sv.conf.token_key[0]) {
		/* refuse a bad key at start, not at the first device (here,
		 * not in conf.c: the configuration parser reads no key files)
		 */
		struct fleet_keys *k = NULL;
		char why[256];

		if (fleet_keys_load(sv.conf.token_key, &k, why, sizeof(why))) {
			fprintf(stderr, "hubd: --token-key: %s\n", why);
			return 2;
		}
		fleet_keys_free(k);
	}
	if (sv.conf.http_token[0]) {
		char tok[512];
		size_t tlen;

		if (hub__http_token_read(sv.conf.http_token, tok, sizeof(tok),
					 &tlen, err, sizeof(err))) {
			fprintf(stderr, "hubd: %s\n", err);
			return 2;
		}
	}
	raise_fd_limit();
	getrlimit(RLIMIT_NOFILE, &rl);
	sv.nworkers = conf_workers(&sv.conf, (long)rl.rlim_cur,
				   sysconf(_SC_NPROCESSORS_ONLN));
	for (i = 0; i < METRICS_MAX_WORKERS; i++)
		sv.w[i].ready_fd = -1;

	/* one hubd per listener and per registry + hub id, held until the
	 * last process of this instance (workers included) exits */
	if (hub__instance_claim(&sv.conf, &inst, err, sizeof(err)) != HUB_OK ||
	    preflight(&sv.conf, err, sizeof(err)) != HUB_OK) {
		hub_log(HUB_LOG_ERR, "HUB-START", "%s", err);
		return 1;
	}
	sv.m = metrics_map(sv.nworkers);
	sv.authlimit = authlimit_new(8192, (unsigned)sv.conf.auth_fail_limit);
	if (!sv.m || !sv.authlimit) {
		hub_log(HUB_LOG_ERR, "HUB-START", "cannot map shared memory");
		return 1;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &sv.old_mask);
	signal(SIGPIPE, SIG_IGN);

	hub_log(HUB_LOG_INFO, "HUB-START",
		"hub %s: %d workers, listen %s:%d, broker %s, db %s (pid %d)",
		sv.conf.hub_id, sv.nworkers, sv.conf.listen_host,
		sv.conf.listen_port, sv.conf.broker, sv.conf.db, (int)getpid());
	for (i = 0; i < sv.nworkers; i++)
		spawn(&sv, i);

	for (;;) {
		struct timespec ts = {0, 100 * 1000000L};
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, &ts), status;
		int64_t now;
		pid_t pid;

		if (sig == SIGTERM || sig == SIGINT) {
			hub_log(HUB_LOG_INFO, "HUB-STOP",
				"%s from pid %d: draining %d workers",
				sig == SIGTERM ? "SIGTERM" : "SIGINT",
				(int)si.si_pid, sv.nworkers);
			break;
		}
		if (sig == SIGHUP)
			reload(&sv);
		for (i = 0; i < sv.nworkers; i++)
			if (!sv.w[i].ready)
				poll_ready(&sv.w[i]);
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (i = 0; i < sv.nworkers && sv.w[i].pid != pid; i++)
				;
			if (i < sv.nworkers && on_worker_exit(&sv, i, status)) {
				failed = 1;
				break;
			}
		}
		if (failed)
			break;
		now = now_ms();
		for (i = 0; i < sv.nworkers; i++)
			if (!sv.w[i].pid && sv.w[i].restart_at &&
			    now >= sv.w[i].restart_at) {
				spawn(&sv, i);
				if (sv.w[i].pid > 0)
					metrics_add(&sv.m->slot[i],
						    M_WORKER_RESTARTS, 1);
			}
	}
	if (stop_all(&sv, &set))
		failed = 1;
	hub_log(HUB_LOG_INFO, "HUB-EXIT", "hub %s stopped%s", sv.conf.hub_id,
		failed ? " (failed: exit 1)" : "");
	metrics_unmap(sv.m);
	hub__instance_release(&inst);
	authlimit_free(sv.authlimit);
	return failed ? 1 : 0;
}
