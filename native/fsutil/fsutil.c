/*
 * A tiny N-API addon for what Node's fs cannot do well:
 * - set a file's times to the nanosecond. fs.utimes takes seconds as a double and libuv
 *   keeps microseconds, so an exported tree would differ from BuildKit's own (Go keeps
 *   nanoseconds) whenever the lost digits carry across a millisecond;
 * - read a small file in one thread-pool job, and store many small files in one. fs.promises
 *   hands every system call (open, write, close, rename; open, fstat, read, close) to the
 *   pool and back on its own, and for contexts of many small files those hand-offs cost
 *   more than the calls;
 * - read and sha256 many small files in one job (the host's context hashing), with the
 *   OpenSSL that Node itself exports. Its symbols are weak here: where Node does not export
 *   them the addon still loads and hashMany says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>
#include <node_api.h>

/* From the OpenSSL inside Node (declared here, so no OpenSSL headers are needed). */
typedef struct evp_md_st EVP_MD;
typedef struct engine_st ENGINE;
extern int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size, const EVP_MD *type, ENGINE *impl) __attribute__((weak));
extern const EVP_MD *EVP_sha256(void) __attribute__((weak));

/* utimens(path: string, mtimeNs: bigint, nofollow: boolean): undefined; atime = mtime */
static napi_value Utimens(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "utimens(path, mtimeNs, nofollow) needs three arguments");
    return NULL;
  }
  char path[4097];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, args[0], path, sizeof path, &len) != napi_ok || len >= sizeof path - 1) {
    napi_throw_type_error(env, NULL, "path must be a string shorter than 4096 bytes");
    return NULL;
  }
  int64_t ns = 0;
  bool lossless = false;
  if (napi_get_value_bigint_int64(env, args[1], &ns, &lossless) != napi_ok || !lossless) {
    napi_throw_type_error(env, NULL, "mtimeNs must be a bigint within int64");
    return NULL;
  }
  bool nofollow = false;
  napi_get_value_bool(env, args[2], &nofollow);
  struct timespec ts[2];
  ts[0].tv_sec = ns / 1000000000;
  ts[0].tv_nsec = ns % 1000000000;
  if (ts[0].tv_nsec < 0) {
    ts[0].tv_nsec += 1000000000;
    ts[0].tv_sec -= 1;
  }
  ts[1] = ts[0];
  if (utimensat(AT_FDCWD, path, ts, nofollow ? AT_SYMLINK_NOFOLLOW : 0) < 0) {
    int err = errno;
    char msg[4200];
    snprintf(msg, sizeof msg, "utimensat %s: %s", path, strerror(err));
    napi_throw_error(env, err == ENOENT ? "ENOENT" : err == EACCES ? "EACCES" : err == EPERM ? "EPERM" : "EUTIMENS", msg);
    return NULL;
  }
  return NULL;
}

/* One file to store: created as tmp (exclusively, 0600), written, closed, renamed to final. */
typedef struct {
  char *tmp;
  char *final;
  char *data;
  size_t len;
  int err;
  const char *call;
} StoreItem;

static void StoreOne(StoreItem *it) {
  int fd = open(it->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) { it->err = errno; it->call = "open"; return; }
  size_t off = 0;
  while (off < it->len) {
    ssize_t n = write(fd, it->data + off, it->len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      it->err = errno; it->call = "write"; break;
    }
    off += (size_t)n;
  }
  if (close(fd) < 0 && !it->err) { it->err = errno; it->call = "close"; }
  if (!it->err && rename(it->tmp, it->final) < 0) { it->err = errno; it->call = "rename"; }
  if (it->err) unlink(it->tmp);
}

/* The code of a store or read error, as Node names errno values. */
static const char *ErrCode(int err) {
  return err == ENOENT ? "ENOENT" : err == EEXIST ? "EEXIST" : err == ENOSPC ? "ENOSPC" : "EIO";
}

