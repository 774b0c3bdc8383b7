/* libfiu failure points for the two calls its POSIX preload does not wrap: renameat2 and syncfs.
 *
 * Test support for tests/test_faults.py, preloaded after fiu-run's own libraries (which load libfiu):
 *
 *     gcc -shared -fPIC -O2 -o fiu_extra.so fiu_extra.c -ldl
 *
 * Each wrapper asks libfiu, found at run time (no libfiu headers needed), whether its point fails:
 * `posix/io/rename/renameat2` and `posix/io/sync/syncfs`, switched with fiu-ctrl like libfiu's own.
 * A failing call sets errno to the point's failinfo (EIO or ENOSPC in turn when it has none) and
 * returns -1, as libfiu's wrappers do; otherwise the real function runs. Without libfiu in the
 * process, every call goes straight through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

typedef int (*fiu_fail_fn)(const char *);
typedef void *(*fiu_failinfo_fn)(void);
typedef int (*renameat2_fn)(int, const char *, int, const char *, unsigned int);
typedef int (*syncfs_fn)(int);

static __thread int alternate; /* errno for a point enabled without failinfo: EIO, ENOSPC, EIO, ... */

/* Whether libfiu says `name` fails now; if so, errno is set for the failure. */
static int injected(const char *name)
{
	static fiu_fail_fn fail;
	static fiu_failinfo_fn failinfo;
	if (fail == NULL) {
		fail = (fiu_fail_fn)dlsym(RTLD_DEFAULT, "fiu_fail");
		failinfo = (fiu_failinfo_fn)dlsym(RTLD_DEFAULT, "fiu_failinfo");
	}
	if (fail == NULL || !fail(name))
		return 0;
	intptr_t code = failinfo != NULL ? (intptr_t)failinfo() : 0;
	errno = code != 0 ? (int)code : (alternate++ % 2 ? ENOSPC : EIO);
	return 1;
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)
{
	static renameat2_fn real;
	if (injected("posix/io/rename/renameat2"))
		return -1;
	if (real == NULL)
		real = (renameat2_fn)dlsym(RTLD_NEXT, "renameat2");
	if (real == NULL) {
		errno = ENOSYS; /* rhinobox.blobs.fsops falls back to link and unlink */
		return -1;
	}
	return real(olddirfd, oldpath, newdirfd, newpath, flags);
}

int syncfs(int fd)
{
	static syncfs_fn real;
	if (injected("posix/io/sync/syncfs"))
		return -1;
	if (real == NULL)
		real = (syncfs_fn)dlsym(RTLD_NEXT, "syncfs");
	if (real == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real(fd);
}
