"""The process around the library: the device mesh and multi-host start (`sharding`), the
persistent compilation cache and the traced programs kept beside it (`traced_cache`), host memory
settings (`host_memory`) and progress reporting."""
