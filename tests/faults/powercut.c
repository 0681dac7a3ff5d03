/* powercut.so: an LD_PRELOAD shim that keeps, for every regular file under POWERCUT_DIR, a copy
 * of the file as it stood at its last fsync/fdatasync, in POWERCUT_SHADOW. Replacing the
 * directory's files by these copies (and dropping files never synced) is the disk after a power
 * cut that lost every write not yet synced: what a kernel page cache loses and a SIGKILL does not.
 *
 * The copy is taken after the real sync returned, under one lock, so it holds exactly what the
 * sync made durable (SQLite writes a file only while holding the lock that orders its syncs).
 * Data is durable only once synced; names are not modelled as data: a file exists after the cut
 * once it was synced, and an unlink (SQLite deleting a rollback journal) removes its copy at once
 * (the optimistic choice for metadata, which a journalling file system orders before later data).
 *
 * Build: gcc -shared -fPIC -O2 -o powercut.so powercut.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_unlink)(const char *);

static int shadow_name(const char *path, char *final, size_t size) {
    const char *dir = getenv("POWERCUT_DIR"), *shadow = getenv("POWERCUT_SHADOW");
    if (!dir || !shadow) return 0;
    size_t len = strlen(dir);
    if (strncmp(path, dir, len) != 0 || path[len] != '/') return 0;
    int n = snprintf(final, size, "%s/%s", shadow, path + len + 1);
    if (n < 0 || (size_t)n >= size) return 0;
    for (char *p = final + strlen(shadow) + 1; *p; p++)
        if (*p == '/') *p = '%';  /* a file in a subdirectory */
    return 1;
}

static void snapshot(int fd) {
    char link[64], path[PATH_MAX], final[PATH_MAX + 64], tmp[PATH_MAX + 80];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    struct stat st;
    if (!shadow_name(path, final, sizeof final) || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    snprintf(tmp, sizeof tmp, "%s.partial", final);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) return;
    char buf[1 << 16];
    off_t off = 0;
    for (;;) {
        ssize_t got = pread(fd, buf, sizeof buf, off);
        if (got <= 0) break;
        for (ssize_t done = 0; done < got;) {
            ssize_t w = write(out, buf + done, (size_t)(got - done));
            if (w <= 0) { close(out); unlink(tmp); return; }
            done += w;
        }
        off += got;
    }
    close(out);
    rename(tmp, final);
}

static int synced(int fd, int rc) {
    if (rc == 0) {
        int saved = errno;
        pthread_mutex_lock(&lock);
        snapshot(fd);
        pthread_mutex_unlock(&lock);
        errno = saved;
    }
    return rc;
}

int fsync(int fd) {
    if (!real_fsync) real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return synced(fd, real_fsync(fd));
}

int fdatasync(int fd) {
    if (!real_fdatasync) real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return synced(fd, real_fdatasync(fd));
}

int unlink(const char *path) {
    if (!real_unlink) real_unlink = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    int rc = real_unlink(path);
    char final[PATH_MAX + 64];
    if (rc == 0 && path[0] == '/' && shadow_name(path, final, sizeof final)) {
        int saved = errno;
        pthread_mutex_lock(&lock);
        real_unlink(final);
        pthread_mutex_unlock(&lock);
        errno = saved;
    }
    return rc;
}
