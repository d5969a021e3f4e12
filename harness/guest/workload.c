/* Guest workload: one static multi-call binary, dispatched on the basename of argv[0].
 *
 * Each role builds one feature of the process mix the ground truth must describe:
 *   nd-tree DEPTH FANOUT   process tree DEPTH levels below its root, FANOUT children per node
 *   nd-threads N           N sleeping pthreads named "worker-K"
 *   nd-uid UID PROG ARGS   drop to uid/gid UID, then exec PROG (so PROG runs as UID)
 *   nd-stopped             stops itself with SIGSTOP (state T)
 *   nd-zombie              forks a child that exits at once; never waits for it (state Z)
 *   nd-named               main thread comm "my worker", one thread comm "na\xc3\xafve\xff"
 *   nd-longargs            re-execs itself with more than 4 KiB of argv, then sleeps
 *   nd-spin                busy loop (state R)
 * Every role ends sleeping (pause) except nd-spin; none ever exits on its own.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>

__attribute__((noreturn)) static void sleep_forever(void) {
    for (;;)
        pause();
}

static void *thread_sleep(void *arg) {
    (void)arg;
    sleep_forever();
    return NULL;
}

static int spawn_thread(const char *name) {
    pthread_t t;
    if (pthread_create(&t, NULL, thread_sleep, NULL) != 0)
        return -1;
    if (name && pthread_setname_np(t, name) != 0)
        return -1;
    return 0;
}

static void tree(int depth, int fanout) {
    /* Each process forks FANOUT children; a child continues the loop one level deeper. */
    while (depth > 0) {
        int is_child = 0;
        for (int i = 0; i < fanout; i++) {
            pid_t pid = fork();
            if (pid < 0) {
                perror("nd-tree: fork");
                break;
            }
            if (pid == 0) {
                is_child = 1;
                break;
            }
        }
        if (!is_child)
            break;
        depth--;
    }
    sleep_forever();
}

static int role_threads(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3;
    char name[16];
    for (int i = 0; i < n && i < 64; i++) {
        snprintf(name, sizeof name, "worker-%d", i);
        if (spawn_thread(name) != 0) {
            perror("nd-threads: pthread");
            return 1;
        }
    }
    sleep_forever();
    return 0;
}

static int role_uid(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: nd-uid UID PROG [ARGS...]\n");
        return 2;
    }
    uid_t uid = (uid_t)strtoul(argv[1], NULL, 10);
    if (setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0) {
        perror("nd-uid: setresuid");
        return 1;
    }
    execvp(argv[2], argv + 2);
    perror("nd-uid: exec");
    return 1;
}

static int role_zombie(void) {
    pid_t pid = fork();
    if (pid < 0) {
        perror("nd-zombie: fork");
        return 1;
    }
    if (pid == 0) {
        prctl(PR_SET_NAME, "nd-zchild", 0, 0, 0);
        _exit(0);
    }
    sleep_forever();
    return 0;
}

static int role_named(void) {
    if (prctl(PR_SET_NAME, "my worker", 0, 0, 0) != 0) {
        perror("nd-named: prctl");
        return 1;
    }
    if (spawn_thread("na\xc3\xafve\xff") != 0) {
        perror("nd-named: pthread");
        return 1;
    }
    sleep_forever();
    return 0;
}

#define LONG_ARGS 700

static int role_longargs(int argc, char **argv) {
    if (argc >= LONG_ARGS)
        sleep_forever();
    static char bufs[LONG_ARGS][16];
    static char *args[LONG_ARGS + 2];
    args[0] = argv[0];
    for (int i = 1; i <= LONG_ARGS; i++) {
        snprintf(bufs[i - 1], sizeof bufs[i - 1], "argument-%04d", i);
        args[i] = bufs[i - 1];
    }
    args[LONG_ARGS + 1] = NULL;
    execv("/bin/nd-longargs", args);
    perror("nd-longargs: exec");
    return 1;
}

static int role_spin(void) {
    volatile unsigned long n = 0;
    for (;;)
        n++;
    return 0;
}

int main(int argc, char **argv) {
    const char *role = strrchr(argv[0], '/');
    role = role ? role + 1 : argv[0];
    if (strcmp(role, "nd-tree") == 0) {
        tree(argc > 1 ? atoi(argv[1]) : 3, argc > 2 ? atoi(argv[2]) : 2);
        return 0;
    }
    if (strcmp(role, "nd-threads") == 0)
        return role_threads(argc, argv);
    if (strcmp(role, "nd-uid") == 0)
        return role_uid(argc, argv);
    if (strcmp(role, "nd-stopped") == 0) {
        raise(SIGSTOP);
        sleep_forever();
    }
    if (strcmp(role, "nd-zombie") == 0)
        return role_zombie();
    if (strcmp(role, "nd-named") == 0)
        return role_named();
    if (strcmp(role, "nd-longargs") == 0)
        return role_longargs(argc, argv);
    if (strcmp(role, "nd-spin") == 0)
        return role_spin();
    fprintf(stderr, "workload: unknown role %s\n", role);
    return 2;
}
