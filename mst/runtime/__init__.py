"""The process around the library: the device mesh and multi-host start (`sharding`), the
persistent compilation cache, host memory settings (`host_memory`) and progress reporting."""
