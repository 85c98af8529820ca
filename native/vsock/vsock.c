/*
 * A tiny N-API addon: creates a listening AF_VSOCK socket and returns its descriptor.
 * Node cannot create vsock sockets itself; accepting is done by libuv (a Pipe handle
 * opened on the descriptor), so every connection is an ordinary net.Socket.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>
#include <node_api.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  const char *code = err == EADDRINUSE ? "EADDRINUSE" : err == EAFNOSUPPORT ? "EAFNOSUPPORT" : err == EACCES ? "EACCES" : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : "EVSOCK";
  napi_throw_error(env, code, msg);
  return NULL;
}

/* listen(port: number, backlog?: number): number (a non-blocking, close-on-exec fd) */
static napi_value Listen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "listen(port[, backlog]) needs a port");
    return NULL;
  }
  uint32_t port = 0;
  int32_t backlog = 128;
  if (napi_get_value_uint32(env, args[0], &port) != napi_ok) {
    napi_throw_type_error(env, NULL, "port must be a number");
    return NULL;
  }
  if (argc > 1) napi_get_value_int32(env, args[1], &backlog);

  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_VSOCK)", errno);
  struct sockaddr_vm addr;
  memset(&addr, 0, sizeof addr);
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = VMADDR_CID_ANY;
  addr.svm_port = port;
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "bind(vsock)", err);
  }
  if (listen(fd, backlog) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "listen(vsock)", err);
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

/* close(fd): for a descriptor that was never handed to libuv */
static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  int32_t fd = -1;
  napi_get_cb_info(env, info, &argc, &arg, NULL, NULL);
  if (argc == 1) napi_get_value_int32(env, arg, &fd);
  if (fd >= 0) close(fd);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"listen", NULL, Listen, NULL, NULL, NULL, napi_default, NULL},
    {"close", NULL, Close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
