/*
 * main.c - hubd: configuration, then a small supervisor that forks the
 * worker processes (hub__worker_run), restarts one that dies, and on
 * SIGTERM/SIGINT passes the signal on and waits for every worker to drain.
 *
 * Workers share the device and ops listeners (SO_REUSEPORT), the registry
 * file and the metrics region mapped here before the fork. The supervisor
 * touches no lws, TLS or broker state, so nothing random or connected is
 * inherited by the workers.
 */
#include "conf.h"
#include "hub_int.h"
#include "hub_log.h"
#include "hub_version.h"
#include "metrics.h"
#include "registry.h"

#include <mbedtls/version.h>

#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct conf conf;

static pid_t
spawn(int index, int nworkers, struct metrics *m, const sigset_t *old)
{
	pid_t pid = fork();

	if (pid == 0) {
		sigprocmask(SIG_SETMASK, old, NULL);
		exit(hub__worker_run(&conf, index, nworkers, m));
	}
	if (pid > 0)
		__atomic_store_n(&m->slot[index].pid, pid, __ATOMIC_RELAXED);
	return pid;
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
	char tmp[sizeof(conf.db)];
	const char *dir;

	if (!strcmp(db, ":memory:"))
		return 0;
	snprintf(tmp, sizeof(tmp), "%s", db);
	dir = dirname(tmp);
	if (mkdir(dir, 0750) && errno != EEXIST)
		return -1;
	return 0;
}

int
main(int argc, char **argv)
{
	pid_t pids[METRICS_MAX_WORKERS] = {0};
	int64_t started[METRICS_MAX_WORKERS] = {0};
	struct registry *reg = NULL;
	struct metrics *m;
	sigset_t set, old;
	struct rlimit rl;
	char err[256];
	int nworkers, i, rc, stopping = 0, live, failed = 0;
	int64_t stop_deadline = 0;

	for (i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--version")) {
			printf("hubd %s (libwebsockets %s, mbedTLS %s)\n",
			       HUB_VERSION, LWS_LIBRARY_VERSION,
			       MBEDTLS_VERSION_STRING);
			return 0;
		}
	rc = conf_load(&conf, argc, argv, err, sizeof(err));
	if (rc == HUB_ERR_EXISTS) {
		fputs(conf_usage(), stdout);
		return 0;
	}
	if (rc) {
		fprintf(stderr, "hubd: %s\n%s", err, conf_usage());
		return 2;
	}
	if (conf.http_token[0]) {
		char tok[512];
		size_t tlen;

		if (hub__http_token_read(conf.http_token, tok, sizeof(tok),
					 &tlen, err, sizeof(err))) {
			fprintf(stderr, "hubd: %s\n", err);
			return 2;
		}
	}
	hub_log_set_level((enum hub_log_level)conf.log_level);
	lws_set_log_level(conf.log_level >= 3 ? LLL_ERR | LLL_WARN | LLL_NOTICE
					      : LLL_ERR,
			  hub_log_lws);
	raise_fd_limit();
	getrlimit(RLIMIT_NOFILE, &rl);
	nworkers = conf_workers(&conf, (long)rl.rlim_cur,
				sysconf(_SC_NPROCESSORS_ONLN));

	/* migrations once, here, so workers never race on them */
	if (ensure_db_dir(conf.db) ||
	    registry_open(conf.db, &reg, err, sizeof(err)) != HUB_OK) {
		hub_log(HUB_LOG_ERR, "HUB-START", "registry %s: %s", conf.db,
			err);
		return 1;
	}
	registry_close(reg);

	m = metrics_map(nworkers);
	if (!m) {
		hub_log(HUB_LOG_ERR, "HUB-START", "cannot map metrics");
		return 1;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	signal(SIGPIPE, SIG_IGN);

	hub_log(HUB_LOG_INFO, "HUB-START",
		"hub %s: %d workers, listen %s:%d, broker %s, db %s",
		conf.hub_id, nworkers, conf.listen_host, conf.listen_port,
		conf.broker, conf.db);
	for (i = 0; i < nworkers; i++) {
		pids[i] = spawn(i, nworkers, m, &old);
		started[i] = hub_clock_ms();
	}

	for (;;) {
		struct timespec ts = {0, 200 * 1000000L};
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, &ts);
		pid_t pid;
		int status;

		if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
			stopping = 1;
			stop_deadline =
			    hub_clock_ms() + (int64_t)conf.drain * 1000 + 30000;
			hub_log(HUB_LOG_INFO, "HUB-STOP", "draining %d workers",
				nworkers);
			for (i = 0; i < nworkers; i++)
				if (pids[i] > 0)
					kill(pids[i], SIGTERM);
		}
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (i = 0; i < nworkers && pids[i] != pid; i++)
				;
			if (i == nworkers)
				continue;
			pids[i] = 0;
			__atomic_store_n(&m->slot[i].pid, 0, __ATOMIC_RELAXED);
			if (stopping) {
				if (!WIFEXITED(status) || WEXITSTATUS(status))
					failed = 1;
				continue;
			}
			hub_log(
			    HUB_LOG_ERR, "HUB-WORKER-DIED",
			    "worker %d (pid %d) %s %d; restarting", i, (int)pid,
			    WIFSIGNALED(status) ? "killed by signal" : "exited",
			    WIFSIGNALED(status) ? WTERMSIG(status)
						: WEXITSTATUS(status));
			/* a worker that keeps dying at once: don't spin */
			if (hub_clock_ms() - started[i] < 1000)
				sleep(1);
			metrics_add(&m->slot[i], M_WORKER_RESTARTS, 1);
			pids[i] = spawn(i, nworkers, m, &old);
			started[i] = hub_clock_ms();
		}
		if (stopping) {
			for (i = 0, live = 0; i < nworkers; i++)
				live += pids[i] > 0;
			if (!live)
				break;
			if (hub_clock_ms() > stop_deadline) {
				hub_log(
				    HUB_LOG_ERR, "HUB-STOP",
				    "workers did not drain in time; killing");
				for (i = 0; i < nworkers; i++)
					if (pids[i] > 0)
						kill(pids[i], SIGKILL);
				failed = 1;
				stop_deadline = INT64_MAX;
			}
		}
	}
	hub_log(HUB_LOG_INFO, "HUB-EXIT", "hub %s stopped", conf.hub_id);
	metrics_unmap(m);
	return failed ? 1 : 0;
}
