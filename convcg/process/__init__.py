"""Processes: running a component's asyncio loop, and local server binaries (the bundled broker,
a private redis-server) as child processes."""
