/*
 * nodemedic-vfork [N]: a container init whose N children each sit blocked
 * in vfork() while their vfork child sleeps and never calls execve. The
 * blocked parents show state D (a killable wait, as with glibc's
 * posix_spawn or Python's subprocess when the child is slow to exec); the
 * agent must list them in status.waitingTasks and never count them as hung
 * tasks. Test-only (the kind tier's workload image, tests/kind/images.sh);
 * C because vfork() needs `unsafe`, which the Rust workspace forbids.
 *
 * Prints "ready N" once the children are started; reaps whatever ends;
 * exits on SIGTERM or SIGINT, and everything it started dies with it
 * (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3;
    if (n < 1 || n > 1000) {
        fprintf(stderr, "usage: nodemedic-vfork [N (1..1000)]\n");
        return 2;
    }
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0) {
            perror("fork");
            return 1;
        }
        if (p == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (vfork() == 0) {
                /* The vfork child: runs on its parent's memory and stack and
                 * never returns from here; only system calls. */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                for (;;)
                    pause();
            }
            _exit(0);
        }
    }
    printf("ready %d\n", n);
    fflush(stdout);
    while (!stop) {
        if (waitpid(-1, NULL, 0) < 0 && errno == ECHILD)
            pause();
    }
    return 0;
}