/* The Error for a failed system call: "<call> <path>: <strerror>", with Node's code. */
static napi_value CallError(napi_env env, const char *call, const char *path, int errnum) {
  char msg[4400];
  snprintf(msg, sizeof msg, "%s %s: %s", call, path, strerror(errnum));
  napi_value code, text, err;
  napi_create_string_utf8(env, ErrCode(errnum), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &err);
  return err;
}

/* A copy of a JS string (malloc'd), or NULL when it is not one or has `max` bytes or more. */
static char *StringArg(napi_env env, napi_value v, size_t max) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || len >= max) return NULL;
  char *out = malloc(len + 1);
  if (out) napi_get_value_string_utf8(env, v, out, len + 1, &len);
  return out;
}

/* Copies of the `n` strings of a JS array (each shorter than `max` bytes, malloc'd), or NULL after throwing `what`. */
static char **PathArray(napi_env env, napi_value arr, uint32_t n, size_t max, const char *what) {
  char **paths = calloc(n ? n : 1, sizeof *paths);
  if (!paths) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_get_element(env, arr, i, &v);
    if (!(paths[i] = StringArg(env, v, max))) {
      for (uint32_t k = 0; k < i; k++) free(paths[k]);
      free(paths);
      napi_throw_type_error(env, NULL, what);
      return NULL;
    }
  }
  return paths;
}

static void FreePaths(char **paths, size_t n) {
  for (size_t i = 0; i < n; i++) free(paths[i]);
  free(paths);
}

/* One readInto job, run on the libuv thread pool. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref buffer; /* keeps the buffer alive while the job runs */
  char path[4097];
  char *data;
  size_t len;
  off_t position; /* where in the file the read starts */
  size_t done;    /* bytes read */
  int err;        /* errno of the failed call, 0 on success */
  const char *call;
} ReadJob;

static void RunRead(napi_env env, void *arg) {
  ReadJob *j = arg;
  int fd = open(j->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) { j->err = errno; j->call = "open"; return; }
  while (j->done < j->len) {
    ssize_t n = pread(fd, j->data + j->done, j->len - j->done, j->position + (off_t)j->done);
    if (n < 0) {
      if (errno == EINTR) continue;
      j->err = errno; j->call = "read"; break;
    }
    if (n == 0) break;
    j->done += (size_t)n;
  }
  close(fd);
}

static void FinishRead(napi_env env, napi_status status, void *arg) {
  ReadJob *j = arg;
  if (j->err) {
    napi_reject_deferred(env, j->deferred, CallError(env, j->call, j->path, j->err));
  } else {
    napi_value n;
    napi_create_double(env, (double)j->done, &n);
    napi_resolve_deferred(env, j->deferred, n);
  }
  napi_delete_reference(env, j->buffer);
  napi_delete_async_work(env, j->work);
  free(j);
}

/* readInto(path, buffer, position = 0): Promise<number of bytes read>, at most buffer.length. */
static napi_value ReadInto(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  double position = 0;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 2 ||
      (argc > 2 && (napi_get_value_double(env, args[2], &position) != napi_ok || !(position >= 0) || position > 9007199254740991.0))) {
    napi_throw_type_error(env, NULL, "readInto(path, buffer, position?) needs a path, a Buffer and a position of 0 or more");
    return NULL;
  }
  ReadJob *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  size_t plen = 0;
  int ok = napi_get_value_string_utf8(env, args[0], j->path, sizeof j->path, &plen) == napi_ok && plen < 4095;
  void *data = NULL;
  bool isBuffer = false;
  napi_is_buffer(env, args[1], &isBuffer);
  if (!ok || !isBuffer || napi_get_buffer_info(env, args[1], &data, &j->len) != napi_ok) {
    free(j);
    napi_throw_type_error(env, NULL, "the path must be a string shorter than 4095 bytes and the buffer a Buffer");
    return NULL;
  }
  j->data = data;
  j->position = (off_t)position;
  napi_value promise, name;
  napi_create_reference(env, args[1], 1, &j->buffer);
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "readInto", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, RunRead, FinishRead, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

