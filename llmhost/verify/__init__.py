"""Verify: doctor, image checks, security floors, the CPU self-test, smoke validation, bench,
tune and the live view - each judges the host or a service against the plan. It imports the plan,
the facts, devtools and the base modules, never the actions."""
