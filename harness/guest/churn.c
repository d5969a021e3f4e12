/* nd-churn: processes and threads created and exiting continuously, each logged with the guest's
 * own clock, for checking listings of a machine that keeps running (harness/src/lab/shellport.rs).
 *
 *   nd-churn clock          prints CLOCK_BOOTTIME in ns (the clock of task->start_boottime)
 *   nd-churn RATE LOG       starts RATE processes per second until SIGTERM, then waits for them
 *
 * Every process is a child of the nd-churn parent. It names itself "nd-c<pid>", takes real uid
 * 2000 + pid % 50, lives a random time (5 ms to 4 s, spread over four decades) and every third
 * one runs a thread named "nd-t<tid>" for half that time. A listing can check each such task by
 * its own bytes: the name carries the pid, the uid follows from it.
 *
 * LOG gets one line per fact, each written with one write(2) (O_APPEND: lines never interleave),
 * times in ns of CLOCK_BOOTTIME:
 *   F pid ns        the parent: fork returned (the child exists from before ns)
 *   S pid uid ns    the child: renamed and uid changed
 *   T tid tgid ns   a thread: started and renamed
 *   X tid ns        a process or thread: about to exit (it existed until at least ns)
 *   J pid ns        the process: its thread was joined (the thread exists no longer)
 *   E pid ns        the parent: the child was reaped (it exists no longer)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int logfd = -1;
static volatile sig_atomic_t stop;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_BOOTTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void logline(const char *fmt, ...) {
    char b[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    if (n > 0 && write(logfd, b, (size_t)n) < 0)
        _exit(3);
}

static unsigned long long seed = 88172645463325252ULL;
static unsigned long long next_rand(void) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
}

/* 5 ms * 10^(3 * u) with u uniform in [0, 1) (5 ms .. 5 s), capped at 4 s. */
static long lifetime_us(void) {
    static const long decade[4] = {5000, 50000, 500000, 4000000};
    unsigned long long r = next_rand();
    int d = (int)(r % 3);
    long lo = decade[d], hi = decade[d + 1];
    return lo + (long)((r >> 8) % (unsigned long long)(hi - lo));
}

static void *thread_main(void *arg) {
    char name[16];
    snprintf(name, sizeof name, "nd-t%d", gettid());
    prctl(PR_SET_NAME, name);
    logline("T %d %d %lld\n", gettid(), getpid(), now_ns());
    usleep((useconds_t)(long)arg);
    logline("X %d %lld\n", gettid(), now_ns());
    return NULL;
}

static void child(long us, int with_thread) {
    pid_t pid = getpid();
    char name[16];
    snprintf(name, sizeof name, "nd-c%d", pid);
    prctl(PR_SET_NAME, name);
    uid_t uid = 2000 + (uid_t)(pid % 50);
    if (setresuid(uid, uid, uid) != 0)
        _exit(4);
    logline("S %d %u %lld\n", pid, uid, now_ns());
    pthread_t th;
    int have = with_thread && pthread_create(&th, NULL, thread_main, (void *)(us / 2)) == 0;
    usleep((useconds_t)us);
    if (have) {
        void *ret;
        pthread_join(th, &ret);
        /* The thread's tid is not at hand here without a channel; it logs its own start, and
         * its end is bounded by this join, logged with the process id. */
        logline("J %d %lld\n", pid, now_ns());
    }
    logline("X %d %lld\n", pid, now_ns());
    _exit(0);
}

static void on_term(int sig) {
    (void)sig;
    stop = 1;
}

static int reap(int block) {
    int n = 0;
    for (;;) {
        pid_t p = waitpid(-1, NULL, block ? 0 : WNOHANG);
        if (p <= 0)
            return n;
        logline("E %d %lld\n", p, now_ns());
        n++;
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "clock") == 0) {
        printf("%lld\n", now_ns());
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: nd-churn clock | nd-churn RATE LOG\n");
        return 2;
    }
    long rate = strtol(argv[1], NULL, 10);
    if (rate <= 0 || rate > 10000)
        return 2;
    logfd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (logfd < 0)
        return 1;
    seed ^= (unsigned long long)now_ns();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    long long period = 1000000000LL / rate, next = now_ns();
    unsigned long made = 0;
    while (!stop) {
        long us = lifetime_us();
        int with_thread = made % 3 == 0;
        pid_t c = fork();
        if (c == 0)
            child(us, with_thread);
        if (c > 0) {
            logline("F %d %lld\n", c, now_ns());
            made++;
        }
        reap(0);
        next += period;
        long long wait = next - now_ns();
        if (wait > 0) {
            struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
            nanosleep(&ts, NULL);
        } else if (wait < -1000000000LL) {
            next = now_ns(); /* far behind: do not burst to catch up */
        }
    }
    while (reap(1) > 0 || errno == EINTR)
        ;
    close(logfd);
    printf("@@churn %lu\n", made);
    return 0;
}
