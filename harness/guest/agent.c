/* nd-agent: the guest side of the lab's control port (a second serial port, /dev/ttyS1).
 *
 * Protocol (lines; host -> guest commands, guest -> host replies, every reply line starts "@@netdma "
 * except the body lines of a section, which never do):
 *   guest: "@@netdma ready RELEASE"           repeated every second until the first command
 *   host:  "truth MODE"                       guest: section "modules MODE" (the text of /proc/modules),
 *                                             then section "truth MODE" (JSON Lines, one per thread)
 *   host:  "kallsyms"                         guest: section "kallsyms" (the text of /proc/kallsyms)
 *   host:  "panic"                            guest: sections "modules panicked" and "truth panicked",
 *                                             then sysrq 'c'
 *   host:  "ping"                             guest: "@@netdma pong"
 * A section is "@@netdma begin NAME [MODE]", body lines, "@@netdma end NAME COUNT" with COUNT the
 * number of body lines, so the host knows it is complete.
 *
 * Truth records (one per thread, i.e. per /proc/PID/task/TID):
 *   pid (thread id), tgid, ppid, uid (real), state (letter of stat field 3), comm, comm_hex,
 *   cmdline (argv joined by single spaces; /proc gives none for kernel threads and zombies),
 *   start_time (stat field 22, clock ticks), start_time_ns (= ticks * 1e9 / USER_HZ),
 *   kthread (PF_KTHREAD, bit 0x00200000 of stat field 9).
 * Strings: valid UTF-8 is kept, each byte that is not part of a valid UTF-8 sequence becomes U+FFFD,
 * control characters are \u escaped. comm_hex is the exact comm bytes in lowercase hex (lossless).
 * The agent's own record carries the state it will be in at the dump, not the R it reads while
 * running: S after "truth running" (blocked reading this port), R after "panic" (it is the task
 * that panics the kernel).
 *
 * Modules: at start the agent loads every MODULE_DIR/NAME.ko the lab packed (Debian kernels: a few
 * modules from the kernel's own package, uncompressed on the host), in name order, with
 * finit_module(2), and names on stderr (the console) each load that failed. The modules
 * section is /proc/modules as the kernel prints it, taken right before the thread records.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <termios.h>
#include <unistd.h>

#define PF_KTHREAD 0x00200000UL
#define MODULE_DIR "/lib/modules/netdma"
#define MAX_MODULES 64

static FILE *out;

static void json_string(const unsigned char *s, size_t n) {
    fputc('"', out);
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len = 0;
        if (c < 0x80)
            len = 1;
        else if (c >= 0xc2 && c <= 0xdf)
            len = 2;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4;
        int valid = len > 0 && i + len <= n;
        for (size_t k = 1; valid && k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                valid = 0;
        if (valid && len == 3) {
            unsigned cp = ((c & 0x0fu) << 12) | ((s[i + 1] & 0x3fu) << 6) | (s[i + 2] & 0x3fu);
            if (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))
                valid = 0;
        }
        if (valid && len == 4) {
            unsigned cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3fu) << 12) |
                          ((s[i + 2] & 0x3fu) << 6) | (s[i + 3] & 0x3fu);
            if (cp < 0x10000 || cp > 0x10ffff)
                valid = 0;
        }
        if (!valid) {
            fputs("\\ufffd", out);
            i += 1;
            continue;
        }
        if (len == 1) {
            if (c == '"' || c == '\\')
                fprintf(out, "\\%c", c);
            else if (c < 0x20 || c == 0x7f)
                fprintf(out, "\\u%04x", c);
            else
                fputc(c, out);
        } else {
            fwrite(s + i, 1, len, out);
        }
        i += len;
    }
    fputc('"', out);
}

/* Reads a whole small file into a malloc'd buffer; returns its length or -1. */
static ssize_t read_file(const char *path, unsigned char **buf) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    size_t cap = 4096, len = 0;
    unsigned char *b = malloc(cap);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            b = realloc(b, cap);
        }
        ssize_t r = read(fd, b + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            close(fd);
            free(b);
            return -1;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    *buf = b;
    return (ssize_t)len;
}

