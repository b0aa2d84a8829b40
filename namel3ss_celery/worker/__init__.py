"""What runs on workers: the step runner, the settle of each strategy, the coordination store."""
