"""The operations engine: operation kinds (named units with a plan of steps and an apply), the
runner that executes an operation's steps from the store, and the executors that schedule it
(in-process pool, or queue workers). See docs/architecture.md, "Operations engine"."""
