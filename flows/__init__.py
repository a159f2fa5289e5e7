"""flows: Prefect flows, task wrappers and the ptyflow CLI."""