static int is_number(const char *s) {
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

/* Writes one record; returns 1 if written, 0 if the thread vanished meanwhile. */
static int thread_record(const char *pid, const char *tid, char self_state, long hz) {
    char path[600];
    unsigned char *stat = NULL, *status = NULL, *cmd = NULL;
    int ok = 0;
    snprintf(path, sizeof path, "/proc/%s/task/%s/stat", pid, tid);
    ssize_t n = read_file(path, &stat);
    if (n <= 0)
        goto done;
    stat = realloc(stat, (size_t)n + 1);
    stat[n] = 0;
    unsigned char *open_paren = (unsigned char *)strchr((char *)stat, '(');
    unsigned char *close_paren = (unsigned char *)strrchr((char *)stat, ')');
    if (!open_paren || !close_paren || close_paren < open_paren)
        goto done;
    char state = 0;
    long ppid = 0;
    unsigned long flags = 0;
    unsigned long long start = 0;
    /* Fields after the comm: 3 state, 4 ppid, ..., 9 flags, ..., 22 starttime. */
    char *rest = (char *)close_paren + 2;
    int field = 3;
    for (char *tok = strtok(rest, " "); tok; tok = strtok(NULL, " "), field++) {
        if (field == 3)
            state = tok[0];
        else if (field == 4)
            ppid = atol(tok);
        else if (field == 9)
            flags = strtoul(tok, NULL, 10);
        else if (field == 22) {
            start = strtoull(tok, NULL, 10);
            break;
        }
    }
    if (field != 22)
        goto done;

    snprintf(path, sizeof path, "/proc/%s/task/%s/status", pid, tid);
    n = read_file(path, &status);
    if (n <= 0)
        goto done;
    status = realloc(status, (size_t)n + 1);
    status[n] = 0;
    char *uidline = strstr((char *)status, "\nUid:");
    if (!uidline)
        goto done;
    long uid = strtol(uidline + 5, NULL, 10);

    snprintf(path, sizeof path, "/proc/%s/task/%s/cmdline", pid, tid);
    ssize_t cmdlen = read_file(path, &cmd);
    if (cmdlen < 0)
        cmdlen = 0;
    while (cmdlen > 0 && cmd[cmdlen - 1] == 0)
        cmdlen--;
    for (ssize_t i = 0; i < cmdlen; i++)
        if (cmd[i] == 0)
            cmd[i] = ' ';

    if (atol(tid) == (long)getpid())
        state = self_state;
    fprintf(out, "{\"pid\":%s,\"tgid\":%s,\"ppid\":%ld,\"uid\":%ld,\"state\":\"%c\",\"comm\":", tid, pid,
            ppid, uid, state);
    size_t commlen = (size_t)(close_paren - open_paren - 1);
    json_string(open_paren + 1, commlen);
    fputs(",\"comm_hex\":\"", out);
    for (size_t i = 0; i < commlen; i++)
        fprintf(out, "%02x", open_paren[1 + i]);
    fputs("\",\"cmdline\":", out);
    json_string(cmd ? cmd : (unsigned char *)"", (size_t)cmdlen);
    fprintf(out, ",\"start_time\":%llu,\"start_time_ns\":%llu,\"kthread\":%s}\n", start,
            start * (1000000000ULL / (unsigned long long)hz), (flags & PF_KTHREAD) ? "true" : "false");
    ok = 1;
done:
    free(stat);
    free(status);
    free(cmd);
    return ok;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void load_modules(void) {
    DIR *d = opendir(MODULE_DIR);
    if (!d)
        return;
    char *names[MAX_MODULES];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAX_MODULES) {
        size_t len = strlen(e->d_name);
        if (len > 3 && strcmp(e->d_name + len - 3, ".ko") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], name_cmp);
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", MODULE_DIR, names[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        /* Only failures are said: a line of ours on the console can interleave with the kernel's
         * (the taint notice of an unsigned module, printed by a console thread on PREEMPT_RT). */
        if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0)
            fprintf(stderr, "nd-agent: loading %s failed: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(names[i]);
    }
}

