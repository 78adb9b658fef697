"""The long-running process: task groups, the queue, recovery, reload, signals, sd_notify."""
