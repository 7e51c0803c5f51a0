"""Benchmarks against other systems. Unlike the rest of sedjax, these modules may import the
other systems' code (torch, DESED_task): nothing outside sedjax/benchmarks/ imports them."""
