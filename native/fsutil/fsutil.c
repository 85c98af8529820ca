/*
 * A tiny N-API addon for what Node's fs cannot do exactly: set a file's times to the
 * nanosecond. fs.utimes takes seconds as a double and libuv keeps microseconds, so an
 * exported tree would differ from BuildKit's own (Go keeps nanoseconds) whenever the lost
 * digits carry across a millisecond.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <node_api.h>

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

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "utimens", NAPI_AUTO_LENGTH, Utimens, NULL, &fn);
  napi_set_named_property(env, exports, "utimens", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