/* lstatMany: the lstat of many paths in one thread-pool job. */
#define LSTAT_FIELDS 9 /* mode, size, mtimeNs, ctimeNs, ino, dev, nlink, uid, gid; mode 0: failed */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref out;
  char **paths;
  size_t count;
  int64_t *fields;
} LstatJob;

static void RunLstat(napi_env env, void *arg) {
  LstatJob *j = arg;
  for (size_t i = 0; i < j->count; i++) {
    int64_t *f = j->fields + i * LSTAT_FIELDS;
    struct stat st;
    if (lstat(j->paths[i], &st) < 0) {
      memset(f, 0, LSTAT_FIELDS * sizeof *f);
      continue;
    }
    f[0] = st.st_mode;
    f[1] = st.st_size;
    f[2] = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    f[3] = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
    f[4] = (int64_t)st.st_ino;
    f[5] = (int64_t)st.st_dev;
    f[6] = (int64_t)st.st_nlink;
    f[7] = st.st_uid;
    f[8] = st.st_gid;
  }
}

static void FinishLstat(napi_env env, napi_status status, void *arg) {
  LstatJob *j = arg;
  napi_value out;
  napi_get_reference_value(env, j->out, &out);
  napi_resolve_deferred(env, j->deferred, out);
  napi_delete_reference(env, j->out);
  FreePaths(j->paths, j->count);
  napi_delete_async_work(env, j->work);
  free(j);
}

/* lstatMany(paths: string[], out: BigInt64Array of paths.length * 9): Promise<out> */
static napi_value LstatMany(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  bool isArray = false, isTyped = false;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 2 ||
      napi_is_array(env, args[0], &isArray) != napi_ok || !isArray ||
      napi_is_typedarray(env, args[1], &isTyped) != napi_ok || !isTyped) {
    napi_throw_type_error(env, NULL, "lstatMany(paths, out) needs an array of strings and a BigInt64Array");
    return NULL;
  }
  uint32_t count = 0;
  napi_get_array_length(env, args[0], &count);
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  napi_get_typedarray_info(env, args[1], &type, &length, &data, NULL, NULL);
  if (type != napi_bigint64_array || length < (size_t)count * LSTAT_FIELDS) {
    napi_throw_type_error(env, NULL, "out must be a BigInt64Array of paths.length * 9");
    return NULL;
  }
  LstatJob *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (!(j->paths = PathArray(env, args[0], count, SIZE_MAX, "paths must be strings"))) {
    free(j);
    return NULL;
  }
  j->count = count;
  j->fields = data;
  napi_value promise, name;
  napi_create_reference(env, args[1], 1, &j->out);
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "lstatMany", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, RunLstat, FinishLstat, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

/* storeMany: many files stored as storeFile does, in one thread-pool job. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref datas; /* the array of Buffers: keeps them alive while the job runs */
  StoreItem *items;
  size_t count;
} StoreManyJob;

static void RunStoreMany(napi_env env, void *arg) {
  StoreManyJob *j = arg;
  for (size_t i = 0; i < j->count; i++) StoreOne(&j->items[i]);
}

static void FreeStoreMany(napi_env env, StoreManyJob *j) {
  for (size_t i = 0; i < j->count; i++) {
    free(j->items[i].tmp);
    free(j->items[i].final);
  }
  free(j->items);
  if (j->datas) napi_delete_reference(env, j->datas);
  free(j);
}

/* Resolves with an array: null for each stored file, an Error (with code) for each failed one. */
static void FinishStoreMany(napi_env env, napi_status status, void *arg) {
  StoreManyJob *j = arg;
  napi_value out, nul;
  napi_create_array_with_length(env, j->count, &out);
  napi_get_null(env, &nul);
  for (size_t i = 0; i < j->count; i++) {
    StoreItem *it = &j->items[i];
    napi_set_element(env, out, (uint32_t)i, it->err ? CallError(env, it->call, it->tmp, it->err) : nul);
  }
  napi_resolve_deferred(env, j->deferred, out);
  napi_delete_async_work(env, j->work);
  FreeStoreMany(env, j);
}

