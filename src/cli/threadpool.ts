// Imported first by main.ts: libuv reads UV_THREADPOOL_SIZE when the pool is first used.
// File transfer is mostly opens and small reads, which the default 4 threads serialise.
process.env.UV_THREADPOOL_SIZE ??= '16';
export {};
