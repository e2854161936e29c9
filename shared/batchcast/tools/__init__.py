"""Developer and operator tools: CLI, demo, synthetic data, emulator stack, replay, report.

No function, step, service or API module imports these."""