/* storeMany(tmps: string[], finals: string[], datas: Buffer[]): Promise<Array<Error | null>> */
static napi_value StoreMany(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  bool a0 = false, a1 = false, a2 = false;
  uint32_t n0 = 0, n1 = 0, n2 = 0;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 3 ||
      napi_is_array(env, args[0], &a0) != napi_ok || napi_is_array(env, args[1], &a1) != napi_ok ||
      napi_is_array(env, args[2], &a2) != napi_ok || !a0 || !a1 || !a2 ||
      napi_get_array_length(env, args[0], &n0) != napi_ok || napi_get_array_length(env, args[1], &n1) != napi_ok ||
      napi_get_array_length(env, args[2], &n2) != napi_ok || n0 != n1 || n1 != n2) {
    napi_throw_type_error(env, NULL, "storeMany(tmps, finals, datas) needs three arrays of the same length");
    return NULL;
  }
  StoreManyJob *j = calloc(1, sizeof *j);
  StoreItem *items = calloc(n0 ? n0 : 1, sizeof *items);
  if (!j || !items) {
    free(j);
    free(items);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  j->items = items;
  for (uint32_t i = 0; i < n0; i++) {
    napi_value t, f, d;
    bool isBuffer = false;
    void *data = NULL;
    napi_get_element(env, args[0], i, &t);
    napi_get_element(env, args[1], i, &f);
    napi_get_element(env, args[2], i, &d);
    j->count = i + 1;
    items[i].tmp = StringArg(env, t, 4095);
    items[i].final = StringArg(env, f, 4095);
    napi_is_buffer(env, d, &isBuffer);
    if (!items[i].tmp || !items[i].final || !isBuffer || napi_get_buffer_info(env, d, &data, &items[i].len) != napi_ok) {
      FreeStoreMany(env, j);
      napi_throw_type_error(env, NULL, "paths must be strings shorter than 4095 bytes and the data Buffers");
      return NULL;
    }
    items[i].data = data;
  }
  napi_value promise, name;
  napi_create_reference(env, args[2], 1, &j->datas);
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "storeMany", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, RunStoreMany, FinishStoreMany, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

/*
 * hashMany: for each of many small files, in one thread-pool job: open (not following a
 * final symlink), read up to limits[i] bytes into data at offsets[i], close, and sha256 what
 * was read into digests at 32 * i. counts[i] is the bytes read, or -errno where a call failed.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep; /* [data, digests, counts, offsets, limits]: alive while the job runs */
  char **paths;
  size_t count;
  unsigned char *data;
  size_t dataLen;
  unsigned char *digests;
  double *offsets;
  double *limits;
  double *counts;
} HashJob;

