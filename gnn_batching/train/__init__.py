"""Training: configs, jitted steps, instruments, and the instrumented run."""