static void modules(const char *mode) {
    fprintf(out, "@@netdma begin modules %s\n", mode);
    long lines = 0;
    FILE *f = fopen("/proc/modules", "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        fputs(line, out);
        if (line[strlen(line) - 1] != '\n')
            fputc('\n', out);
        lines++;
    }
    if (f)
        fclose(f);
    fprintf(out, "@@netdma end modules %ld\n", lines);
}

static void truth(const char *mode, char self_state) {
    modules(mode);
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    fprintf(out, "@@netdma begin truth %s\n", mode);
    long count = 0;
    DIR *proc = opendir("/proc");
    struct dirent *pe;
    while (proc && (pe = readdir(proc))) {
        if (!is_number(pe->d_name))
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/task", pe->d_name);
        DIR *task = opendir(path);
        struct dirent *te;
        while (task && (te = readdir(task))) {
            if (is_number(te->d_name))
                count += thread_record(pe->d_name, te->d_name, self_state, hz);
        }
        if (task)
            closedir(task);
    }
    if (proc)
        closedir(proc);
    fprintf(out, "@@netdma end truth %ld\n", count);
    fflush(out);
}

static void kallsyms(void) {
    fputs("@@netdma begin kallsyms\n", out);
    long lines = 0;
    FILE *f = fopen("/proc/kallsyms", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        fputs(line, out);
        lines++;
    }
    if (f)
        fclose(f);
    fprintf(out, "@@netdma end kallsyms %ld\n", lines);
    fflush(out);
}

static int port_fd = -1;

static void panic_now(void) {
    truth("panicked", 'R');
    /* The truth must leave the UART before the kernel dies: wait until it is transmitted. */
    tcdrain(port_fd);
    sync();
    int fd = open("/proc/sysrq-trigger", O_WRONLY);
    if (fd < 0 || write(fd, "c", 1) != 1) {
        fprintf(out, "@@netdma error sysrq: %s\n", strerror(errno));
        fflush(out);
    }
}

int main(int argc, char **argv) {
    const char *port = argc > 1 ? argv[1] : "/dev/ttyS1";
    int fd = open(port, O_RDWR | O_NOCTTY);
    if (fd < 0) {
        perror("nd-agent: open control port");
        return 1;
    }
    struct termios t;
    if (tcgetattr(fd, &t) == 0) {
        cfmakeraw(&t);
        cfsetspeed(&t, B115200);
        tcsetattr(fd, TCSANOW, &t);
    }
    port_fd = fd;
    load_modules();
    out = fdopen(dup(fd), "w");
    static char outbuf[1 << 16];
    setvbuf(out, outbuf, _IOFBF, sizeof outbuf);
    struct utsname u;
    uname(&u);

    char line[256];
    size_t len = 0;
    int greeted = 0;
    for (;;) {
        if (!greeted) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, 1000) == 0) {
                fprintf(out, "@@netdma ready %s\n", u.release);
                fflush(out);
                continue;
            }
        }
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 1;
        greeted = 1;
        if (c == '\r')
            continue;
        if (c != '\n') {
            if (len + 1 < sizeof line)
                line[len++] = c;
            continue;
        }
        line[len] = 0;
        len = 0;
        if (strncmp(line, "truth ", 6) == 0)
            truth(line + 6, 'S');
        else if (strcmp(line, "kallsyms") == 0)
            kallsyms();
        else if (strcmp(line, "panic") == 0)
            panic_now();
        else if (strcmp(line, "ping") == 0) {
            fputs("@@netdma pong\n", out);
            fflush(out);
        } else if (line[0]) {
            fprintf(out, "@@netdma error unknown command %s\n", line);
            fflush(out);
        }
    }
}
