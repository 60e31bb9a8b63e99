"""The trainer's parts, one job each: the checkpointer (every stateful part), the metrics logger, the stop flag."""
