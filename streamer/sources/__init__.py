"""Where events come from besides publishers: the file watcher and the log tails."""
