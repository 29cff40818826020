/*
 * The pod sandbox's init process for the cluster test tier (tests/cluster).
 *
 * Every pod's network and IPC namespaces are held by one long-lived process;
 * containerd starts it from the "sandbox image". No image registry is reachable
 * here, so the tier builds this one from source (scripts/cluster-build): it
 * waits for signals, reaps children it inherits as PID 1 of a pod with a shared
 * PID namespace, and exits on SIGINT or SIGTERM so that a pod stops promptly.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) { stop_signal = sig; }

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("mlkube pause 1");
        return 0;
    }
    if (getpid() != 1) {
        fputs("pause: warning: not running as PID 1\n", stderr);
    }
    struct sigaction stop = {.sa_handler = on_stop};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigemptyset(&stop.sa_mask);
    sigemptyset(&child.sa_mask);
    if (sigaction(SIGINT, &stop, NULL) != 0 || sigaction(SIGTERM, &stop, NULL) != 0 ||
        sigaction(SIGCHLD, &child, NULL) != 0) {
        perror("pause: sigaction");
        return 1;
    }
    while (!stop_signal) {
        pause();
    }
    fprintf(stderr, "pause: shutting down on signal %d\n", (int)stop_signal);
    return 0;
}