static void RunHash(napi_env env, void *arg) {
  HashJob *j = arg;
  for (size_t i = 0; i < j->count; i++) {
    size_t off = (size_t)j->offsets[i], limit = (size_t)j->limits[i], done = 0;
    int fd = open(j->paths[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) { j->counts[i] = -errno; continue; }
    int err = 0;
    while (done < limit) {
      ssize_t n = read(fd, j->data + off + done, limit - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        err = errno;
        break;
      }
      if (n == 0) break;
      done += (size_t)n;
    }
    close(fd);
    if (err) { j->counts[i] = -err; continue; }
    unsigned int mdlen = 0;
    if (!EVP_Digest(j->data + off, done, j->digests + 32 * i, &mdlen, EVP_sha256(), NULL) || mdlen != 32) { j->counts[i] = -EIO; continue; }
    j->counts[i] = (double)done;
  }
}

static void FreeHash(napi_env env, HashJob *j) {
  FreePaths(j->paths, j->count);
  if (j->keep) napi_delete_reference(env, j->keep);
  free(j);
}

static void FinishHash(napi_env env, napi_status status, void *arg) {
  HashJob *j = arg;
  napi_value keep, counts;
  napi_get_reference_value(env, j->keep, &keep);
  napi_get_element(env, keep, 2, &counts);
  napi_resolve_deferred(env, j->deferred, counts);
  napi_delete_async_work(env, j->work);
  FreeHash(env, j);
}

/* hashMany(paths: string[], offsets: Float64Array, limits: Float64Array, data: Buffer, digests: Buffer, counts: Float64Array): Promise<counts> */
static napi_value HashMany(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value args[6];
  if (!EVP_Digest || !EVP_sha256) {
    napi_throw_error(env, "ENOSYS", "this Node does not export OpenSSL's EVP_Digest");
    return NULL;
  }
  bool isArray = false, isData = false, isDigests = false;
  uint32_t n = 0;
  void *data = NULL, *digests = NULL, *offsets = NULL, *limits = NULL, *counts = NULL;
  size_t dataLen = 0, digestsLen = 0, nOff = 0, nLim = 0, nCnt = 0;
  napi_typedarray_type t1, t2, t3;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 6 ||
      napi_is_array(env, args[0], &isArray) != napi_ok || !isArray || napi_get_array_length(env, args[0], &n) != napi_ok ||
      napi_get_typedarray_info(env, args[1], &t1, &nOff, &offsets, NULL, NULL) != napi_ok || t1 != napi_float64_array ||
      napi_get_typedarray_info(env, args[2], &t2, &nLim, &limits, NULL, NULL) != napi_ok || t2 != napi_float64_array ||
      napi_is_buffer(env, args[3], &isData) != napi_ok || !isData || napi_get_buffer_info(env, args[3], &data, &dataLen) != napi_ok ||
      napi_is_buffer(env, args[4], &isDigests) != napi_ok || !isDigests || napi_get_buffer_info(env, args[4], &digests, &digestsLen) != napi_ok ||
      napi_get_typedarray_info(env, args[5], &t3, &nCnt, &counts, NULL, NULL) != napi_ok || t3 != napi_float64_array ||
      nOff != n || nLim != n || nCnt != n || digestsLen < (size_t)n * 32) {
    napi_throw_type_error(env, NULL, "hashMany(paths, offsets, limits, data, digests, counts): arrays of one length, digests of 32 bytes each");
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    double o = ((double *)offsets)[i], l = ((double *)limits)[i];
    if (!(o >= 0) || !(l >= 0) || o + l > (double)dataLen) {
      napi_throw_range_error(env, NULL, "hashMany: a file's place lies outside the data buffer");
      return NULL;
    }
  }
  HashJob *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (!(j->paths = PathArray(env, args[0], n, 4095, "paths must be strings shorter than 4095 bytes"))) {
    free(j);
    return NULL;
  }
  j->count = n;
  j->data = data;
  j->dataLen = dataLen;
  j->digests = digests;
  j->offsets = offsets;
  j->limits = limits;
  j->counts = counts;
  napi_value keep, promise, name;
  napi_create_array_with_length(env, 5, &keep);
  napi_set_element(env, keep, 0, args[3]);
  napi_set_element(env, keep, 1, args[4]);
  napi_set_element(env, keep, 2, args[5]);
  napi_set_element(env, keep, 3, args[1]);
  napi_set_element(env, keep, 4, args[2]);
  napi_create_reference(env, keep, 1, &j->keep);
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "hashMany", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, RunHash, FinishHash, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "utimens", NAPI_AUTO_LENGTH, Utimens, NULL, &fn);
  napi_set_named_property(env, exports, "utimens", fn);
  napi_create_function(env, "readInto", NAPI_AUTO_LENGTH, ReadInto, NULL, &fn);
  napi_set_named_property(env, exports, "readInto", fn);
  napi_create_function(env, "lstatMany", NAPI_AUTO_LENGTH, LstatMany, NULL, &fn);
  napi_set_named_property(env, exports, "lstatMany", fn);
  napi_create_function(env, "storeMany", NAPI_AUTO_LENGTH, StoreMany, NULL, &fn);
  napi_set_named_property(env, exports, "storeMany", fn);
  napi_create_function(env, "hashMany", NAPI_AUTO_LENGTH, HashMany, NULL, &fn);
  napi_set_named_property(env, exports, "hashMany", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
